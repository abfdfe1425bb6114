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
    #: What a real pair can be made to do: the destination QEMU killed
    #: (before or after the switch to post-copy), the guest paused by its
    #: owner through the source daemon.
    faults = frozenset({backend.Fault.MIGRATION_FAILS,
                        backend.Fault.DESTINATION_DIES_IN_POSTCOPY,
                        backend.Fault.OWNER_PAUSES})

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
              prepare_for: frozenset = frozenset(),
              fault: backend.Fault | None = None) -> base.Migration:
        name = f'conf-{os.getpid()}-{next(_COUNTER)}'
        stuck = scenario is backend.Scenario.STUCK
        self.pair.define_guest(name, dirty_mib=4 if stuck else 1)
        self.names.append(name)
        spec = pair_mod.spec(self.pair, name,
                             pair_mod.STUCK_BANDWIDTH if stuck else None)
        return driver.start_migration(dataclasses.replace(
            spec, prepare_for=prepare_for))

    def locate(self, migration: base.Migration) -> base.GuestLocation:
        """The pair's own reading of both daemons (not the driver's)."""
        import libvirt
        name = migration.spec.instance
        side = self.pair.where(name)
        if side is None:
            return base.GuestLocation(base.GuestHost.NOWHERE,
                                      base.RunState.UNKNOWN)
        state = self.pair.states(name)[side]
        where = (base.GuestHost.SOURCE if side == 'src'
                 else base.GuestHost.DESTINATION)
        run = {libvirt.VIR_DOMAIN_RUNNING: base.RunState.RUNNING,
               libvirt.VIR_DOMAIN_PAUSED: base.RunState.PAUSED,
               libvirt.VIR_DOMAIN_SHUTOFF: base.RunState.SHUT_OFF,
               libvirt.VIR_DOMAIN_CRASHED: base.RunState.CRASHED}
        return base.GuestLocation(
            where, run.get(state[0] if state else -1, base.RunState.UNKNOWN),
            f'state {state}')

    def trigger(self, migration: base.Migration,
                fault: backend.Fault) -> None:
        """Kill the destination QEMU, or pause the guest, through libvirt."""
        import libvirt
        name = migration.spec.instance
        if fault in (backend.Fault.MIGRATION_FAILS,
                     backend.Fault.DESTINATION_DIES_IN_POSTCOPY):
            dom = self.pair._lookup('dst', name)
            if dom is None:
                raise RuntimeError(f'no incoming domain {name} on the '
                                   f'destination')
            try:
                dom.destroy()       # the destination's QEMU dies
            except libvirt.libvirtError as exc:
                # libvirt's destroy kills QEMU before it takes the domain's
                # job; when the monitor's EOF handler stops the domain in
                # between, the kill worked but the call reports "domain is
                # not running" (or, for a domain still transient, "Domain
                # not found").  Ask the destination whether its QEMU is
                # gone; only a guest still running there is a failure.
                after = self.pair.states(name)['dst']
                if after is not None and \
                        after[0] == libvirt.VIR_DOMAIN_RUNNING:
                    raise RuntimeError(
                        f'could not kill the destination of {name}: {exc};'
                        f' domain states {self.pair.states(name)}; '
                        f'{self.pair.log_tails(name)}') from exc
        elif fault is backend.Fault.OWNER_PAUSES:
            self.pair.conn('src').lookupByName(name).suspend()
        else:
            super().trigger(migration, fault)
