"""The conformance kit on the hyperv driver and the WS-Management simulator."""

from lmcaps import conformance
from tests.functional.hyperv import conformance_backend


class HyperVConformanceTest(conformance.DriverConformanceTest):
    driver = 'hyperv'
    backend = conformance_backend.HyperVBackend


class HyperVNTLMConformanceTest(conformance.DriverConformanceTest):
    driver = 'hyperv'
    backend = conformance_backend.HyperVNTLMBackend
