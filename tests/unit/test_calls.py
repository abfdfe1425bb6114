"""The call helpers: the action lane and the watchdog bound."""

from __future__ import annotations

import threading
import time

import fixtures
import testtools

from lmcaps import exception
from lmcaps.drivers import calls


class LaneTest(testtools.TestCase):

    def lane(self, **kwargs):
        return calls.Lane('test-lane', **kwargs)

    def run_all(self, lane, tasks, timeout=10):
        done = threading.Semaphore(0)

        def wrap(task):
            def run():
                try:
                    task()
                finally:
                    done.release()
            return run

        lane.submit_many([wrap(t) for t in tasks])
        for _ in tasks:
            self.assertTrue(done.acquire(timeout=timeout))

    def test_tasks_that_compute_share_one_thread(self):
        lane = self.lane()
        seen = []

        def compute(i):
            end = time.thread_time() + 0.002
            while time.thread_time() < end:
                pass
            seen.append((i, threading.get_ident()))

        self.run_all(lane, [lambda i=i: compute(i) for i in range(50)])
        self.assertEqual(list(range(50)), sorted(i for i, _t in seen))
        # one thread, unless the OS took the CPU away from it for a period
        # (a loaded machine): never a thread per task
        self.assertLessEqual(len({t for _i, t in seen}), 4)

    def test_tasks_that_block_get_threads_beside_them(self):
        lane = self.lane(period=0.01)
        started = []

        def block():
            started.append(time.monotonic())
            time.sleep(0.3)

        begin = time.monotonic()
        self.run_all(lane, [block] * 40)
        # one thread would take 12 s; doubling every period runs them all
        # within a few periods of each other
        self.assertLess(max(started) - begin, 1.0)

    def test_a_hung_task_does_not_hold_the_others(self):
        lane = self.lane(period=0.01)
        release = threading.Event()
        self.addCleanup(release.set)
        ran = threading.Event()
        lane.submit_many([lambda: release.wait(10), ran.set])
        self.assertTrue(ran.wait(2), 'the task behind a hung one waited')

    def test_a_failing_task_is_logged_and_the_lane_goes_on(self):
        lane = self.lane()
        log = self.useFixture(fixtures.FakeLogger(
            name='lmcaps.drivers.calls'))
        ran = threading.Event()

        def fail():
            raise RuntimeError('boom')

        lane.submit_many([fail, ran.set])
        self.assertTrue(ran.wait(2))
        self.assertIn('test-lane task failed', log.output)


class WatchdogBoundTest(testtools.TestCase):

    def test_bounded_runs_on_the_caller_under_a_watchdog(self):
        here = threading.get_ident()
        self.assertNotEqual(here, calls.bounded(threading.get_ident, 5.0,
                                                'x', 'd'))
        with calls.watchdog_bound():
            self.assertEqual(here, calls.bounded(threading.get_ident, 5.0,
                                                 'x', 'd'))

    def test_only_the_outermost_call_runs_on_the_caller(self):
        here = threading.get_ident()

        def outer():
            return threading.get_ident(), calls.bounded(
                threading.get_ident, 5.0, 'inner', 'd')

        with calls.watchdog_bound():
            first, inner = calls.bounded(outer, 5.0, 'outer', 'd')
        self.assertEqual(here, first)
        self.assertNotEqual(here, inner)

    def test_without_the_watchdog_a_hung_call_is_abandoned(self):
        release = threading.Event()
        self.addCleanup(release.set)
        self.assertRaises(exception.DriverCallTimeout, calls.bounded,
                          lambda: release.wait(10), 0.05, 'hang', 'd')


class GreenLaneTest(testtools.TestCase):

    def test_lane_runs_under_eventlet_monkey_patching(self):
        """Under eventlet a thread id names a green thread: no CPU clock
        is asked for it (it is no pthread), and the lane still runs."""
        import subprocess
        import sys
        code = (
            'import eventlet; eventlet.monkey_patch()\n'
            'import threading, time\n'
            'from lmcaps.drivers import calls\n'
            'print(calls._cpu_clock(threading.get_ident()))\n'
            'lane = calls.Lane("green")\n'
            'done = threading.Event()\n'
            'lane.submit_many([lambda: time.sleep(0.05), done.set])\n'
            'print(done.wait(5))\n')
        out = subprocess.run([sys.executable, '-c', code], check=True,
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(['None', 'True'], out.stdout.split())
