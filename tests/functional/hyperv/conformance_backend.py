"""The conformance kit's backend for the hyperv driver: the simulator.

Guests are VMs of the simulated source host; a STUCK guest's migration
never converges (its job creeps below 90 %), a CONVERGING one completes in
a second.  :meth:`HyperVBackend.locate` reads the simulator's own model
(its control endpoint), never the driver under test.
"""

from __future__ import annotations

import itertools
import math
import os
import unittest

from oslo_config import cfg

from lmcaps import capabilities as caps
from lmcaps.conformance import backend
from lmcaps.drivers import base
from tests import backend as test_backend
from tests.functional.hyperv.sim import fixture

Fault = backend.Fault
_COUNTER = itertools.count(1)
#: EnabledState (v2) -> RunState, for the model's own view.
_RUN = {2: base.RunState.RUNNING, 3: base.RunState.SHUT_OFF,
        6: base.RunState.SHUT_OFF, 9: base.RunState.PAUSED}


def driver_config(sim: fixture.Simulator, conf: cfg.ConfigOpts,
                  group: str = 'lmcaps_hyperv',
                  transport: str = 'basic') -> None:
    """Point the hyperv driver at a simulator over loopback http.

    :param transport: ``basic`` (allowed over http for the test listener)
        or ``ntlm`` (messages encrypted).
    """
    conf.set_override('endpoint', sim.endpoint('hv-src'), group=group)
    conf.set_override('destination_endpoint', sim.endpoint('hv-dst'),
                      group=group)
    conf.set_override('transport', transport, group=group)
    conf.set_override('allow_unencrypted_basic', transport == 'basic',
                      group=group)
    user = sim.username if transport == 'basic' else \
        f'{fixture.DOMAIN}\\{sim.username}'
    conf.set_override('username', user, group=group)
    conf.set_override('password', sim.password, group=group)


def spec(instance: str, destination: str = 'hv-dst') -> base.MigrationSpec:
    return base.MigrationSpec(instance=instance,
                              destination=base.Destination(host=destination))


class HyperVBackend(backend.Backend):
    """VMs on the simulated Hyper-V host pair (Basic authentication)."""

    #: the driver's [lmcaps_hyperv] transport
    transport = 'basic'

    completion_timeout = 2
    settle_timeout = 20.0
    poll_interval = 0.05
    stuck_check = 0.3
    slow_cancel = 1.5
    faults = frozenset({Fault.MIGRATION_FAILS, Fault.SLOW_CANCEL,
                        Fault.COMPLETES_DURING_CANCEL, Fault.OWNER_PAUSES,
                        Fault.SESSION_LOST})

    def _setUp(self) -> None:
        try:
            from winrm import protocol
            ok = hasattr(protocol.Protocol, 'build_wsman_header')
        except ImportError:
            ok = False
        if not ok:
            message = 'BACKEND MISSING: pywinrm >= 0.5 (lmcaps[hyperv])'
            if test_backend.in_ci():
                raise RuntimeError(message)
            raise unittest.SkipTest(message)
        self.sim = fixture.shared()
        self.vms: dict[str, str] = {}          # migration id -> VM GUID

    def configure(self, conf: cfg.ConfigOpts, group: str) -> None:
        driver_config(self.sim, conf, group, self.transport)

    def start(self, driver: base.LiveMigrationDriver,
              scenario: backend.Scenario, *,
              prepare_for: frozenset[caps.Operation] = frozenset(),
              fault: Fault | None = None) -> base.Migration:
        name = f'conformance-{os.getpid()}-{next(_COUNTER)}'
        stuck = scenario is backend.Scenario.STUCK
        behaviour: dict[str, object] = {
            'migration_seconds': math.inf if stuck else 1.0,
            'cancel_delay': 0.2}
        if fault is Fault.SLOW_CANCEL:
            behaviour['cancel_delay'] = self.slow_cancel
        if fault is Fault.COMPLETES_DURING_CANCEL:
            behaviour['complete_on_cancel'] = True
        guid = self.sim.add_vm(name, **behaviour)
        migration = driver.start_migration(base.MigrationSpec(
            instance=name, destination=base.Destination(host='hv-dst'),
            prepare_for=prepare_for))
        self.vms[migration.id] = guid
        self.addCleanup(self._stop, migration)
        return migration

    def _job_id(self, migration: base.Migration) -> str:
        return migration.reference.rsplit('"', 2)[-2]

    def _stop(self, migration: base.Migration) -> None:
        job = self.sim.job(self._job_id(migration))
        if job and job['job_state'] in (3, 4):
            self.sim.control('fail_job', instance_id=job['instance_id'],
                             message='stopped by the test backend')

    def locate(self, migration: base.Migration) -> base.GuestLocation:
        vm = self.sim.vm(self.vms[migration.id])
        if vm is None:
            return base.GuestLocation(base.GuestHost.NOWHERE,
                                      base.RunState.UNKNOWN, 'no such VM')
        host = (base.GuestHost.SOURCE if vm['host'] == 'hv-src' else
                base.GuestHost.DESTINATION)
        return base.GuestLocation(host, _RUN.get(vm['enabled_state'],
                                                 base.RunState.UNKNOWN),
                                  f'EnabledState {vm["enabled_state"]}')

    def trigger(self, migration: base.Migration, fault: Fault) -> None:
        if fault is Fault.MIGRATION_FAILS:
            self.sim.control('fail_job', instance_id=self._job_id(migration))
        elif fault is Fault.OWNER_PAUSES:
            self.sim.control('set_vm_state', name=self.vms[migration.id],
                             enabled_state=9)
        elif fault is Fault.SESSION_LOST:
            # the WinRM service restarts: every connection is closed
            self.sim.control('restart_service')
        else:
            super().trigger(migration, fault)

    def unmet_conditions(self, operation: caps.Operation,
                         declaration: caps.Declaration
                         ) -> list[backend.UnmetCondition]:
        if operation is caps.Operation.ABORT:
            return [backend.UnmetCondition(
                'the job reports Cancellable = False (past the switch-over)',
                backend.DRIVER, prepare=self._past_switch_over)]
        return super().unmet_conditions(operation, declaration)

    def _past_switch_over(self, _driver: base.LiveMigrationDriver,
                          migration: base.Migration,
                          _wait_for_phase: object) -> None:
        self.sim.control('set_job', instance_id=self._job_id(migration),
                         cancellable_until=0.0)


class HyperVNTLMBackend(HyperVBackend):
    """The same, with NTLM and message encryption (the default transport)."""

    transport = 'ntlm'
