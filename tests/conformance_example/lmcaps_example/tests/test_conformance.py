"""What a driver maintainer writes to certify a driver: a few lines."""

import lmcaps.conformance

from lmcaps_example import backend


class TestSimDriver(lmcaps.conformance.DriverConformanceTest):
    driver = 'example_sim'
    backend = backend.SimBackend
