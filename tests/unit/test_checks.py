"""Tests of the built-in pre-checks and the runner."""

import ddt
import fixtures

from lmcaps import capabilities as caps
from lmcaps import checks
from lmcaps import events
from lmcaps import exception
from lmcaps import policy
from lmcaps.checks import base
from lmcaps.checks import driver_support
from lmcaps.checks import post_copy
from lmcaps.checks import timeout_bounds
from tests.unit import base as test_base

C, P, M, U = (caps.Support.COMPLETE, caps.Support.PARTIAL,
              caps.Support.MISSING, caps.Support.UNKNOWN)


def _decl(abort=C, postcopy=C, pause=C, per_instance=C):
    return caps.Declaration('drv', 'Driver', {
        caps.Operation.ABORT: caps.Capability(abort, notes='n-abort'),
        caps.Operation.FORCE_COMPLETE_POSTCOPY: caps.Capability(postcopy),
        caps.Operation.FORCE_COMPLETE_PAUSE: caps.Capability(pause),
        caps.Operation.PER_INSTANCE_TIMEOUT: caps.Capability(per_instance),
    }, host='h1')


class _Base(test_base.ConfTestCase):

    def ctx(self, body=None, decl=None, gib=2.0):
        body = body or {}
        pol = policy.resolve(self.conf, gib, [('request', body)])
        return base.CheckContext(instance='inst-1', policy=pol,
                                 declaration=decl or _decl(),
                                 conf=self.conf, request=body)


@ddt.ddt
class DriverSupportTest(_Base):

    @ddt.unpack
    @ddt.data(
        # request, declaration kwargs, permit_post_copy, passes
        ({}, {}, False, True),
        ({}, {'abort': M}, False, False),            # config abort implied
        ({'completion_timeout': 0}, {'abort': M}, False, True),  # never fires
        ({'timeout_action': 'abort'}, {'abort': P}, False, True),
        ({'timeout_action': 'abort'}, {'abort': U}, False, False),
        ({'timeout_action': 'force_complete'},
         {'postcopy': M, 'pause': M}, True, False),
        ({'timeout_action': 'force_complete'}, {'postcopy': M}, True, True),
        ({'timeout_action': 'force_complete', 'force_complete_mode': 'pause'},
         {'pause': M}, True, False),
        ({'timeout_action': 'force_complete',
          'force_complete_mode': 'postcopy'}, {'postcopy': M}, True, False),
        ({'completion_timeout': 60}, {'per_instance': M}, False, False),
        ({}, {'per_instance': M}, False, True),     # config only: fine
    )
    def test_truth_table(self, body, decl, permit, passes):
        self.cfg.config(permit_post_copy=permit, group='lmcaps')
        check = driver_support.DriverSupportCheck(self.conf)
        result = check.check(self.ctx(body, _decl(**decl)))
        self.assertEqual(passes, result.passed, result.reason)
        if not passes:
            self.assertIn('drv', result.reason)
            self.assertIn('h1', result.reason)


@ddt.ddt
class PostCopyTest(_Base):

    @ddt.unpack
    @ddt.data(
        ({'timeout_action': 'force_complete',
          'force_complete_mode': 'postcopy'}, False, False),
        ({'timeout_action': 'force_complete',
          'force_complete_mode': 'postcopy'}, True, True),
        ({'timeout_action': 'force_complete'}, False, True),   # auto → pause
        ({'timeout_action': 'abort', 'force_complete_mode': 'postcopy'},
         False, True),
        ({'completion_timeout': 0, 'timeout_action': 'force_complete',
          'force_complete_mode': 'postcopy'}, False, True),
    )
    def test_truth_table(self, body, permit, passes):
        self.cfg.config(permit_post_copy=permit, group='lmcaps')
        result = post_copy.PostCopyCheck(self.conf).check(self.ctx(body))
        self.assertEqual(passes, result.passed, result.reason)
        if not passes:
            self.assertIn('permit_post_copy', result.reason)

    def test_implied_by_config(self):
        self.cfg.config(timeout_action='force_complete',
                        force_complete_mode='postcopy', group='lmcaps')
        result = post_copy.PostCopyCheck(self.conf).check(self.ctx())
        self.assertFalse(result.passed)
        self.assertIn('from config', result.reason)


@ddt.ddt
class TimeoutBoundsTest(_Base):

    @ddt.unpack
    @ddt.data(
        # request, min, max, allowed actions, passes
        ({'completion_timeout': 60}, 0, 0, None, True),
        ({'completion_timeout': 0}, 0, 0, None, True),
        ({'completion_timeout': 0}, 0, 3600, None, False),
        ({'completion_timeout': 30}, 60, 0, None, False),
        ({'completion_timeout': 60}, 60, 60, None, True),
        ({'completion_timeout': 61}, 60, 60, None, False),
        ({'timeout_action': 'force_complete'}, 0, 0, ['abort'], False),
        ({'timeout_action': 'abort'}, 0, 0, ['abort'], True),
        ({}, 600, 900, ['abort'], True),   # config values are not bounded
    )
    def test_truth_table(self, body, lo, hi, allowed, passes):
        self.cfg.config(min_completion_timeout=lo, max_completion_timeout=hi,
                        group='lmcaps')
        if allowed is not None:
            self.cfg.config(allowed_timeout_actions=allowed, group='lmcaps')
        result = timeout_bounds.TimeoutBoundsCheck(self.conf).check(
            self.ctx(body))
        self.assertEqual(passes, result.passed, result.reason)
        if not passes:
            self.assertIn('allowed', result.reason)


class _Crash(base.PreCheck):
    name = 'crash'

    def check(self, ctx):
        raise RuntimeError('boom')


class RunnerTest(_Base):

    def test_loads_enabled_in_order(self):
        self.cfg.config(enabled_checks=['timeout_bounds', 'driver_support'],
                        group='lmcaps')
        runner = checks.PreCheckRunner(self.conf)
        self.assertEqual(['timeout_bounds', 'driver_support'],
                         [c.name for c in runner.checks])

    def test_unknown_check_named(self):
        self.cfg.config(enabled_checks=['driver_support', 'nope'],
                        group='lmcaps')
        err = self.assertRaises(exception.CheckNotFound,
                                checks.PreCheckRunner, self.conf)
        self.assertIn("'nope'", str(err))
        self.assertIn('driver_support, post_copy, timeout_bounds', str(err))

    def test_pass_records_success_event(self):
        store = events.MemoryEventStore()
        report = checks.PreCheckRunner(self.conf).run(self.ctx(), store, 'req-1')
        self.assertTrue(report.passed)
        self.assertEqual(3, len(report.results))
        [ev] = store.list_events('inst-1')
        self.assertEqual((events.PRECHECK, events.SUCCESS, 'req-1'),
                         (ev.event, ev.result, ev.request_id))
        self.assertEqual(self.conf.lmcaps.host, ev.host)
        self.assertIsNotNone(ev.finish_time)

    def test_failure_records_every_reason_and_raises(self):
        self.cfg.config(max_completion_timeout=100, group='lmcaps')
        store = events.MemoryEventStore()
        ctx = self.ctx({'completion_timeout': 500,
                        'timeout_action': 'force_complete',
                        'force_complete_mode': 'postcopy'},
                       _decl(postcopy=M))
        err = self.assertRaises(exception.MigrationPreCheckFailed,
                                checks.PreCheckRunner(self.conf).run,
                                ctx, store, 'req-2')
        self.assertEqual(3, len(err.reasons))
        [ev] = store.list_events('inst-1')
        self.assertEqual(events.ERROR, ev.result)
        for name in ('driver_support:', 'post_copy:', 'timeout_bounds:'):
            self.assertIn(name, ev.details)
        self.assertEqual(events.LIVE_MIGRATION, ev.action)

    def test_crashing_check_refuses(self):
        store = events.MemoryEventStore()
        runner = checks.PreCheckRunner(self.conf, checks=[_Crash(self.conf)])
        err = self.assertRaises(exception.MigrationPreCheckFailed,
                                runner.run, self.ctx(), store, 'r')
        self.assertIn('crashed: RuntimeError: boom', str(err))
        self.assertEqual(events.ERROR, store.list_events('inst-1')[0].result)

    def test_refusal_carries_the_report(self):
        store = events.MemoryEventStore()
        ctx = self.ctx({'completion_timeout': 500,
                        'timeout_action': 'force_complete',
                        'force_complete_mode': 'postcopy'}, _decl(postcopy=M))
        err = self.assertRaises(exception.MigrationPreCheckFailed,
                                checks.PreCheckRunner(self.conf).run,
                                ctx, store, 'req-3')
        self.assertEqual(['driver_support', 'post_copy', 'timeout_bounds'],
                         [r.name for r in err.report.results])
        self.assertEqual(tuple(err.report.reasons), err.reasons)
        self.assertFalse(err.report.results[0].passed)

    def test_no_success_event_unless_asked(self):
        store = events.MemoryEventStore()
        runner = checks.PreCheckRunner(
            self.conf, checks=[_Counting(self.conf, True)])
        report = runner.run(self.ctx(), store, 'r', record_success=False)
        self.assertTrue(report.passed)
        self.assertEqual([], store.list_events('inst-1'))
        self.assertEqual(1, runner.checks[0].calls)

    def test_refusal_recorded_once_without_success_event(self):
        store = events.MemoryEventStore()
        runner = checks.PreCheckRunner(
            self.conf, checks=[_Counting(self.conf, False)])
        err = self.assertRaises(exception.MigrationPreCheckFailed,
                                runner.run, self.ctx(), store, 'r',
                                record_success=False)
        self.assertEqual(1, runner.checks[0].calls)
        self.assertEqual(('counting: no',), err.reasons)
        self.assertEqual(err.reasons, tuple(err.report.reasons))
        [ev] = store.list_events('inst-1')
        # A one-line summary naming the failed checks, then the reasons,
        # then the policy with each value's source.
        lines = ev.details.splitlines()
        self.assertEqual((events.PRECHECK, events.ERROR),
                         (ev.event, ev.result))
        self.assertEqual(['refused by 1 of 1 lmcaps pre-checks: counting',
                          'counting: no'], lines[:2])
        self.assertTrue(lines[2].startswith('effective policy: '
                                            'completion_timeout '), lines)
        self.assertIsNotNone(ev.finish_time)

    def test_summary_names_every_failed_check_in_one_short_line(self):
        results = tuple(
            base.CheckResult(f'check_{i:02d}', i % 3 != 0, 'why ' * 40)
            for i in range(12))
        report = checks.PreCheckReport('inst-1', results)
        summary = report.summary
        self.assertNotIn('\n', summary)
        self.assertLessEqual(len(summary), checks.SUMMARY_MAX)
        self.assertEqual('refused by 4 of 12 lmcaps pre-checks: check_00, '
                         'check_03, check_06, check_09', summary)
        self.assertEqual(summary, report.details().splitlines()[0])
        self.assertEqual(5, len(report.details().splitlines()))

    def test_evaluation_crash_recorded_without_success_event(self):
        store = events.MemoryEventStore()
        runner = checks.PreCheckRunner(self.conf, checks=[])
        self.useFixture(fixtures.MockPatchObject(
            runner, 'evaluate', side_effect=RuntimeError('broke')))
        self.assertRaises(RuntimeError, runner.run, self.ctx(), store, 'r',
                          record_success=False)
        [ev] = store.list_events('inst-1')
        self.assertEqual((events.ERROR, 'broke'), (ev.result, ev.details))
        self.assertIn('RuntimeError: broke', ev.traceback)


class _Counting(base.PreCheck):
    """Passes or fails as told; counts its evaluations."""

    name = 'counting'

    def __init__(self, conf, passes):
        super().__init__(conf)
        self.passes = passes
        self.calls = 0

    def check(self, ctx):
        self.calls += 1
        return self.ok() if self.passes else self.fail('no')
