"""The fake driver runs the conformance kit; and the kit fails what it must."""

from __future__ import annotations

import dataclasses

import io
import json
import os
import time
import types

import fixtures
import testtools
from cliff import commandmanager

from lmcaps import capabilities as caps
from lmcaps import conformance
from lmcaps import exception
from lmcaps import monitor
from lmcaps.cmd import conformance as cmd_conformance
from lmcaps.cmd import main as cli_main
from lmcaps.conformance import results
from lmcaps.conformance import runner
from lmcaps.drivers import fake

Op = caps.Operation
S = caps.Support
ABORT_TESTS = ('test_declared_1_abort', 'test_precheck_1_abort',
               'test_behaviour_1_abort')
POSTCOPY_TESTS = ('test_declared_2_', 'test_precheck_2_', 'test_behaviour_2_')


class AbortMissing(conformance.FakeBackend):
    support = {'abort': 'missing'}


class PostcopyPartial(conformance.FakeBackend):
    support = {'force_complete_postcopy': 'partial'}


class TestFakeAllComplete(conformance.DriverConformanceTest):
    driver = 'fake'
    backend = conformance.FakeBackend

    def test_declares_as_configured(self) -> None:
        self.assertEqual({S.COMPLETE}, {self.support(op) for op in Op})


class TestFakeAbortMissing(conformance.DriverConformanceTest):
    driver = 'fake'
    backend = AbortMissing

    def test_declares_as_configured(self) -> None:
        self.assertEqual(S.MISSING, self.support(Op.ABORT))


class TestFakePostcopyPartial(conformance.DriverConformanceTest):
    driver = 'fake'
    backend = PostcopyPartial

    def test_declares_as_configured(self) -> None:
        self.assertEqual(S.PARTIAL, self.support(Op.FORCE_COMPLETE_POSTCOPY))


class QuickGiveUp(conformance.FakeBackend):
    settle_timeout = 1.0


class ConvergingAlways(conformance.FakeBackend):
    """Breaks the backend contract: its STUCK migrations converge."""

    time_scale = 100.0

    def start(self, driver, scenario, **kwargs):
        return super().start(driver, conformance.Scenario.CONVERGING,
                             **kwargs)


def _noop(self, *args):
    return None


def _not_implemented(self, *args):
    raise NotImplementedError()


class TestKitFails(testtools.TestCase):
    """Sabotaged drivers: the verdict must be 'failed', never a pass."""

    def run_kit(self, backend=conformance.FakeBackend, tests=ABORT_TESTS,
                **support: str) -> results.RunResult:
        factory = (lambda: backend(support)) if support else backend
        return conformance.run('fake', factory, tests=tests)

    def patch(self, name: str, value: object) -> None:
        self.useFixture(fixtures.MonkeyPatch(name, value))

    def assertFailed(self, result: results.RunResult, op: Op,
                     text: str) -> None:
        res = result.operations[op]
        self.assertEqual(results.FAILED, res.verdict, res.reasons)
        self.assertIn(text, ' '.join(res.reasons))
        self.assertFalse(result.passed)

    def test_untouched_driver_passes(self) -> None:
        result = self.run_kit()
        self.assertEqual(results.VERIFIED,
                         result.operations[Op.ABORT].verdict)

    def test_unknown_support_fails(self) -> None:
        self.assertFailed(self.run_kit(abort='unknown'), Op.ABORT,
                          'declared unknown')

    def test_declared_complete_abort_that_does_nothing_fails(self) -> None:
        self.patch('lmcaps.drivers.fake.FakeDriver._abort', _noop)
        self.assertFailed(self.run_kit(backend=QuickGiveUp), Op.ABORT,
                          'the end of the migration after abort')

    def test_not_implemented_error_fails(self) -> None:
        self.patch('lmcaps.drivers.fake.FakeDriver._abort', _not_implemented)
        self.assertFailed(self.run_kit(), Op.ABORT, 'NotImplementedError')

    def test_missing_but_carried_out_fails(self) -> None:
        self.patch('lmcaps.drivers.fake.FakeDriver.abort',
                   lambda self, m: self._abort(m))
        self.assertFailed(self.run_kit(abort='missing'), Op.ABORT,
                          'did not raise')

    def test_missing_raising_not_implemented_fails(self) -> None:
        self.patch('lmcaps.drivers.fake.FakeDriver.abort', _not_implemented)
        self.assertFailed(self.run_kit(abort='missing'), Op.ABORT,
                          'NotImplementedError')

    def test_postcopy_that_pauses_fails(self) -> None:
        real = fake.FakeDriver._force_complete

        def pause_instead(self, migration, mode):
            real(self, migration, caps.ForceCompleteMode.PAUSE)

        self.patch('lmcaps.drivers.fake.FakeDriver._force_complete',
                   pause_instead)
        self.assertFailed(self.run_kit(tests=POSTCOPY_TESTS),
                          Op.FORCE_COMPLETE_POSTCOPY, 'post-copy was never')

    def test_partial_condition_not_enforced_fails(self) -> None:
        real = fake.FakeDriver.start_migration

        def always_capable(self, spec):
            migration = real(self, spec)
            migration.backend.postcopy_capable = True
            return migration

        self.patch('lmcaps.drivers.fake.FakeDriver.start_migration',
                   always_capable)
        self.assertFailed(
            self.run_kit(tests=POSTCOPY_TESTS,
                         force_complete_postcopy='partial'),
            Op.FORCE_COMPLETE_POSTCOPY, 'started without postcopy')

    def test_pause_that_does_not_pause_fails(self) -> None:
        real = fake.FakeDriver._force_complete

        def no_pause(self, migration, mode):
            if mode is not caps.ForceCompleteMode.PAUSE:
                real(self, migration, mode)

        self.patch('lmcaps.drivers.fake.FakeDriver._force_complete',
                   no_pause)
        self.assertFailed(self.run_kit(backend=QuickGiveUp,
                                       tests=('test_behaviour_3_',)),
                          Op.FORCE_COMPLETE_PAUSE, 'not reached')

    def test_timeout_action_fired_twice_fails(self) -> None:
        real = monitor.TimeoutMonitor._call

        def act_twice(self, st, attempt, inline=False):
            try:                      # a broken latch: the action twice
                st.driver.abort(st.migration)
            except Exception:
                pass
            real(self, st, attempt, inline)

        self.patch('lmcaps.monitor.TimeoutMonitor._call', act_twice)
        # the kit counts two driver calls, or sees the second one recorded
        # as a failed action (refused: already cancelled), whichever first
        result = self.run_kit(tests=('test_behaviour_4_',))
        self.assertFailed(result, Op.PER_INSTANCE_TIMEOUT, '')
        reasons = ' '.join(result.operations[Op.PER_INSTANCE_TIMEOUT].reasons)
        self.assertTrue('driver calls' in reasons or
                        'timeout action failed' in reasons, reasons)

    def test_timeout_test_waits_on_the_monitor_not_the_clock(self) -> None:
        # Once the watch has ended the monitor acts no more: a sleep after
        # it only makes the kit slower.
        slept: list[float] = []

        def sleep(seconds: float) -> None:
            slept.append(seconds)
            time.sleep(seconds)

        self.patch('lmcaps.conformance.suite.time', types.SimpleNamespace(
            monotonic=time.monotonic, sleep=sleep))
        result = self.run_kit(tests=('test_behaviour_4_',))
        self.assertEqual(results.VERIFIED,
                         result.operations[Op.PER_INSTANCE_TIMEOUT].verdict,
                         result.operations[Op.PER_INSTANCE_TIMEOUT].reasons)
        self.assertEqual([], slept)

    def test_timeout_action_before_the_deadline_fails(self) -> None:
        real = monitor.TimeoutMonitor.watch

        def early(self, driver, migration, pol, **kwargs):
            pol = dataclasses.replace(
                pol, completion_timeout=0.001)
            return real(self, driver, migration, pol, **kwargs)

        self.patch('lmcaps.monitor.TimeoutMonitor.watch', early)
        self.assertFailed(
            self.run_kit(tests=('test_behaviour_4_',)),
            Op.PER_INSTANCE_TIMEOUT, 'before the deadline')

    def test_broken_backend_contract_fails(self) -> None:
        self.assertFailed(self.run_kit(backend=ConvergingAlways),
                          Op.ABORT, 'backend contract')

    def test_client_import_while_declaring_fails(self) -> None:
        self.patch('lmcaps.conformance.backend.KNOWN_CLIENT_MODULES',
                   ('lmcaps',))
        result = self.run_kit(tests=('test_declaring',))
        self.assertEqual(['failed'], [t.status for t in result.general])

    def test_kit_itself_is_skipped_by_runners(self) -> None:
        result = testtools.TestResult()
        conformance.DriverConformanceTest('test_entry_point_loads').run(result)
        self.assertEqual(1, len(result.skip_reasons))

    def test_subclass_without_driver_fails(self) -> None:
        class NoDriver(conformance.DriverConformanceTest):
            backend = conformance.FakeBackend

        result = testtools.TestResult()
        NoDriver('test_entry_point_loads').run(result)
        self.assertEqual(1, len(result.failures))


class TestResults(testtools.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.state = os.path.join(self.useFixture(fixtures.TempDir()).path,
                                  'state')

    def test_save_and_load_last(self) -> None:
        self.assertEqual({}, results.load_last(self.state))
        first = conformance.run('fake', AbortMissing, tests=ABORT_TESTS)
        results.save(self.state, first)
        results.save(self.state, {'driver': 'other', 'passed': False})
        last = results.load_last(self.state)
        self.assertEqual(['fake', 'other'], sorted(last))
        abort = last['fake']['operations']['abort']
        self.assertEqual(('missing', results.REFUSED),
                         (abort['declared'], abort['verdict']))
        self.assertEqual('missing', last['fake']['declaration'][
            'operations']['abort']['support'])

    def test_unreadable_file_is_no_run(self) -> None:
        os.makedirs(self.state)
        with open(results.path(self.state), 'w') as fh:
            fh.write('{not json')
        self.assertEqual({}, results.load_last(self.state))

    def test_operation_without_tests_fails(self) -> None:
        run = results.RunResult('fake', 'x')
        run.finish()
        self.assertEqual({results.FAILED},
                         {r.verdict for r in run.operations.values()})
        self.assertEqual(results.FAILED, run.general_verdict)
        self.assertFalse(run.passed)

    def test_filtered_run_leaves_the_rest_not_run(self) -> None:
        run = conformance.run('fake', AbortMissing, tests=ABORT_TESTS)
        verdicts = {op: r.verdict for op, r in run.operations.items()}
        self.assertEqual(results.REFUSED, verdicts.pop(Op.ABORT))
        self.assertEqual({results.NOT_RUN}, set(verdicts.values()))
        self.assertEqual([], run.operations[Op.PER_INSTANCE_TIMEOUT].reasons)
        self.assertEqual(results.NOT_RUN, run.general_verdict)
        self.assertTrue(run.passed)

    def test_filtered_run_still_fails_a_failed_test(self) -> None:
        self.useFixture(fixtures.MonkeyPatch(
            'lmcaps.drivers.fake.FakeDriver.abort', _not_implemented))
        run = conformance.run('fake', AbortMissing, tests=ABORT_TESTS)
        self.assertEqual(results.FAILED, run.operations[Op.ABORT].verdict)
        self.assertFalse(run.passed)

    def test_filtered_run_with_no_test_fails(self) -> None:
        run = conformance.run('fake', AbortMissing, tests=('test_nosuch',))
        self.assertEqual({results.NOT_RUN},
                         {r.verdict for r in run.operations.values()})
        self.assertFalse(run.passed)

    def test_operation_of(self) -> None:
        self.assertIs(Op.FORCE_COMPLETE_PAUSE,
                      results.operation_of('test_behaviour_3_'
                                           'force_complete_pause'))
        self.assertIsNone(results.operation_of('test_entry_point_loads'))

    def test_resolve_backend(self) -> None:
        self.assertIs(conformance.FakeBackend,
                      runner.resolve_backend('fake'))
        self.assertIs(AbortMissing, runner.resolve_backend(
            'x', f'{__name__}:AbortMissing'))
        for spec in ('nocolon', 'no.such.module:X', f'{__name__}:Nope'):
            self.assertRaises(exception.BackendNotFound,
                              runner.resolve_backend, 'x', spec)
        self.assertRaises(exception.BackendNotFound,
                          runner.resolve_backend, 'nosuchdriver')


class _Commands(commandmanager.CommandManager):
    """The CLI's commands, plus conformance until setup.cfg declares it."""

    def load_commands(self, namespace: str) -> None:
        super().load_commands(namespace)
        if 'conformance' not in self.commands:
            self.add_command('conformance', cmd_conformance.Conformance)


class TestCommand(testtools.TestCase):

    def lmcaps(self, *argv: str) -> tuple[int, str, str]:
        tmp = self.useFixture(fixtures.TempDir()).path
        self.state = os.path.join(tmp, 'state')
        config = os.path.join(tmp, 'lmcaps.conf')
        with open(config, 'w') as fh:
            fh.write(f'[lmcaps]\nstate_path = {self.state}\n'
                     f'[lmcaps_fake]\nabort = missing\n')
        self.useFixture(fixtures.MonkeyPatch(
            'lmcaps.cmd.main.commandmanager.CommandManager', _Commands))
        out, err = io.StringIO(), io.StringIO()
        with fixtures.MonkeyPatch('sys.stdout', out), \
                fixtures.MonkeyPatch('sys.stderr', err):
            code = cli_main.main(['--config-file', config, *argv])
        return code, out.getvalue(), err.getvalue()

    def test_prints_verdicts_and_saves_the_run(self) -> None:
        code, out, err = self.lmcaps('conformance', 'fake', '-f', 'json')
        self.assertEqual(0, code, err)
        rows = {r['Operation']: r for r in json.loads(out)}
        self.assertEqual(results.REFUSED, rows['abort']['Verdict'])
        self.assertEqual('missing', rows['abort']['Declared'])
        self.assertEqual(results.VERIFIED, rows['plugin']['Verdict'])
        last = results.load_last(self.state)['fake']
        self.assertTrue(last['passed'])

    def test_failure_exits_1(self) -> None:
        self.useFixture(fixtures.MonkeyPatch(
            'lmcaps.drivers.fake.FakeDriver.abort', _not_implemented))
        code, out, err = self.lmcaps('conformance', 'fake', '-f', 'json')
        self.assertEqual(1, code, err)
        rows = {r['Operation']: r for r in json.loads(out)}
        self.assertEqual(results.FAILED, rows['abort']['Verdict'])
        self.assertIn('NotImplementedError', rows['abort']['Reason'])
        self.assertEqual(results.VERIFIED, rows['force_complete_pause'][
            'Verdict'])
        self.assertFalse(results.load_last(self.state)['fake']['passed'])

    def test_filtered_run_passes_and_is_not_saved(self) -> None:
        code, out, err = self.lmcaps('conformance', 'fake', '--test',
                                     'test_declared_1_', '-f', 'json')
        self.assertEqual(0, code, err)
        rows = {r['Operation']: r for r in json.loads(out)}
        self.assertEqual(results.REFUSED, rows.pop('abort')['Verdict'])
        self.assertEqual({results.NOT_RUN},
                         {r['Verdict'] for r in rows.values()})
        self.assertEqual({''}, {r['Reason'] for r in rows.values()})
        self.assertEqual({}, results.load_last(self.state))

    def test_filtered_run_with_a_failure_exits_1(self) -> None:
        self.useFixture(fixtures.MonkeyPatch(
            'lmcaps.drivers.fake.FakeDriver.abort', _not_implemented))
        code, out, err = self.lmcaps('conformance', 'fake', '--test',
                                     'test_behaviour_1_', '-f', 'json')
        self.assertEqual(1, code, err)
        rows = {r['Operation']: r for r in json.loads(out)}
        self.assertEqual(results.FAILED, rows['abort']['Verdict'])
        self.assertEqual(results.NOT_RUN, rows['plugin']['Verdict'])

    def test_unknown_driver_is_a_usage_error(self) -> None:
        code, _out, err = self.lmcaps('conformance', 'nosuchdriver')
        self.assertEqual(2, code)
        self.assertIn("Unknown lmcaps driver 'nosuchdriver'", err)

    def test_unknown_backend_is_a_usage_error(self) -> None:
        for spec in ('nope:Nope', 'nocolon', f'{__name__}:Nope'):
            code, out, err = self.lmcaps('conformance', 'fake',
                                         '--backend', spec)
            self.assertEqual((2, ''), (code, out), err)
            [line] = err.splitlines()
            self.assertTrue(line.startswith(
                'lmcaps: error: No conformance backend for driver fake: '),
                line)
