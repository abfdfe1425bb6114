"""The conformance kit on the powervm driver and the NovaLink simulator."""

from lmcaps import conformance
from tests.functional.powervm import conformance_backend


class PowerVMConformanceTest(conformance.DriverConformanceTest):
    driver = 'powervm'
    backend = conformance_backend.PowerVMBackend
