"""The call helpers: the action lane, the watched poll pool and the
watchdog bound."""

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


class WatchedPoolTest(testtools.TestCase):

    def pool(self, threads=2, **kwargs):
        self.abandoned = []
        self.gone = threading.Event()
        self.log = self.useFixture(fixtures.FakeLogger(
            name='lmcaps.drivers.calls'))

        def on_abandon(item, error):
            self.abandoned.append((item, error))
            self.gone.set()

        pool = calls.WatchedPool('test-poll', threads, self.run_item,
                                 on_abandon)
        self.addCleanup(pool.shutdown)
        return pool

    def run_item(self, item):
        item()

    def test_a_task_s_first_bounded_call_runs_on_its_thread(self):
        seen = {}
        done = threading.Event()

        def task():
            seen['task'] = threading.get_ident()
            seen['first'], seen['nested'] = calls.bounded(
                lambda: (threading.get_ident(), calls.bounded(
                    threading.get_ident, 5.0, 'nested', 'd')), 5.0,
                'first', 'd')
            seen['second'] = calls.bounded(threading.get_ident, 5.0,
                                           'second', 'd')
            done.set()

        self.pool().submit([task])
        self.assertTrue(done.wait(5))
        self.assertEqual(seen['task'], seen['first'])
        # nested in the first, or after it: a thread of their own
        self.assertNotEqual(seen['task'], seen['nested'])
        self.assertNotEqual(seen['task'], seen['second'])

    def test_a_hung_call_is_abandoned_and_its_batch_goes_on(self):
        release = threading.Event()
        self.addCleanup(release.set)
        after, ran = [], []
        rest_done = threading.Event()

        def hang():
            calls.bounded(lambda: release.wait(10), 0.1, 'get_progress',
                          'fake')
            after.append('hang')        # never: the result is dropped

        def later(name):
            ran.append((name, threading.get_ident()))
            if len(ran) == 2:
                rest_done.set()

        hung_thread = []
        pool = self.pool(threads=1)
        pool.submit([lambda: (hung_thread.append(threading.get_ident()),
                              hang()),
                     lambda: later('a'), lambda: later('b')])
        self.assertTrue(self.gone.wait(5))
        self.assertTrue(rest_done.wait(5), 'the batch behind it waited')
        [(item, error)] = self.abandoned
        self.assertIsInstance(error, exception.DriverCallTimeout)
        self.assertIn('get_progress did not return within 0.1 s',
                      str(error))
        self.assertEqual(['a', 'b'], [n for n, _t in ran])
        self.assertNotIn(hung_thread[0], [t for _n, t in ran])
        release.set()
        for _ in range(100):
            if 'result dropped' in self.log.output:
                break
            time.sleep(0.02)
        self.assertIn('result dropped', self.log.output)
        self.assertEqual([], after)

    def test_hung_calls_never_hold_the_capacity(self):
        """Every thread hung: a new batch still runs (replacements)."""
        release = threading.Event()
        self.addCleanup(release.set)
        pool = self.pool(threads=2)
        for _ in range(2):
            pool.submit([lambda: calls.bounded(lambda: release.wait(10),
                                               0.05, 'hang', 'd')])
        ran = threading.Event()
        pool.submit([ran.set])
        self.assertTrue(ran.wait(5))
        for _ in range(100):
            if len(self.abandoned) == 2:
                break
            time.sleep(0.02)
        self.assertEqual(2, len(self.abandoned))

    def test_a_call_in_time_is_not_abandoned(self):
        done = threading.Event()
        pool = self.pool()
        pool.submit([lambda: calls.bounded(lambda: time.sleep(0.05), 0.5,
                                           'x', 'd'), done.set])
        self.assertTrue(done.wait(5))
        time.sleep(0.6)                 # past the bound the call had
        self.assertEqual([], self.abandoned)

    def test_shutdown_finishes_what_runs_and_drops_what_waits(self):
        pool = self.pool(threads=1)
        ran = []
        started = threading.Event()

        def slow():
            started.set()
            time.sleep(0.2)
            ran.append('slow')

        pool.submit([slow])
        pool.submit([lambda: ran.append('queued')])
        self.assertTrue(started.wait(5))
        pool.shutdown()
        self.assertEqual(['slow'], ran)
        self.assertRaises(RuntimeError, pool.submit, [lambda: None])

    def test_shutdown_waits_for_a_hung_call_only_until_its_bound(self):
        release = threading.Event()
        self.addCleanup(release.set)
        pool = self.pool(threads=1)
        started = threading.Event()
        pool.submit([lambda: (started.set(), calls.bounded(
            lambda: release.wait(10), 0.2, 'hang', 'd'))])
        self.assertTrue(started.wait(5))
        begin = time.monotonic()
        pool.shutdown()
        self.assertLess(time.monotonic() - begin, 5.0)
        self.assertEqual(1, len(self.abandoned))


class LaneSupervisorTest(testtools.TestCase):

    def test_one_supervisor_thread_however_many_submissions(self):
        """Submissions an idle thread takes wake no supervisor; those that
        wait wake the one supervisor thread (never a thread each)."""
        lane = calls.Lane('test-sup', period=0.01)
        for _ in range(30):
            done = threading.Event()
            lane.submit_many([done.set, lambda: time.sleep(0.02)])
            self.assertTrue(done.wait(5))
            time.sleep(0.03)
        names = [t.name for t in threading.enumerate()
                 if t.name.startswith('test-sup-supervisor')]
        self.assertEqual(['test-sup-supervisor'], names)


class ElasticWatchedPoolTest(WatchedPoolTest):

    def pool(self, threads=0, **kwargs):
        pool = super().pool(threads)
        pool.elastic = True
        pool.max_threads = getattr(self, 'max_threads', 1024)
        return pool

    def test_shutdown_finishes_what_runs_and_drops_what_waits(self):
        # at max_threads, a batch waits for a thread as without elasticity
        self.max_threads = 1
        super().test_shutdown_finishes_what_runs_and_drops_what_waits()

    def test_a_batch_never_waits_behind_another(self):
        pool = self.pool()
        release = threading.Event()
        self.addCleanup(release.set)
        for _ in range(5):
            pool.submit([lambda: release.wait(10)])    # slow, not hung
        ran = threading.Event()
        pool.submit([ran.set])
        self.assertTrue(ran.wait(2))

    def test_reserved_threads_are_reused(self):
        pool = self.pool()
        pool.reserve(4)
        seen = set()
        for _ in range(20):
            done = threading.Event()
            pool.submit([lambda: (seen.add(threading.get_ident()),
                                  done.set())])
            self.assertTrue(done.wait(5))
        self.assertLessEqual(len(seen), 4)


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
