"""Test bases for the PowerVM tests: a simulated NovaLink per test class."""

from __future__ import annotations

import time

import testtools

from tests import backend as test_backend
from tests.functional.powervm.sim import fixture


def wait_for(predicate, timeout: float = 15.0, interval: float = 0.05):
    """Poll ``predicate`` until it returns a true value; fail after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f'condition not reached within {timeout} s')


class SimTestCase(testtools.TestCase):
    """``self.sim``: a running NovaLink simulator (pypowervm required)."""

    #: serve https with a self-signed certificate (``self.sim.ca_file``)
    tls = False

    def setUp(self) -> None:
        super().setUp()
        ok, reason = fixture.pypowervm_available()
        test_backend.require(self, ok, reason)
        self.sim = self.useFixture(fixture.NovalinkSim(tls=self.tls))

    def session(self, password: str | None = None):
        from pypowervm import adapter
        sess = adapter.Session(
            '127.0.0.1', self.sim.username,
            self.sim.password if password is None else password,
            protocol='http', port=self.sim.port, certpath='')
        self.addCleanup(sess._logoff)
        return adapter.Adapter(sess)


def make_conf(sim: fixture.NovalinkSim, state_path: str, **lmcaps_opts):
    """A private conf for the powervm driver on the simulator."""
    from oslo_config import cfg

    from lmcaps import conf as lmcaps_conf
    from lmcaps import drivers
    conf = cfg.ConfigOpts()
    lmcaps_conf.register_opts(conf)
    conf([], project='lmcaps-functional', default_config_files=[])
    conf.set_override('state_path', state_path, group='lmcaps')
    conf.set_override('driver', 'powervm', group='lmcaps')
    conf.set_override('monitor_poll_interval', 0.2, group='lmcaps')
    for key, value in lmcaps_opts.items():
        conf.set_override(key, value, group='lmcaps')
    drivers.driver_class('powervm')(conf)          # registers its options
    configure(conf, sim)
    return conf


def configure(conf, sim: fixture.NovalinkSim,
              group: str = 'lmcaps_powervm') -> None:
    """Point ``[lmcaps_powervm]`` at the simulator (plain http, loopback)."""
    for key, value in (('host', '127.0.0.1'), ('port', sim.port),
                       ('protocol', 'http'), ('username', sim.username),
                       ('password', sim.password)):
        conf.set_override(key, value, group=group)


class DriverTestCase(SimTestCase):
    """``self.driver``: the powervm driver connected to ``self.sim``."""

    def setUp(self) -> None:
        super().setUp()
        import fixtures

        from lmcaps import drivers
        from lmcaps import events_sql
        self.conf = make_conf(self.sim,
                              self.useFixture(fixtures.TempDir()).path)
        self.driver = drivers.load('powervm', self.conf)
        self.addCleanup(self.driver.close)
        self.store = events_sql.SQLEventStore.from_conf(self.conf)
        self.addCleanup(self.store.close)

    def spec(self, instance: str):
        from lmcaps.drivers import base
        return base.MigrationSpec(instance, base.Destination(
            self.sim.target_name))

    def where(self, lpar_uuid: str) -> tuple[str, str, str]:
        """(source|target, PartitionState, MigrationState) from the model."""
        view = self.sim.lpar(lpar_uuid)
        side = {self.sim.source: 'source', self.sim.target: 'target'}.get(
            view['system'], view['system'])
        return side, view['state'], view['migration_state']
