"""The conformance kit's backend for the libvirt driver: the real pair."""

from __future__ import annotations

import dataclasses
import itertools
import os
import unittest

from oslo_config import cfg

from lmcaps.conformance import backend
from lmcaps.drivers import base
from tests import backend as test_backend
from tests.functional.libvirt import env
from tests.functional.libvirt import pair as pair_mod

_COUNTER = itertools.count(1)


class LibvirtBackend(backend.Backend):
    """Guests on two private libvirtd daemons of this machine."""

    completion_timeout = 3
    settle_timeout = 60.0
    poll_interval = 0.1
    stuck_check = 1.0

    def _setUp(self) -> None:
        ok, reason = env.available()
        if not ok:
            message = f'BACKEND MISSING: libvirtd + QEMU pair: {reason}'
            if test_backend.in_ci():
                raise RuntimeError(message)
            raise unittest.SkipTest(message)
        self.pair = pair_mod.shared_pair(None)
        self.names: list[str] = []
        self.addCleanup(self._destroy)

    def _destroy(self) -> None:
        for name in self.names:
            self.pair.destroy_guest(name)

    def configure(self, conf: cfg.ConfigOpts, group: str) -> None:
        conf.set_override('connection_uri', self.pair.src_uri, group=group)
        conf.set_override('live_migration_postcopy_bandwidth',
                          pair_mod.POSTCOPY_BANDWIDTH, group=group)

    def start(self, driver: base.LiveMigrationDriver,
              scenario: backend.Scenario, *,
              postcopy: bool = False) -> base.Migration:
        name = f'conf-{os.getpid()}-{next(_COUNTER)}'
        stuck = scenario is backend.Scenario.STUCK
        self.pair.define_guest(name, dirty_mib=4 if stuck else 1)
        self.names.append(name)
        spec = pair_mod.spec(self.pair, name,
                             pair_mod.STUCK_BANDWIDTH if stuck else None)
        return driver.start_migration(dataclasses.replace(spec,
                                                          postcopy=postcopy))

    def locate(self, migration: base.Migration) -> backend.Location:
        import libvirt
        name = migration.spec.instance
        side = self.pair.where(name)
        if side is None:
            return (None, 'absent')
        state = self.pair.states(name)[side]
        where = backend.SOURCE if side == 'src' else backend.DESTINATION
        if state and state[0] == libvirt.VIR_DOMAIN_RUNNING:
            return (where, backend.RUNNING)
        if state and state[0] == libvirt.VIR_DOMAIN_PAUSED:
            return (where, backend.PAUSED)
        return (where, f'state {state}')
