"""The conformance kit on the xenapi driver and the xapi simulator."""

from lmcaps import conformance
from tests.functional.xenapi import conformance_backend


class XenAPIConformanceTest(conformance.DriverConformanceTest):
    driver = 'xenapi'
    backend = conformance_backend.XapiSimBackend
