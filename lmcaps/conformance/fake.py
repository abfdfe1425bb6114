"""The backend of the fake driver: simulated migrations, fast clock."""

from __future__ import annotations

import itertools
from collections.abc import Mapping

from oslo_config import cfg

from lmcaps import capabilities as caps
from lmcaps.conformance import backend
from lmcaps.drivers import base


class FakeBackend(backend.Backend):
    """Runs the kit against ``lmcaps.drivers.fake`` (no hypervisor).

    :param support: declared support per operation value, e.g.
        ``{'abort': 'missing'}``; merged over the class attribute
        :attr:`support`, unnamed operations stay ``complete``.
    """

    #: Declared support per operation value (``[lmcaps_fake]`` options).
    support: Mapping[str, str] = {}
    #: Simulated seconds per wall second.
    time_scale: float = 4.0
    ram_mib: int = 1024
    bandwidth_mib: float = 1000.0

    completion_timeout = 1
    settle_timeout = 10.0
    poll_interval = 0.02
    stuck_check = 0.2

    def __init__(self, support: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self._support = {**self.support, **(support or {})}
        for key, value in self._support.items():
            caps.Operation(key), caps.Support(value)   # reject typos early
        self._conf: cfg.ConfigOpts | None = None
        self._group = ''
        self._drivers: dict[str, base.LiveMigrationDriver] = {}
        self._counter = itertools.count(1)

    def _setUp(self) -> None:
        self.addCleanup(self._drivers.clear)

    def configure(self, conf: cfg.ConfigOpts, group: str) -> None:
        """Set the declared support and a fast, deterministic link."""
        self._conf, self._group = conf, group
        for key, value in self._support.items():
            conf.set_override(key, value, group=group)
        conf.set_override('time_scale', self.time_scale, group=group)
        conf.set_override('ram_mib', self.ram_mib, group=group)
        conf.set_override('bandwidth_mib', self.bandwidth_mib, group=group)
        conf.set_override('downtime_mib', 30.0, group=group)

    def start(self, driver: base.LiveMigrationDriver,
              scenario: backend.Scenario, *,
              postcopy: bool = False) -> base.Migration:
        """Start a simulated migration; STUCK dirties memory at 2x the link."""
        if self._conf is None:
            raise RuntimeError('configure() was not called')
        dirty = (2 * self.bandwidth_mib
                 if scenario is backend.Scenario.STUCK else 0.0)
        self._conf.set_override('dirty_rate_mib', dirty, group=self._group)
        spec = base.MigrationSpec(
            instance=f'conformance-{next(self._counter)}',
            destination='fake-destination', postcopy=postcopy)
        migration = driver.start_migration(spec)
        self._drivers[migration.id] = driver
        return migration

    def locate(self, migration: base.Migration) -> backend.Location:
        """The fake driver's own idea of where the guest is."""
        return self._drivers[migration.id].guest_location(migration)
