"""The conformance kit's backend for the vmware driver: vcsim (tools/vcsim).

Where the VM is comes from vcsim's own model (its control endpoint), never
from the driver.  Faults: the relocation fails (MIGRATION_FAILS), a cancel
that takes effect late (SLOW_CANCEL), a relocation that completes while
its cancel is in flight (COMPLETES_DURING_CANCEL), and every session ended
by SessionManager.TerminateSession (SESSION_LOST).
"""

from __future__ import annotations

import unittest

from oslo_config import cfg

from lmcaps import capabilities as caps
from lmcaps.conformance import backend
from lmcaps.drivers import base
from tests import backend as test_backend
from tests.functional.vmware import vcsim

Fault = backend.Fault


class VcsimBackend(backend.Backend):
    """Relocations of vcsim's VMs between the hosts of its cluster."""

    completion_timeout = 2
    settle_timeout = 30.0
    poll_interval = 0.1
    stuck_check = 0.5
    slow_cancel = 1.5
    #: seconds a CONVERGING relocation takes
    converging = 0.8
    client_modules = ('suds',)
    faults = frozenset({Fault.MIGRATION_FAILS, Fault.SLOW_CANCEL,
                        Fault.COMPLETES_DURING_CANCEL, Fault.SESSION_LOST})

    def _setUp(self) -> None:
        ok, reason = vcsim.available()
        if not ok:
            message = f'BACKEND MISSING: vcsim: {reason}'
            if test_backend.in_ci():
                raise RuntimeError(message)
            raise unittest.SkipTest(message)
        self.sim = self.useFixture(vcsim.Vcsim(relocate_time=self.converging))
        self._where: dict[str, tuple[str, str, str]] = {}

    def configure(self, conf: cfg.ConfigOpts, group: str) -> None:
        self.sim.configure(conf, group)

    def start(self, driver: base.LiveMigrationDriver,
              scenario: backend.Scenario, *,
              prepare_for: frozenset[caps.Operation] = frozenset(),
              fault: Fault | None = None) -> base.Migration:
        vm, src, dest = self.sim.pick()
        stuck = scenario is backend.Scenario.STUCK
        self.sim.next_relocation(
            vm, 0 if stuck else self.converging,
            cancel_delay=self.slow_cancel if fault is Fault.SLOW_CANCEL
            else 0.0,
            complete_on_cancel=fault is Fault.COMPLETES_DURING_CANCEL)
        spec = base.MigrationSpec(
            instance=vm, destination=base.Destination(host=dest,
                                                      address=dest),
            prepare_for=prepare_for)
        migration = driver.start_migration(spec)
        self._where[migration.id] = (vm, src, dest)
        return migration

    def locate(self, migration: base.Migration) -> base.GuestLocation:
        vm, src, dest = self._where[migration.id]
        seen = self.sim.vm(vm)
        host = {src: base.GuestHost.SOURCE,
                dest: base.GuestHost.DESTINATION}.get(seen.get('host'),
                                                      base.GuestHost.UNKNOWN)
        state = {'poweredOn': base.RunState.RUNNING,
                 'poweredOff': base.RunState.SHUT_OFF}.get(
            seen.get('power_state'), base.RunState.UNKNOWN)
        return base.GuestLocation(host, state, seen.get('host_name', ''))

    def trigger(self, migration: base.Migration, fault: Fault) -> None:
        if fault is Fault.MIGRATION_FAILS:
            self.sim.fail(migration.reference)
        elif fault is Fault.SESSION_LOST:
            self.sim.terminate_sessions()
        else:
            super().trigger(migration, fault)

    def unmet_conditions(self, operation: caps.Operation,
                         declaration: caps.Declaration
                         ) -> list[backend.UnmetCondition]:
        if operation is caps.Operation.ABORT:
            def not_cancelable(_driver, migration, _wait) -> None:
                self.sim.set_cancelable(migration.reference, False)
            return [backend.UnmetCondition(
                'vCenter reports TaskInfo.cancelable = false',
                backend.DRIVER, prepare=not_cancelable)]
        return super().unmet_conditions(operation, declaration)
