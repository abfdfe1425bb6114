"""The conformance backend: simulated clouds, one per test."""

from __future__ import annotations

import itertools
import time
import uuid

from oslo_config import cfg

import examplehv
from lmcaps import conformance
from lmcaps.drivers import base

_WHERE = {'src': base.GuestHost.SOURCE, 'dst': base.GuestHost.DESTINATION}
_STATES = {'running': base.RunState.RUNNING, 'paused': base.RunState.PAUSED}


class SimBackend(conformance.Backend):
    """Two hosts, src and dst, joined by a 1000 MiB/s link."""

    completion_timeout = 1
    settle_timeout = 10.0
    poll_interval = 0.02
    stuck_check = 0.1
    client_modules = ('examplehv',)
    faults = frozenset({conformance.Fault.MIGRATION_FAILS,
                        conformance.Fault.OWNER_PAUSES})

    ram_mib = 256.0
    bandwidth_mib = 1000.0

    def _setUp(self) -> None:
        self.cloud = examplehv.Cloud(f'conformance-{uuid.uuid4()}',
                                     bandwidth_mib=self.bandwidth_mib)
        self.uri = self.cloud.register()
        self.addCleanup(self.cloud.unregister)
        self._names = itertools.count(1)

    def configure(self, conf: cfg.ConfigOpts, group: str) -> None:
        conf.set_override('uri', self.uri, group=group)

    def start(self, driver: base.LiveMigrationDriver,
              scenario: conformance.Scenario, *,
              prepare_for: frozenset = frozenset(),
              fault: conformance.Fault | None = None) -> base.Migration:
        """A busy guest (dirtying at twice the link) for STUCK, else idle."""
        name = f'guest-{next(self._names)}'
        dirty = (2 * self.bandwidth_mib
                 if scenario is conformance.Scenario.STUCK else 0.0)
        self.cloud.create_guest(name, 'src', self.ram_mib, dirty)
        return driver.start_migration(base.MigrationSpec(
            instance=name, destination=base.Destination('dst'),
            prepare_for=prepare_for))

    def locate(self, migration: base.Migration) -> base.GuestLocation:
        """Ask the cloud itself, not the driver."""
        with self.cloud.lock:
            for job in self.cloud.jobs.values():
                job.refresh(time.monotonic())
            guest = self.cloud.guests[migration.spec.instance]
            return base.GuestLocation(
                _WHERE.get(guest.host, base.GuestHost.UNKNOWN),
                _STATES.get(guest.state, base.RunState.UNKNOWN))

    def trigger(self, migration: base.Migration,
                fault: conformance.Fault) -> None:
        if fault is conformance.Fault.MIGRATION_FAILS:
            self.cloud.fail_job(migration.backend)
        elif fault is conformance.Fault.OWNER_PAUSES:
            self.cloud.pause_guest(migration.spec.instance)
        else:
            super().trigger(migration, fault)
