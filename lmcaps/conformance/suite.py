"""The conformance test: does a driver do exactly what it declares?

Subclass it in a few lines::

    class TestMyDriver(lmcaps.conformance.DriverConformanceTest):
        driver = 'mydriver'
        backend = MyBackend

Every operation gets three tests (declaration, pre-check, behaviour) whose
content depends on the level the driver declares for this host; each of
them can fail.  NotImplementedError, UNKNOWN support or behaviour that
contradicts the declaration are failures, never passes or skips.
"""

from __future__ import annotations

import inspect
import json
from typing import Any
from importlib import metadata

import ddt
from oslo_config import cfg

from lmcaps import capabilities as caps
from lmcaps import conf as lmcaps_conf
from lmcaps import drivers
from lmcaps import events
from lmcaps import exception
from lmcaps.conformance import backend as backend_mod
from lmcaps.conformance import faults
from lmcaps.conformance import harness
from lmcaps.conformance import probe
from lmcaps.drivers import base

Op = caps.Operation
Phase = base.Phase
Scenario = backend_mod.Scenario
S = caps.Support
SRC, DST = backend_mod.SOURCE, backend_mod.DESTINATION
RUNNING, PAUSED = backend_mod.RUNNING, backend_mod.PAUSED
OPERATIONS = [op.value for op in Op]

#: Per action operation: Outcome.action, the final phase, where the guest ends.
ACTION_END = {
    Op.ABORT: ('abort', Phase.CANCELLED, (SRC, RUNNING)),
    Op.FORCE_COMPLETE_PAUSE: ('pause', Phase.COMPLETED, (DST, RUNNING)),
    Op.FORCE_COMPLETE_POSTCOPY: ('postcopy', Phase.COMPLETED, (DST, RUNNING)),
}


@ddt.ddt
class DriverConformanceTest(faults.FaultTests):
    """Proves a driver's declaration on a live backend; subclass it.

    A subclass that names its ``backend`` gets one ``test_fault_<name>``
    per fault in the backend's ``faults``.
    """

    abstract_kit = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        factory = cls.__dict__.get('backend')
        listed: frozenset[backend_mod.Fault] = getattr(factory, 'faults',
                                                       frozenset())
        for name, method in faults.fault_methods(
                {f.value: f for f in sorted(listed, key=lambda f: f.value)}
        ).items():
            setattr(cls, name, method)

    # -- the plugin as a whole ------------------------------------------

    def test_entry_point_loads(self) -> None:
        eps = {ep.value for ep in metadata.entry_points(
            group=drivers.NAMESPACE) if ep.name == self.driver}
        self.assertEqual(1, len(eps), f'entry points named {self.driver!r} '
                         f'in {drivers.NAMESPACE}: {sorted(eps)}')
        cls = self.driver_class
        self.assertTrue(issubclass(cls, base.LiveMigrationDriver))
        self.assertEqual(self.driver, cls.name)
        self.assertFalse(inspect.isabstract(cls),
                         f'{cls.__name__} leaves abstract methods')

    def test_options_register_in_own_group(self) -> None:
        opts = self.driver_class.list_opts()
        group = lmcaps_conf.driver_group(self.driver)
        names = [opt.dest for opt in opts]
        self.assertEqual(len(names), len(set(names)), 'duplicate options')
        for opt in opts:
            self.assertIsInstance(opt, cfg.Opt)
            self.assertTrue((opt.help or '').strip(),
                            f'[{group}] {opt.name} has no help text')
            self.conf[group][opt.dest]  # registered, and its value parses

    def test_declaration_well_formed(self) -> None:
        static = self.driver_class.declare()
        self.assertEqual(static, self.driver_class.declare(),
                         'declare() must be static (the same every call)')
        for which, decl in (('declare()', static),
                            ('host_declaration()', self.declaration)):
            self.assertIsInstance(decl, caps.Declaration, which)
            self.assertEqual(self.driver, decl.driver, which)
            self.assertTrue(decl.title.strip(), f'{which}: no title')
            self.assertEqual(set(Op), set(decl.capabilities), which)
            json.dumps(decl.as_dict())

    def test_declaring_imports_no_client(self) -> None:
        modules = probe.imports_to_declare(self.driver)
        found = probe.clients_among(
            modules, backend_mod.KNOWN_CLIENT_MODULES +
            tuple(self.env.client_modules))
        self.assertEqual([], found, 'loading, declaring and instantiating '
                         'the driver imported hypervisor clients; import '
                         'them in connect()')

    # -- per operation ----------------------------------------------------

    @ddt.data(*OPERATIONS)
    def test_declared(self, value: str) -> None:
        op = Op(value)
        for which, decl in (('declare()', self.driver_class.declare()),
                            ('host_declaration()', self.declaration)):
            cap = decl[op]
            self.assertIsInstance(cap.support, S)
            if cap.support in (S.PARTIAL, S.MISSING):
                self.assertTrue(cap.notes.strip(), f'{which}: {op.value} is '
                                f'{cap.support.value} with no notes (why)')
            if cap.support is S.PARTIAL:
                self.assertTrue(cap.condition.strip(), f'{which}: '
                                f'{op.value} is partial with no condition')
        self._no_unknown(op)

    @ddt.data(*OPERATIONS)
    def test_precheck(self, value: str) -> None:
        op = Op(value)
        self._no_unknown(op)
        if self.support(op) is S.MISSING:
            self._precheck_refuses(op, mention=op.value)
            return
        instance = self.uid(f'precheck-{op.value}')
        body, config = self.request_for(op)
        try:
            self.run_prechecks(instance, body, config)
        except exception.MigrationPreCheckFailed as exc:
            self.fail(f'{op.value} is declared {self.support(op).value} but '
                      f'the pre-checks refuse a request for it: {exc}')
        [event] = self.events_of(instance, events.PRECHECK)
        self.assertEqual(events.SUCCESS, event.result)
        if self.support(op) is S.PARTIAL:
            for cond in self._conditions(op):
                if cond.refused_by == backend_mod.PRECHECK:
                    with self.overrides(cond.config):
                        self._precheck_refuses(op, unmet=cond.description)

    @ddt.data(*OPERATIONS)
    def test_behaviour(self, value: str) -> None:
        op = Op(value)
        self._no_unknown(op)
        level = self.support(op)
        if level is S.MISSING:
            self._verify_missing(op)
            return
        conditions = self._conditions(op) if level is S.PARTIAL else []
        self._verify_usable(op)     # complete, or partial with it met
        for cond in conditions:
            if cond.refused_by == backend_mod.DRIVER:
                self._verify_refused_by_driver(op, cond)

    # -- helpers ----------------------------------------------------------

    def _no_unknown(self, op: Op) -> None:
        if self.support(op) is S.UNKNOWN:
            self.fail(f'{op.value} is declared unknown on this host; declare '
                      f'complete, partial or missing: the kit proves only '
                      f'what is declared')

    def _conditions(self, op: Op) -> list[backend_mod.UnmetCondition]:
        conds = self.env.unmet_conditions(op, self.declaration)
        if not conds:
            self.fail(f'{op.value} is declared partial '
                      f'({self.declaration[op].condition!r}) but the backend '
                      f'names no case where the condition is unmet: '
                      f'override Backend.unmet_conditions()')
        return conds

    def _precheck_refuses(self, op: Op, mention: str = '',
                          unmet: str = '') -> None:
        instance = self.uid(f'precheck-{op.value}')
        body, config = self.request_for(op)
        why = f'although {unmet}' if unmet else 'although it is missing'
        try:
            self.run_prechecks(instance, body, config)
        except exception.MigrationPreCheckFailed:
            pass
        else:
            self.fail(f'the pre-checks accepted a request needing '
                      f'{op.value} {why}')
        found = self.events_of(instance, events.PRECHECK)
        self.assertEqual(1, len(found), 'one pre-check event expected')
        self.assertEqual(events.ERROR, found[0].result)
        self.assertIn(mention, found[0].details or '')

    def _verify_usable(self, op: Op) -> None:
        if op is Op.PER_INSTANCE_TIMEOUT:
            self._verify_timeout()
            return
        prepare = (base.PREPARE_POSTCOPY if op is Op.FORCE_COMPLETE_POSTCOPY
                   else frozenset())
        migration = self.start(Scenario.STUCK, prepare_for=prepare)
        self.located(migration, (SRC, RUNNING), 'while it migrates')
        self.call_declared(op, migration)
        end, seen = self.follow(migration, harness.terminal,
                                f'the end of the migration after {op.value}')
        _action, phase, where = ACTION_END[op]
        self.assertEqual(phase, end.phase, f'after {op.value}')
        self.located(migration, where, f'after {op.value}')
        if op is Op.FORCE_COMPLETE_POSTCOPY:
            self.assertIn(Phase.POSTCOPY, {p for p, _w in seen},
                          'post-copy was never observed')
        if op is Op.FORCE_COMPLETE_PAUSE:
            self.assertTrue(any(p is Phase.PAUSED or w.pair == (SRC, PAUSED)
                                for p, w in seen),
                            f'the guest was never seen paused: {seen[:5]}')

    def _verify_missing(self, op: Op) -> None:
        migration = self.start(Scenario.CONVERGING, settle=False)
        self.expect_unsupported(op, op.value,
                                lambda: self.invoke(op, migration))
        if op is Op.FORCE_COMPLETE_PAUSE:
            self.expect_unsupported(
                op, 'resume_source',
                lambda: self.subject.resume_source(migration))
        end, seen = self.follow(migration, harness.terminal,
                                f'the end of the migration after the '
                                f'refused {op.value}')
        self.assertEqual(Phase.COMPLETED, end.phase, f'the refused '
                         f'{op.value} must leave the migration to complete')
        self.assertNotIn(Phase.POSTCOPY, {p for p, _w in seen})
        self.located(migration, (DST, RUNNING), 'after it completed')

    def _verify_refused_by_driver(self, op: Op,
                                  cond: backend_mod.UnmetCondition) -> None:
        if op is Op.PER_INSTANCE_TIMEOUT:
            self.fail('an unmet per_instance_timeout condition can only be '
                      'refused by the pre-checks (refused_by=PRECHECK)')
        with self.overrides(cond.config):
            migration = self.start(Scenario.STUCK,
                                   prepare_for=cond.prepare_for)
            if cond.prepare is not None:
                cond.prepare(self.subject, migration, self.wait_for_phase)
            where = self.located(migration, None, 'before the refusal').pair
            try:
                self.invoke(op, migration)
            except (exception.OperationRefused,
                    exception.UnsupportedOperation):
                pass
            except NotImplementedError:
                self.fail(f'{op.value} raised NotImplementedError although '
                          f'{cond.description}')
            else:
                self.fail(f'{op.value} is declared partial '
                          f'({self.declaration[op].condition}) but was '
                          f'carried out although {cond.description}')
            phase = self.progress(migration).phase
            self.assertNotIn(phase, (Phase.CANCELLED, Phase.FAILED),
                             f'the refused {op.value} ended the migration')
            self.located(migration, where, f'after the refused {op.value}')

    def _verify_timeout(self) -> None:
        """The real monitor fires once, after the deadline, never before."""
        action_op = self.timeout_action()
        if action_op is None:
            raise self.failureException(
                'per_instance_timeout is declared usable but no timeout '
                'action (abort, force-complete) is usable')
        name, phase, where = ACTION_END[action_op]
        timeout = self.env.completion_timeout
        body = {'completion_timeout': timeout,
                **harness.ACTION_BODY[action_op]}
        calls = self.spy(['abort', 'force_complete'])
        mon = self.monitor()

        instance, migration, watch = self.watched(mon, Scenario.STUCK, body)
        outcome = self.wait_outcome(watch, instance, timeout)
        if outcome.action is None and outcome.phase is Phase.COMPLETED:
            self.fail('backend contract: the STUCK migration converged '
                      'before its completion timeout')
        self.assertEqual(1, len(calls), f'driver calls: {calls}')
        self.assertEqual(name, outcome.action)
        self.assertIsNone(outcome.action_error)
        self.assertGreater(calls[0][1] - migration.started_at, timeout,
                           'the timeout action fired before the deadline')
        self.assertIsNotNone(outcome.fired_at)
        self.assertGreater(outcome.fired_at or 0.0, outcome.deadline or 0.0)
        self.assertEqual(phase, outcome.phase)
        truth = self.located(migration, where, 'after the timeout action')
        self.assertEqual(truth.pair, outcome.location.pair,
                         'the outcome misreports where the guest is')
        [fired] = self.events_of(instance, events.TIMEOUT_ACTION)
        self.assertEqual(events.SUCCESS, fired.result)
        [ended] = self.events_of(instance, events.OUTCOME)
        self.assertIn(str(outcome.location).split(':')[0],
                      ended.details or '')

        del calls[:]
        instance, migration, watch = self.watched(mon, Scenario.CONVERGING,
                                                  body)
        outcome = self.wait_outcome(watch, instance, timeout)
        self.assertEqual(Phase.COMPLETED, outcome.phase)
        if migration.elapsed >= timeout:
            self.fail('backend contract: the CONVERGING migration took longer '
                      'than the completion timeout')
        # The watch has ended: the monitor acts on this migration no more.
        self.assertIsNone(outcome.action)
        self.assertEqual([], calls, 'an action fired on a migration that '
                                    'completed before its deadline')
        self.assertEqual([], self.events_of(instance, events.TIMEOUT_ACTION))
