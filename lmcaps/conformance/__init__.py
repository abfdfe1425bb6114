"""The driver conformance kit: proves a driver does what it declares.

Shipped in the package so that out-of-tree driver maintainers run it too::

    import lmcaps.conformance

    class TestMyDriver(lmcaps.conformance.DriverConformanceTest):
        driver = 'mydriver'          # the lmcaps.drivers entry point
        backend = MyBackend          # a lmcaps.conformance.Backend

or from the command line: ``lmcaps conformance mydriver --config-file F
--backend mypkg.tests:MyBackend``.  See doc/conformance.rst.
"""

from lmcaps.conformance.backend import Backend
from lmcaps.conformance.backend import DESTINATION
from lmcaps.conformance.backend import DRIVER
from lmcaps.conformance.backend import PAUSED
from lmcaps.conformance.backend import PRECHECK
from lmcaps.conformance.backend import RUNNING
from lmcaps.conformance.backend import Scenario
from lmcaps.conformance.backend import SOURCE
from lmcaps.conformance.backend import UnmetCondition
from lmcaps.conformance.fake import FakeBackend
from lmcaps.conformance.results import FAILED
from lmcaps.conformance.results import REFUSED
from lmcaps.conformance.results import VERIFIED
from lmcaps.conformance.runner import resolve_backend
from lmcaps.conformance.runner import run
from lmcaps.conformance.suite import DriverConformanceTest

__all__ = [
    'Backend', 'DESTINATION', 'DRIVER', 'DriverConformanceTest', 'FAILED',
    'FakeBackend', 'PAUSED', 'PRECHECK', 'REFUSED', 'RUNNING', 'SOURCE',
    'Scenario', 'UnmetCondition', 'VERIFIED', 'resolve_backend', 'run',
]
