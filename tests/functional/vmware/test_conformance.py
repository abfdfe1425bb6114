"""The conformance kit on the vmware driver and vcsim."""

from lmcaps import conformance
from tests.functional.vmware import conformance_backend


class VMwareConformanceTest(conformance.DriverConformanceTest):
    driver = 'vmware'
    backend = conformance_backend.VcsimBackend
