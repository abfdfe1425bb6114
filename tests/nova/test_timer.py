"""lmcaps's timer inside nova's real monitor loop, on the real clock.

nova's ``_live_migration_monitor`` runs as in nova-compute (its own
``time.time`` and 0.5 s sleep) over nova's fake libvirt; the first job read
takes 0.25 s, so nova's passes fall at about 0.25 + 0.5 k s of its
``elapsed`` and a 1 s deadline lies half-way between two passes.  The
attempts are read from the latch (its clock is nova's ``elapsed``) and the
order of attempts and passes from the migration's state.

The class runs under eventlet (nova's test default: green threads) and, in
a child process, under native threads (``OS_NOVA_DISABLE_EVENTLET_PATCHING``)
as nova 34's nova-compute runs by default.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

from nova import utils as nova_utils

from lmcaps import latch as latch_mod
from tests.nova import base
from tests.nova import realtime

#: How late lmcaps's action may be, seconds (nova's pass: up to 0.5 s).
BOUND = 0.15
#: Where nova's passes fall (see the module docstring).
FIRST_DELAY = 0.25
NATIVE_ENV = 'OS_NOVA_DISABLE_EVENTLET_PATCHING'


def flavor(timeout: int, action: str, mode: str = 'auto') -> dict[str, str]:
    return {'lmcaps:completion_timeout': str(timeout),
            'lmcaps:timeout_action': action,
            'lmcaps:force_complete_mode': mode}


class TimerTest(base.NovaLmcapsTestCase):
    """Host-wide: 800 s/GiB (1600 s), abort, post-copy permitted."""

    def run_job(self, extra_specs: dict[str, str], status: str = 'running',
                **job_args: object) -> realtime.Job:
        inst = self.make_instance(extra_specs=extra_specs)
        job = realtime.Job(inst, first_delay=FIRST_DELAY, **job_args)
        with realtime.Runner(self.drvr, self.context) as runner:
            runner.run(job, status=status)
        self.saved = runner.saved
        if job.error is not None:
            raise job.error
        self.assertIsNotNone(job.state)
        return job

    def assert_fired_by_timer(self, job: realtime.Job, deadline: float,
                              n: int = 0) -> latch_mod.Attempt:
        """Attempt ``n`` was begun by the timer within BOUND of
        ``deadline`` and before nova's first pass past it."""
        state = job.state
        attempt = state.latch.attempts[n]
        self.assertEqual('timer', state.fired_by[n])
        self.assertGreater(attempt.started, deadline)
        self.assertLess(attempt.started, deadline + BOUND)
        later = [p for p in state.passes if p > deadline]
        self.assertTrue(later, state.passes)
        self.assertLess(attempt.started, later[0])
        return attempt

    def test_abort_fires_at_the_deadline_once(self):
        # the job goes on 1.5 s after the abort: three more passes of
        # nova's, none of which re-issues it
        job = self.run_job(flavor(1, 'abort'), end_after=1.5)
        self.assert_fired_by_timer(job, 1.0)
        self.assertEqual(1, len(job.times('abort')), job.calls)
        self.assertEqual([], job.times('postcopy') + job.times('pause'))
        # the call on the fake domain, on the clock of nova's start
        self.assertLess(job.times('abort')[0] - job.start, 1.0 + BOUND)
        self.assertEqual(latch_mod.Result.EFFECTIVE,
                         job.state.latch.attempts[0].result)

    def test_post_copy_switch_with_nova_bookkeeping(self):
        job = self.run_job(flavor(1, 'force_complete', 'postcopy'),
                           end_after=1.5)
        self.assert_fired_by_timer(job, 1.0)
        self.assertEqual(1, len(job.times('postcopy')), job.calls)
        state = job.state
        self.assertEqual('running (post-copy)', state.migration.status)
        # saved as nova's trigger_postcopy_switch does (here through a
        # Migration of the same id, from the timer's thread)
        self.assertIn((1, 'running (post-copy)'), self.saved)
        self.assertEqual(latch_mod.Result.EFFECTIVE,
                         state.latch.attempts[0].result)
        self.assertTrue(state.latch.seen_postcopy)

    def test_pause_queues_nova_unpause(self):
        job = self.run_job(flavor(1, 'force_complete', 'pause'),
                           end_after=1.0)
        self.assert_fired_by_timer(job, 1.0)
        self.assertEqual(1, len(job.times('pause')), job.calls)
        self.assertEqual([], job.times('postcopy'))
        # nova's on_migration_failure queue (run_recover_tasks unpauses)
        self.assertEqual(['unpause'], list(job.state.on_failure))
        self.assertEqual(latch_mod.Result.EFFECTIVE,
                         job.state.latch.attempts[0].result)

    def test_refused_then_retried_by_the_timer(self):
        job = self.run_job(flavor(1, 'abort'), refuse={'abort': 1},
                           end_after=1.0)
        first = self.assert_fired_by_timer(job, 1.0)
        self.assertEqual(latch_mod.Result.REFUSED, first.result)
        self.assertIn('abort refused', first.error)
        # retried after the backoff (0.5 s) — between two passes of nova's
        second = self.assert_fired_by_timer(
            job, first.returned + 0.5, n=1)
        self.assertEqual(latch_mod.Result.EFFECTIVE, second.result)
        self.assertEqual(2, len(job.times('abort')))

    def test_never_in_post_copy(self):
        inst = self.make_instance(extra_specs=flavor(1, 'abort'))
        job = realtime.Job(inst, first_delay=FIRST_DELAY)
        job.ends_at = time.time() + 2.0
        job.end_type = realtime.fakelibvirt.VIR_DOMAIN_JOB_COMPLETED
        with realtime.Runner(self.drvr, self.context) as runner:
            runner.run(job, status='running (post-copy)')
        self.assertIsNone(job.error)
        self.assertEqual([], job.calls)
        self.assertEqual([], job.state.latch.attempts)
        self.assertTrue([p for p in job.state.passes if p > 1.5])

    def test_timer_thread_follows_nova_concurrency_mode(self):
        job = self.run_job(flavor(1, 'abort'))
        timer = job.state.timer
        self.assertFalse(timer.alive)           # stopped when nova returned
        here = threading.get_native_id()
        if nova_utils.concurrency_mode_threading():
            self.assertNotEqual(here, timer.native_id)   # a native thread
        else:
            self.assertEqual(here, timer.native_id)      # a green thread

    def test_under_native_threads(self):
        if os.environ.get(NATIVE_ENV):
            self.assertTrue(nova_utils.concurrency_mode_threading())
            return
        self.assertFalse(nova_utils.concurrency_mode_threading())
        root = os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__))))
        # nova picks its mode at its first monkey_patch.patch(), before
        # anything imports eventlet (futurist would)
        code = ('import sys\n'
                'from nova import monkey_patch\n'
                'monkey_patch.patch()\n'
                'from testtools import run\n'
                f'run.main(["testtools.run", "{__name__}.TimerTest"], '
                'sys.stdout)\n')
        proc = subprocess.run(
            [sys.executable, '-c', code],
            cwd=root, env={**os.environ, NATIVE_ENV: '1'},
            capture_output=True, text=True, timeout=300)
        self.assertEqual(0, proc.returncode, proc.stdout + proc.stderr)
        self.assertIn('OK', proc.stdout + proc.stderr)
