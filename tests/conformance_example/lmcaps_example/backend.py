"""The conformance backend: simulated clouds, one per test."""

from __future__ import annotations

import itertools
import time
import uuid

from oslo_config import cfg

import examplehv
from lmcaps import conformance
from lmcaps.drivers import base

_WHERE = {'src': conformance.SOURCE, 'dst': conformance.DESTINATION}


class SimBackend(conformance.Backend):
    """Two hosts, src and dst, joined by a 1000 MiB/s link."""

    completion_timeout = 1
    settle_timeout = 10.0
    poll_interval = 0.02
    stuck_check = 0.1
    client_modules = ('examplehv',)

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
              postcopy: bool = False) -> base.Migration:
        """A busy guest (dirtying at twice the link) for STUCK, else idle."""
        name = f'guest-{next(self._names)}'
        dirty = (2 * self.bandwidth_mib
                 if scenario is conformance.Scenario.STUCK else 0.0)
        self.cloud.create_guest(name, 'src', self.ram_mib, dirty)
        return driver.start_migration(base.MigrationSpec(
            instance=name, destination='dst', postcopy=postcopy))

    def locate(self, migration: base.Migration) -> tuple[str | None, str]:
        """Ask the cloud itself, not the driver."""
        with self.cloud.lock:
            for job in self.cloud.jobs.values():
                job.refresh(time.monotonic())
            guest = self.cloud.guests[migration.spec.instance]
            return _WHERE.get(guest.host), guest.state
