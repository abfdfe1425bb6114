"""The backend of the fake driver: simulated migrations, fast clock."""

from __future__ import annotations

import itertools
from collections.abc import Mapping

from oslo_config import cfg

from lmcaps import capabilities as caps
from lmcaps.conformance import backend
from lmcaps.drivers import base
from lmcaps.drivers import fake as fake_driver

Fault = backend.Fault


def faults_for(support: Mapping[str, str]) -> frozenset[backend.Fault]:
    """The faults the fake can inject with this declared support.

    A slow cancel or one that completes needs abort; the destination dying
    in post-copy needs post-copy; the owner's pause needs an action other
    than a pause.
    """
    def usable(op: caps.Operation) -> bool:
        return caps.Support(support.get(op.value, 'complete')).usable

    found = {Fault.MIGRATION_FAILS, Fault.SESSION_LOST}
    if usable(caps.Operation.ABORT):
        found |= {Fault.SLOW_CANCEL, Fault.COMPLETES_DURING_CANCEL}
    if usable(caps.Operation.FORCE_COMPLETE_POSTCOPY):
        found.add(Fault.DESTINATION_DIES_IN_POSTCOPY)
    if usable(caps.Operation.ABORT) or usable(
            caps.Operation.FORCE_COMPLETE_POSTCOPY):
        found.add(Fault.OWNER_PAUSES)
    return frozenset(found)


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
    slow_cancel = 0.5
    faults = frozenset(Fault)

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls.faults = faults_for(cls.support)

    def __init__(self, support: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self._support = {**self.support, **(support or {})}
        for key, value in self._support.items():
            caps.Operation(key), caps.Support(value)   # reject typos early
        self.faults = faults_for(self._support)
        self._conf: cfg.ConfigOpts | None = None
        self._group = ''
        self._drivers: dict[str, base.LiveMigrationDriver] = {}
        self._counter = itertools.count(1)
        self._world = f'conformance-{id(self)}'

    def _setUp(self) -> None:
        self.addCleanup(self._drivers.clear)
        self.addCleanup(fake_driver._worlds.pop, self._world, None)

    @property
    def world(self) -> fake_driver.World:
        """The simulated backend the driver under test talks to."""
        return fake_driver.world(self._world)

    def configure(self, conf: cfg.ConfigOpts, group: str) -> None:
        """Set the declared support and a fast, deterministic link."""
        self._conf, self._group = conf, group
        for key, value in self._support.items():
            conf.set_override(key, value, group=group)
        conf.set_override('time_scale', self.time_scale, group=group)
        conf.set_override('ram_mib', self.ram_mib, group=group)
        conf.set_override('bandwidth_mib', self.bandwidth_mib, group=group)
        conf.set_override('downtime_mib', 30.0, group=group)
        conf.set_override('world', self._world, group=group)

    def start(self, driver: base.LiveMigrationDriver,
              scenario: backend.Scenario, *,
              prepare_for: frozenset = frozenset(),
              fault: backend.Fault | None = None) -> base.Migration:
        """Start a simulated migration; STUCK dirties memory at 2x the link."""
        if self._conf is None:
            raise RuntimeError('configure() was not called')
        dirty = (2 * self.bandwidth_mib
                 if scenario is backend.Scenario.STUCK else 0.0)
        self._conf.set_override('dirty_rate_mib', dirty, group=self._group)
        delay = (self.slow_cancel * self.time_scale
                 if fault is Fault.SLOW_CANCEL else 0.0)
        self._conf.set_override('cancel_delay', delay, group=self._group)
        spec = base.MigrationSpec(
            instance=f'conformance-{next(self._counter)}',
            destination=base.Destination('fake-destination'),
            prepare_for=prepare_for)
        migration = driver.start_migration(spec)
        if fault is Fault.COMPLETES_DURING_CANCEL:
            self._sim(migration).complete_during_cancel = True
        self._drivers[migration.id] = driver
        return migration

    def _sim(self, migration: base.Migration) -> fake_driver._Sim:
        sim = self.world.sim_of(migration.spec.instance)
        if sim is None:
            raise RuntimeError(f'no simulated migration of '
                               f'{migration.spec.instance}')
        return sim

    def locate(self, migration: base.Migration) -> base.GuestLocation:
        """Where the simulated world has the guest (not the driver's word)."""
        found = self.world.where(migration.spec.instance)
        if found is None:
            return base.GuestLocation(base.GuestHost.NOWHERE,
                                      base.RunState.UNKNOWN)
        (host, state), detail = found
        return base.GuestLocation(host, state, detail)

    def trigger(self, migration: base.Migration, fault: backend.Fault) -> None:
        """Bring a fault about through the simulated world."""
        if self._conf is None:
            raise RuntimeError('configure() was not called')
        helper = fake_driver.FakeDriver(self._conf)   # the world's "admin"
        if fault is Fault.MIGRATION_FAILS:
            helper.fail_migration(migration, 'injected: link down')
        elif fault is Fault.DESTINATION_DIES_IN_POSTCOPY:
            helper.destination_dies(migration)
        elif fault is Fault.OWNER_PAUSES:
            helper.owner_pause(migration)
        elif fault is Fault.SESSION_LOST:
            self.world.drop_sessions()
        else:
            super().trigger(migration, fault)
