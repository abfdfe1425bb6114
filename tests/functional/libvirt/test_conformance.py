"""The conformance kit on the libvirt driver and the real daemons."""

from lmcaps import conformance
from tests.functional.libvirt import conformance_backend


class LibvirtConformanceTest(conformance.DriverConformanceTest):
    driver = 'libvirt'
    backend = conformance_backend.LibvirtBackend
