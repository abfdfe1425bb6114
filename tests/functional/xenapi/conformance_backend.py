"""The conformance kit's backend for the xenapi driver: the xapi simulator."""

from __future__ import annotations

import importlib.util
import itertools
import unittest

from oslo_config import cfg

from lmcaps import capabilities as caps
from lmcaps.conformance import backend
from lmcaps.drivers import base
from tests import backend as test_backend
from tests.functional.xenapi.sim import fixture as sim_fixture

Fault = backend.Fault
_COUNTER = itertools.count(1)
_POWER = {'Running': base.RunState.RUNNING, 'Paused': base.RunState.PAUSED,
          'Suspended': base.RunState.PAUSED,
          'Halted': base.RunState.SHUT_OFF}


def available() -> tuple[bool, str]:
    if importlib.util.find_spec('XenAPI') is None:
        return False, ('the XenAPI SDK is not installed (pip extra '
                       '"xenapi": tools/install.sh --test)')
    return True, ''


def require() -> None:
    """Skip loudly, or fail with CI=true, without the XenAPI SDK."""
    ok, reason = available()
    if not ok:
        message = f'BACKEND MISSING: {reason}'
        if test_backend.in_ci():
            raise RuntimeError(message)
        raise unittest.SkipTest(message)


def close_cancel_window(sim: sim_fixture.XapiSim):
    def prepare(driver: base.LiveMigrationDriver, migration: base.Migration,
                wait_for_phase: object) -> None:
        sim.control.sim.close_cancel_window(migration.reference)
    return prepare


class XapiSimBackend(backend.Backend):
    """Migrations between hosts ``src`` and ``dst`` of one simulated pool."""

    completion_timeout = 3
    settle_timeout = 30.0
    poll_interval = 0.05
    stuck_check = 0.3
    slow_cancel = 1.5
    faults = frozenset({Fault.MIGRATION_FAILS, Fault.SLOW_CANCEL,
                        Fault.COMPLETES_DURING_CANCEL, Fault.SESSION_LOST,
                        Fault.OWNER_PAUSES})

    def _setUp(self) -> None:
        require()
        self.sim = self.useFixture(sim_fixture.XapiSim())
        self.vms: dict[str, str] = {}

    def configure(self, conf: cfg.ConfigOpts, group: str) -> None:
        conf.set_override('url', self.sim.url, group=group)
        conf.set_override('username', self.sim.username, group=group)
        conf.set_override('password', self.sim.password, group=group)
        conf.set_override('task_poll_interval', 0.05, group=group)

    def start(self, driver: base.LiveMigrationDriver,
              scenario: backend.Scenario, *,
              prepare_for: frozenset[caps.Operation] = frozenset(),
              fault: Fault | None = None) -> base.Migration:
        name = f'conf-{next(_COUNTER)}'
        stuck = scenario is backend.Scenario.STUCK
        profile: dict[str, float] = {
            'duration': 0 if stuck else 1.0, 'cancel_delay': 0.1,
            'cancellable_until': 0.95}
        if fault is Fault.SLOW_CANCEL:
            profile['cancel_delay'] = self.slow_cancel
        if fault is Fault.COMPLETES_DURING_CANCEL:
            profile['complete_on_cancel'] = 0.3
        vm = self.sim.add_vm(name, **profile)
        self.vms[name] = vm
        spec = base.MigrationSpec(
            instance=name, destination=base.Destination('dst'),
            prepare_for=prepare_for)
        return driver.start_migration(spec)

    def locate(self, migration: base.Migration) -> base.GuestLocation:
        vm = self.vms[migration.spec.instance]
        state = self.sim.control.sim.vm_state(vm)
        if state['exists'] != 'true':
            return base.GuestLocation(base.GuestHost.NOWHERE,
                                      base.RunState.UNKNOWN, 'no such VM')
        run = _POWER.get(state['power_state'], base.RunState.UNKNOWN)
        host = {self.sim.src_host: base.GuestHost.SOURCE,
                self.sim.dst_host: base.GuestHost.DESTINATION}.get(
            state['resident_on'], base.GuestHost.NOWHERE)
        return base.GuestLocation(host, run, state['power_state'])

    def trigger(self, migration: base.Migration, fault: Fault) -> None:
        control = self.sim.control.sim
        if fault is Fault.MIGRATION_FAILS:
            control.fail_task(migration.reference, 'simulated link failure')
        elif fault is Fault.OWNER_PAUSES:
            control.set_power_state(self.vms[migration.spec.instance],
                                    'Paused')
        elif fault is Fault.SESSION_LOST:
            control.expire_sessions()
        else:
            super().trigger(migration, fault)

    def unmet_conditions(self, operation: caps.Operation,
                         declaration: caps.Declaration
                         ) -> list[backend.UnmetCondition]:
        found = super().unmet_conditions(operation, declaration)
        if operation is caps.Operation.ABORT:
            found.append(backend.UnmetCondition(
                "the task no longer lists 'cancel' in allowed_operations "
                '(the final copy has begun)', backend.DRIVER,
                prepare=close_cancel_window(self.sim)))
        return found
