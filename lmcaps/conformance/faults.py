"""The kit's fault tests: one per fault the backend says it can inject.

Each runs a migration under the real monitor, brings the fault about, and
asserts the outcome, the observed location against the backend's own
truth (a driver that misreports fails), and the events recorded.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from lmcaps import capabilities as caps
from lmcaps import events
from lmcaps.conformance import backend as backend_mod
from lmcaps.conformance import harness
from lmcaps.drivers import base

Op = caps.Operation
Fault = backend_mod.Fault
Phase = base.Phase
Scenario = backend_mod.Scenario
SRC, DST = base.GuestHost.SOURCE, base.GuestHost.DESTINATION
RUNNING, PAUSED = base.RunState.RUNNING, base.RunState.PAUSED


class FaultTests(harness.Harness):
    """Fault tests, added per backend by ``DriverConformanceTest``."""

    def verify_fault(self, fault: Fault) -> None:
        """Run the test of ``fault`` (listed in the backend's faults)."""
        if fault not in self.env.faults:
            self.fail(f'{fault.value} is not among the faults of '
                      f'{type(self.env).__name__}')
        {Fault.MIGRATION_FAILS: self._migration_fails,
         Fault.DESTINATION_DIES_IN_POSTCOPY: self._destination_dies,
         Fault.OWNER_PAUSES: self._owner_pauses,
         Fault.SLOW_CANCEL: self._slow_cancel,
         Fault.COMPLETES_DURING_CANCEL: self._completes_during_cancel,
         Fault.SESSION_LOST: self._session_lost}[fault]()

    # -- helpers ----------------------------------------------------------

    def _policy_body(self, op: Op | None, timeout: float | None = None
                     ) -> tuple[dict, dict]:
        """A request (and config) whose timeout action needs ``op``.

        None: no timeout at all (the migration is only watched).
        """
        if op is None:
            return {}, {}
        timeout = self.env.completion_timeout if timeout is None else timeout
        action = dict(harness.ACTION_BODY[op])
        if self.support(Op.PER_INSTANCE_TIMEOUT).usable:
            return {'completion_timeout': int(timeout), **action}, {}
        return {}, {'completion_timeout_per_gib': max(1, int(timeout / 2)),
                    **action}

    def _usable(self, op: Op, fault: Fault) -> bool:
        """Whether ``fault`` can arise here; if not, ``op`` is refused.

        A fault that needs an operation the driver declares unusable on
        this host cannot arise (no cancel, no slow cancel): the kit checks
        instead that the operation is refused as declared.
        """
        if self.support(op).usable:
            return True
        migration = self.start(Scenario.CONVERGING, settle=False)
        self.expect_unsupported(op, f'{op.value} (needed by {fault.value})',
                                lambda: self.invoke(op, migration))
        return False

    def _end(self, instance: str, watch: Any, timeout: float
             ) -> Any:
        outcome = self.wait_outcome(watch, instance, timeout)
        return outcome

    def _check_end(self, instance: str, migration: base.Migration,
                   outcome: Any, phase: Phase,
                   where: tuple[base.GuestHost, base.RunState] | None,
                   what: str) -> base.GuestLocation:
        """Outcome phase, location (driver = backend = outcome), events."""
        self.assertEqual(phase, outcome.phase, f'the end {what}')
        truth = self.located(migration, where, what)
        self.assertEqual(truth.pair, outcome.location.pair,
                         f'the outcome misreports where the guest is {what}:'
                         f' {outcome.location} vs {truth}')
        [ended] = self.events_of(instance, events.OUTCOME)
        self.assertEqual(events.SUCCESS if phase is Phase.COMPLETED
                         else events.ERROR, ended.result,
                         f'the outcome event {what}: {ended.details}')
        self.assertIn(f'guest: {truth.host.value} ({truth.state.value})',
                      ended.details or '',
                      'the outcome event does not say where the guest is')
        return truth

    def _watch(self, body_config: tuple[dict, dict],
               scenario: Scenario = Scenario.STUCK,
               fault: Fault | None = None,
               prepare_for: frozenset[Op] | None = None,
               ) -> tuple[str, base.Migration, Any]:
        body, config = body_config
        mon = self.monitor()
        with self.overrides({'lmcaps': dict(config)}):
            return self.watched(mon, scenario, body, fault=fault,
                                prefix='fault', prepare_for=prepare_for)

    def _wait_running(self, migration: base.Migration) -> None:
        self.follow(migration, lambda p, _w: p.phase is not Phase.PREPARING,
                    'the start of the migration')

    # -- the faults -------------------------------------------------------

    def _migration_fails(self) -> None:
        instance, migration, watch = self._watch(self._policy_body(None))
        self._wait_running(migration)
        self.env.trigger(migration, Fault.MIGRATION_FAILS)
        outcome = self._end(instance, watch, 0)
        self._check_end(instance, migration, outcome, Phase.FAILED,
                        (SRC, RUNNING), 'after the migration failed')
        self.assertIsNone(outcome.action)

    def _destination_dies(self) -> None:
        fault = Fault.DESTINATION_DIES_IN_POSTCOPY
        if not self._usable(Op.FORCE_COMPLETE_POSTCOPY, fault):
            return
        instance, migration, watch = self._watch(
            self._policy_body(None), prepare_for=base.PREPARE_POSTCOPY)
        self._wait_running(migration)
        self.subject.force_complete(migration,
                                    caps.ForceCompleteMode.POSTCOPY)
        self.wait_for_phase(migration, Phase.POSTCOPY)
        self.env.trigger(migration, fault)
        outcome = self._end(instance, watch, 0)
        truth = self._check_end(instance, migration, outcome, Phase.FAILED,
                                None, 'after the destination died in '
                                'post-copy')
        self.assertNotEqual(RUNNING, truth.state, 'backend contract: the '
                            'guest cannot run on after its destination died '
                            'in post-copy')

    def _owner_pauses(self) -> None:
        op = next((o for o in (Op.ABORT, Op.FORCE_COMPLETE_POSTCOPY)
                   if self.support(o).usable), None)
        if op is None and not self._usable(Op.ABORT, Fault.OWNER_PAUSES):
            return
        resumes = self.spy(['resume_source'])
        instance, migration, watch = self._watch(self._policy_body(op))
        self._wait_running(migration)
        self.env.trigger(migration, Fault.OWNER_PAUSES)
        outcome = self._end(instance, watch, self.env.completion_timeout)
        # Whether the guest is still paused is the backend's business (libvirt
        # restores the state from before the migration after a cancel): the
        # driver and the outcome must say what the backend shows.
        truth = self.located(migration, None, 'after its owner paused it')
        self.assertEqual(truth.pair, outcome.location.pair,
                         f'the outcome says {outcome.location}, the backend '
                         f'has {truth}')
        self.assertEqual([], resumes, 'lmcaps resumed a guest it did not '
                                      'pause')

    def _slow_cancel(self) -> None:
        if not self._usable(Op.ABORT, Fault.SLOW_CANCEL):
            return
        instance, migration, watch = self._watch(self._policy_body(Op.ABORT),
                                                 fault=Fault.SLOW_CANCEL)
        outcome = self._end(instance, watch, self.env.completion_timeout +
                            self.env.slow_cancel)
        self.assertEqual('abort', outcome.action)
        self.assertIsNotNone(outcome.fired_at)
        took = outcome.fired_at - outcome.deadline
        self.assertLess(took, self.env.slow_cancel, 'abort returned only '
                        'after the cancel took effect (it must return once '
                        'the backend accepted it)')
        self._check_end(instance, migration, outcome, Phase.CANCELLED,
                        (SRC, RUNNING), 'after a slow cancel')
        [fired] = self.events_of(instance, events.TIMEOUT_ACTION)
        self.assertEqual(events.SUCCESS, fired.result)

    def _completes_during_cancel(self) -> None:
        if not self._usable(Op.ABORT, Fault.COMPLETES_DURING_CANCEL):
            return
        instance, migration, watch = self._watch(
            self._policy_body(Op.ABORT), fault=Fault.COMPLETES_DURING_CANCEL)
        outcome = self._end(instance, watch, self.env.completion_timeout)
        self._check_end(instance, migration, outcome, Phase.COMPLETED,
                        (DST, RUNNING), 'after it completed during the '
                        'cancel')

    def _session_lost(self) -> None:
        op = Op.ABORT if self.support(Op.ABORT).usable else None
        instance, migration, watch = self._watch(self._policy_body(op))
        self._wait_running(migration)
        self.env.trigger(migration, Fault.SESSION_LOST)
        started = time.monotonic()
        progress = self.progress(migration)   # the driver logs in again
        self.assertIsInstance(progress, base.Progress)
        if op is None:
            self.located(migration, (SRC, RUNNING), 'after the session was '
                         'lost')
            return
        outcome = self._end(instance, watch, self.env.completion_timeout)
        self._check_end(instance, migration, outcome, Phase.CANCELLED,
                        (SRC, RUNNING), 'after the session was lost')
        self.assertLess(time.monotonic() - started,
                        self.env.completion_timeout + self.env.settle_timeout)


def fault_methods(faults: Mapping[str, Fault]) -> dict[str, Any]:
    """Test methods ``test_fault_<name>`` for the given faults."""
    def make(fault: Fault) -> Any:
        def test(self: FaultTests) -> None:
            self.verify_fault(fault)
        test.__name__ = f'test_fault_{fault.value}'
        test.__doc__ = f'The backend injects {fault.value}.'
        return test
    return {f'test_fault_{f.value}': make(f) for f in faults.values()}
