"""Test bases for the PowerVM tests: a simulated NovaLink per test class."""

from __future__ import annotations

import testtools

from tests import backend as test_backend
from tests.functional.powervm.sim import fixture


class SimTestCase(testtools.TestCase):
    """``self.sim``: a running NovaLink simulator (pypowervm required)."""

    def setUp(self) -> None:
        super().setUp()
        ok, reason = fixture.pypowervm_available()
        test_backend.require(self, ok, reason)
        self.sim = self.useFixture(fixture.NovalinkSim())

    def session(self, password: str | None = None):
        from pypowervm import adapter
        sess = adapter.Session(
            '127.0.0.1', self.sim.username,
            self.sim.password if password is None else password,
            protocol='http', port=self.sim.port, certpath='')
        self.addCleanup(sess._logoff)
        return adapter.Adapter(sess)
