"""The conformance kit's backend for the powervm driver: the NovaLink simulator.

Each test gets a simulator process of its own with two managed systems.
A STUCK migration is an LPAR whose Migrate job never converges; a
CONVERGING one completes in about a second.  Where a partition is comes
from the simulator's model (``/sim/lpars/{uuid}``), not from the driver.

Faults: MIGRATION_FAILS (the Migrate job fails, the LPAR is left
Migration_Failed on the source), SLOW_CANCEL (a MigrateAbort is accepted
at once and takes effect after :attr:`slow_cancel` s), COMPLETES_DURING_CANCEL
(once an abort is accepted the migration finishes before it takes effect),
SESSION_LOST (every X-API-Session token is invalidated).  OWNER_PAUSES is
not offered: a PowerVM partition cannot be paused, and suspending one is
not allowed while it migrates.
"""

from __future__ import annotations

import itertools
import os
import unittest

from oslo_config import cfg

from lmcaps import capabilities as caps
from lmcaps.conformance import backend
from lmcaps.drivers import base
from tests import backend as test_backend
from tests.functional.powervm import base as pvm_base
from tests.functional.powervm.sim import fixture

_COUNTER = itertools.count(1)
Fault = backend.Fault
_RUN = {'running': base.RunState.RUNNING,
        'migrating running': base.RunState.RUNNING,
        'not activated': base.RunState.SHUT_OFF,
        'error': base.RunState.CRASHED}


class PowerVMBackend(backend.Backend):
    """LPARs on a simulated NovaLink (tests/functional/powervm/sim)."""

    completion_timeout = 3
    settle_timeout = 30.0
    poll_interval = 0.1
    stuck_check = 1.0
    slow_cancel = 1.5
    faults = frozenset({Fault.MIGRATION_FAILS, Fault.SLOW_CANCEL,
                        Fault.COMPLETES_DURING_CANCEL, Fault.SESSION_LOST})

    def _setUp(self) -> None:
        ok, reason = fixture.pypowervm_available()
        if not ok:
            message = f'BACKEND MISSING: {reason}'
            if test_backend.in_ci():
                raise RuntimeError(message)
            raise unittest.SkipTest(message)
        self.sim = self.useFixture(fixture.NovalinkSim())

    def configure(self, conf: cfg.ConfigOpts, group: str) -> None:
        pvm_base.configure(conf, self.sim, group)

    def start(self, driver: base.LiveMigrationDriver,
              scenario: backend.Scenario, *,
              prepare_for: frozenset[caps.Operation] = frozenset(),
              fault: Fault | None = None) -> base.Migration:
        behaviour: dict = {'duration': 'inf' if scenario is
                           backend.Scenario.STUCK else 1.0}
        if fault is Fault.SLOW_CANCEL:
            behaviour['cancel_delay'] = self.slow_cancel
        if fault is Fault.COMPLETES_DURING_CANCEL:
            behaviour.update(cancel_delay=5.0, complete_on_cancel=True)
        name = f'conf-{os.getpid()}-{next(_COUNTER)}'
        lpar = self.sim.add_lpar(name, **behaviour)
        return driver.start_migration(base.MigrationSpec(
            instance=lpar, destination=base.Destination(
                self.sim.target_name), prepare_for=prepare_for))

    def locate(self, migration: base.Migration) -> base.GuestLocation:
        view = self.sim.lpar(migration.spec.instance)
        host = {self.sim.source: base.GuestHost.SOURCE,
                self.sim.target: base.GuestHost.DESTINATION}.get(
            view['system'], base.GuestHost.UNKNOWN)
        return base.GuestLocation(
            host, _RUN.get(view['state'], base.RunState.UNKNOWN),
            f'{view["state"]}, {view["migration_state"]}')

    def trigger(self, migration: base.Migration, fault: Fault) -> None:
        if fault is Fault.MIGRATION_FAILS:
            self.sim.control('POST', f'lpars/{migration.spec.instance}/fail',
                             {'message': 'mover service partition lost'})
        elif fault is Fault.SESSION_LOST:
            self.sim.control('POST', 'sessions/expire')
        else:
            super().trigger(migration, fault)
