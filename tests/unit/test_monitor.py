"""Tests of the timeout monitor."""

import collections
import logging
import threading
import time

import ddt
import fixtures

from lmcaps import capabilities as caps
from lmcaps import events
from lmcaps import exception
from lmcaps import latch
from lmcaps import monitor
from lmcaps import policy
from lmcaps import registry
from lmcaps.drivers import base
from lmcaps.drivers import fake
from tests.unit import base as test_base

P = base.Phase
START = 1000.0


class ManualClock:
    """A monotonic clock that moves only when told."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class ScriptedDriver(base.LiveMigrationDriver):
    """A driver whose progress is scripted and whose calls are recorded.

    :param script: phases returned by successive get_progress calls; then
        :attr:`phase` is returned.  An exception in it is raised instead.
    :param reactions: phase to take after a successful action
        (``abort``, ``postcopy``, ``pause``, ``resume_source``).
    """

    name = 'scripted'

    def __init__(self, conf, clock, support=None, script=(), reactions=None,
                 errors=None, delay=0.0):
        super().__init__(conf)
        self.clock = clock
        self.support = support or {}
        self.script = collections.deque(script)
        self.phase = P.PRECOPY
        # By default each action takes effect, as on a working backend.
        self.reactions = {'abort': P.CANCELLED, 'postcopy': P.POSTCOPY,
                          'pause': P.PAUSED} if reactions is None else reactions
        self.errors = errors or {}
        self.delay = delay
        self.fields = {}        # more Progress fields for every reading
        self.calls = []
        self._lock = threading.Lock()
        self._inflight = collections.Counter()
        self.max_inflight = 0

    @classmethod
    def declare(cls):
        return caps.Declaration(
            cls.name, 'Scripted', {op: caps.complete() for op in
                                   caps.Operation})

    def _refine(self, declaration):
        return declaration.refine('test-host', **{
            op.value: caps.Capability(
                level, notes=f'{op.value} is {level.value}')
            for op, level in self.support.items()})

    def _start(self, spec):
        return base.Migration(spec=spec, data_gib=4.0, started_at=self.clock())

    def _call(self, migration, name):
        with self._lock:
            self.calls.append(name)
            self._inflight[migration.id] += 1
            self.max_inflight = max(self.max_inflight,
                                    self._inflight[migration.id])
        try:
            if self.delay:
                time.sleep(self.delay)
            if name in self.errors:
                raise self.errors[name]
            if name in self.reactions:
                self.phase = self.reactions[name]
        finally:
            with self._lock:
                self._inflight[migration.id] -= 1

    def count(self, name):
        return self.calls.count(name)

    def _progress(self, migration):
        self._call(migration, 'get_progress')
        step = self.script.popleft() if self.script else self.phase
        if isinstance(step, Exception):
            raise step
        return base.Progress(phase=step, **self.fields)

    def _locate(self, migration):
        self._call(migration, 'locate')
        host = (base.GuestHost.DESTINATION if self.phase in (
            P.COMPLETED, P.POSTCOPY) else base.GuestHost.SOURCE)
        return base.GuestLocation(host, base.RunState.RUNNING, 'scripted')

    def _abort(self, migration):
        self._call(migration, 'abort')

    def _force_complete(self, migration, mode):
        self._call(migration, mode.value)

    def _resume_source(self, migration):
        self._call(migration, 'resume_source')


class MonitorTestCase(test_base.ConfTestCase):

    def setUp(self):
        super().setUp()
        self.log = self.useFixture(fixtures.FakeLogger(
            name='lmcaps.monitor', level=logging.INFO))
        self.clock = ManualClock()
        self.store = events.MemoryEventStore()
        self.monitor = monitor.TimeoutMonitor(
            self.store, host='src', poll_interval=0.5, clock=self.clock)
        self.addCleanup(self.monitor.stop)

    def policy(self, data_gib=4.0, **request):
        layers = [(policy.REQUEST, request)] if request else []
        return policy.resolve(self.conf, data_gib, layers)

    def driver(self, **kwargs):
        return ScriptedDriver(self.conf, self.clock, **kwargs)

    def watch(self, driver, pol, instance='inst-1'):
        # Started ready for post-copy when the policy may switch to it.
        mode = policy.choose_mode(pol, driver.host_declaration())
        ready = (base.PREPARE_POSTCOPY if pol.timeout_action is
                 policy.TimeoutAction.FORCE_COMPLETE and
                 mode is caps.ForceCompleteMode.POSTCOPY else frozenset())
        migration = driver.start_migration(base.MigrationSpec(
            instance, 'dst', prepare_for=ready))
        return self.monitor.watch(driver, migration, pol,
                                  instance_uuid=instance, request_id='req-1')

    def at(self, elapsed):
        """Move the clock to ``elapsed`` seconds after START and run timers."""
        self.clock.now = START + elapsed
        self.monitor.run_pending()

    def events(self, name, instance='inst-1'):
        return [ev for ev in self.store.list_events(instance)
                if ev.event == name]


@ddt.ddt
class DeadlineTest(MonitorTestCase):

    def test_elapsed_equal_to_timeout_does_not_fire(self):
        driver = self.driver()
        self.watch(driver, self.policy(completion_timeout=30))
        self.at(29.999)
        self.at(30.0)
        self.assertEqual(0, driver.count('abort'))
        self.assertEqual([], self.events(events.TIMEOUT_ACTION))
        self.at(30.001)     # the re-check timer, before any poll
        self.assertEqual(1, driver.count('abort'))

    def test_deadline_is_a_timer_not_a_poll(self):
        driver = self.driver()
        self.monitor = monitor.TimeoutMonitor(
            self.store, poll_interval=3600, clock=self.clock)
        self.watch(driver, self.policy(completion_timeout=30))
        self.at(30.0005)
        self.assertEqual(1, driver.count('abort'))
        # the first poll (at the start) and one reading to see the effect
        self.assertEqual(2, driver.count('get_progress'))

    def test_predicted_end_is_read_then_the_interval_resumes(self):
        driver = self.driver()
        # 200 MiB left at a net 1000 MiB/s: the end is due in 0.2 s
        driver.fields = {'data_remaining': 200 * 2**20,
                         'transfer_rate': 2000 * 2**20,
                         'memory_dirty_rate': 1000 * 2**20}
        self.watch(driver, self.policy(completion_timeout=30))
        self.at(0.0)
        self.assertEqual(1, driver.count('get_progress'))
        self.at(0.25)   # before the regular reading at 0.5
        self.assertEqual(2, driver.count('get_progress'))
        # one early reading per interval: the next is a regular one
        self.at(0.6)
        self.assertEqual(2, driver.count('get_progress'))
        self.at(0.85)
        self.assertEqual(3, driver.count('get_progress'))
        self.at(1.1)    # early again, 0.2 s after a regular reading
        self.assertEqual(4, driver.count('get_progress'))

    def test_no_early_reading_when_not_converging(self):
        driver = self.driver()
        driver.fields = {'data_remaining': 10 * 2**20,
                         'transfer_rate': 1000 * 2**20,
                         'memory_dirty_rate': 1000 * 2**20}
        self.watch(driver, self.policy(completion_timeout=30))
        self.at(0.0)
        self.at(0.45)
        self.assertEqual(1, driver.count('get_progress'))
        self.at(0.5)
        self.assertEqual(2, driver.count('get_progress'))

    def test_fires_once_however_often_polled(self):
        # the cancel is accepted and slow: the migration stays cancelling
        driver = self.driver(reactions={'abort': P.CANCELLING})
        watch = self.watch(driver, self.policy(completion_timeout=10))
        for step in range(200):
            self.at(10 + step * 0.5)
        self.assertEqual(1, driver.count('abort'))
        self.assertGreater(driver.count('get_progress'), 150)
        [fired] = self.events(events.TIMEOUT_ACTION)
        self.assertEqual(events.SUCCESS, fired.result)
        self.assertFalse(watch.done)

    def test_ineffective_abort_is_retried_with_backoff(self):
        driver = self.driver(reactions={})   # accepted, never takes effect
        watch = self.watch(driver, self.policy(completion_timeout=10))
        for step in range(120):
            self.at(10 + step * 0.5)
        attempts = watch.attempts
        self.assertGreater(len(attempts), 3)
        self.assertEqual(len(attempts), driver.count('abort'))
        self.assertEqual({'abort'}, {a.action for a in attempts})
        gaps = [b.started - a.started for a, b in zip(attempts, attempts[1:])]
        self.assertTrue(all(g >= 5.0 for g in gaps), gaps)  # effect bound
        self.assertEqual(gaps, sorted(gaps))                # backoff grows
        evs = self.events(events.TIMEOUT_ACTION)
        self.assertTrue(all(e.result == events.ERROR for e in evs))
        self.assertIn('ineffective', evs[0].details)
        self.assertFalse(watch.done)
        driver.phase = P.COMPLETED
        self.at(100)
        outcome = watch.wait(0)
        self.assertEqual(('abort', P.COMPLETED), (outcome.action,
                                                  outcome.phase))

    @ddt.unpack
    @ddt.data((P.PRECOPY, 1), (P.PAUSED, 1), (P.POSTCOPY, 0))
    def test_phase_at_the_deadline(self, phase, aborts):
        driver = self.driver()
        watch = self.watch(driver, self.policy(completion_timeout=10))
        self.at(5)
        driver.phase = phase
        self.at(9.5)        # a reading sees it before the deadline
        self.at(10.5)
        self.at(60)
        self.assertEqual(aborts, driver.count('abort'))
        driver.phase = P.COMPLETED
        self.at(61)
        outcome = watch.wait(0)
        self.assertEqual('abort' if aborts else None, outcome.action)
        details = self.events(events.OUTCOME)[0].details
        self.assertEqual(not aborts, 'in post-copy: no action' in details)

    def test_never_fires_after_our_switch_to_postcopy(self):
        self.cfg.config(permit_post_copy=True, group='lmcaps')
        driver = self.driver(reactions={'postcopy': P.POSTCOPY})
        watch = self.watch(driver, self.policy(
            completion_timeout=10, timeout_action='force_complete'))
        for step in range(40):
            self.at(10 + step * 0.5)
        self.assertEqual(1, driver.count('postcopy'))
        self.assertEqual(0, driver.count('abort') + driver.count('pause'))
        driver.phase = P.COMPLETED
        self.at(40)
        outcome = watch.wait(0)
        self.assertEqual(
            (P.COMPLETED, 'postcopy', None, START + 10, START + 10.5, False,
             base.GuestLocation(base.GuestHost.DESTINATION,
                                base.RunState.RUNNING, 'scripted')),
            (outcome.phase, outcome.action, outcome.action_error,
             outcome.deadline, outcome.fired_at, outcome.resumed_source,
             outcome.location))
        [attempt] = outcome.attempts
        self.assertEqual(latch.Result.EFFECTIVE, attempt.result)
        self.assertEqual(events.SUCCESS,
                         self.events(events.OUTCOME)[0].result)

    def test_terminal_at_the_deadline_takes_no_action(self):
        driver = self.driver()
        driver.phase = P.COMPLETED
        watch = self.watch(driver, self.policy(completion_timeout=10))
        self.at(10.5)
        self.assertEqual(0, driver.count('abort'))
        self.assertIsNone(watch.wait(0).action)

    def test_no_timeout_never_fires(self):
        self.cfg.config(completion_timeout_per_gib=0, group='lmcaps')
        driver = self.driver()
        watch = self.watch(driver, self.policy())
        for elapsed in (1, 10, 1000, 10 ** 6):
            self.at(elapsed)
        self.assertEqual(0, driver.count('abort'))
        driver.phase = P.FAILED
        self.at(10 ** 6 + 1)
        outcome = watch.wait(0)
        self.assertIsNone(outcome.action)
        self.assertIsNone(outcome.deadline)
        self.assertEqual([], self.events(events.TIMEOUT_ACTION))
        self.assertEqual(events.ERROR, self.events(events.OUTCOME)[0].result)

    @ddt.unpack
    @ddt.data(({}, 40.0, 'config'),       # 10 s/GiB x 4 GiB
              ({'completion_timeout': 5}, 5.0, 'request'))
    def test_config_per_gib_or_per_instance(self, request, timeout, source):
        self.cfg.config(completion_timeout_per_gib=10, group='lmcaps')
        driver = self.driver()
        watch = self.watch(driver, self.policy(**request))
        self.at(timeout)
        self.assertEqual(0, driver.count('abort'))
        self.at(timeout + 0.01)
        self.assertEqual(1, driver.count('abort'))
        self.assertEqual(START + timeout, watch.policy.completion_timeout
                         + watch.migration.started_at)
        details = self.events(events.TIMEOUT_ACTION)[0].details
        self.assertIn(f'completion_timeout: {timeout:g} s', details)
        self.assertIn(f'completion_timeout={source}', details)
        self.assertIn('action: abort', details)


@ddt.ddt
class ActionTest(MonitorTestCase):

    @ddt.unpack
    @ddt.data(
        # permit, mode, postcopy support, pause support -> driver call
        (True, 'auto', 'complete', 'complete', 'postcopy'),
        (False, 'auto', 'complete', 'complete', 'pause'),
        (True, 'auto', 'missing', 'complete', 'pause'),
        (True, 'auto', 'partial', 'missing', 'postcopy'),
        # post-copy not permitted: the latch does not use it
        (False, 'postcopy', 'complete', 'complete', 'pause'),
        (True, 'pause', 'complete', 'complete', 'pause'),
    )
    def test_force_complete_mode(self, permit, mode, postcopy, pause, call):
        self.cfg.config(permit_post_copy=permit, group='lmcaps')
        driver = self.driver(support={
            caps.Operation.FORCE_COMPLETE_POSTCOPY: caps.Support(postcopy),
            caps.Operation.FORCE_COMPLETE_PAUSE: caps.Support(pause)})
        watch = self.watch(driver, self.policy(
            completion_timeout=1, timeout_action='force_complete',
            force_complete_mode=mode))
        self.at(2)
        self.assertEqual(1, driver.count(call))
        self.assertEqual(call, watch.attempts[0].action)

    def test_no_usable_force_complete_mode_is_recorded(self):
        driver = self.driver(support={
            caps.Operation.FORCE_COMPLETE_POSTCOPY: caps.Support.MISSING,
            caps.Operation.FORCE_COMPLETE_PAUSE: caps.Support.UNKNOWN})
        watch = self.watch(driver, self.policy(
            completion_timeout=1, timeout_action='force_complete'))
        self.at(2)
        self.at(3)
        self.assertEqual(0, driver.count('pause') + driver.count('postcopy'))
        driver.phase = P.COMPLETED
        self.at(4)
        self.assertEqual('force_complete', watch.wait(0).action)
        [ev] = self.events(events.TIMEOUT_ACTION)
        self.assertEqual(events.ERROR, ev.result)
        self.assertIn('neither post-copy nor pause', ev.details)

    @ddt.unpack
    @ddt.data(
        (exception.OperationRefused(driver='scripted', operation='abort',
                                    migration='m', reason='not now'),
         'not now', 'refused'),
        (RuntimeError('connection reset'), 'RuntimeError: connection reset',
         'failed'),
    )
    def test_failed_action_recorded_and_retried(self, error, reason,
                                                result):
        driver = self.driver(errors={'abort': error})
        watch = self.watch(driver, self.policy(completion_timeout=1))
        for step in range(40):
            self.at(1 + step * 0.5)
        calls = driver.count('abort')
        self.assertGreater(calls, 2)
        evs = self.events(events.TIMEOUT_ACTION)
        self.assertEqual(calls, len(evs))       # every attempt recorded
        self.assertEqual({events.ERROR}, {e.result for e in evs})
        self.assertIn(reason, evs[0].details)
        self.assertIn(f'result: {result}', evs[0].details)
        self.assertIn('retry in', evs[0].details)
        driver.errors.clear()                   # the backend recovers
        for step in range(20):
            self.at(21 + step * 0.5)
        self.assertEqual(calls + 1, driver.count('abort'))
        outcome = watch.wait(0)
        self.assertEqual((P.CANCELLED, 'abort', None),
                         (outcome.phase, outcome.action,
                          outcome.action_error))

    def test_abort_declared_missing_is_recorded(self):
        driver = self.driver(support={caps.Operation.ABORT:
                                      caps.Support.MISSING})
        self.watch(driver, self.policy(completion_timeout=1))
        self.at(2)
        self.at(3)
        self.assertEqual(0, driver.count('abort'))
        [ev] = self.events(events.TIMEOUT_ACTION)
        self.assertEqual(events.ERROR, ev.result)
        self.assertIn('does not support abort', ev.details)
        self.assertIn('no action', ev.details)

    @ddt.unpack
    @ddt.data((P.FAILED, 1), (P.CANCELLED, 1), (P.COMPLETED, 0))
    def test_pause_then_end(self, end, resumes):
        driver = self.driver(reactions={'pause': P.PAUSED})
        watch = self.watch(driver, self.policy(
            completion_timeout=1, timeout_action='force_complete',
            force_complete_mode='pause'))
        self.at(2)
        driver.phase = end
        for step in range(5):
            self.at(3 + step)
        self.assertEqual(resumes, driver.count('resume_source'))
        outcome = watch.wait(0)
        self.assertEqual(('pause', end, bool(resumes)),
                         (outcome.action, outcome.phase,
                          outcome.resumed_source))
        details = self.events(events.OUTCOME)[0].details
        self.assertIn('resumed_source: ' + ('yes' if resumes else 'no'),
                      details)

    def test_abort_is_not_followed_by_resume(self):
        driver = self.driver(reactions={'abort': P.CANCELLED})
        watch = self.watch(driver, self.policy(completion_timeout=1))
        self.at(2)
        self.at(3)
        self.assertEqual(0, driver.count('resume_source'))
        self.assertEqual(P.CANCELLED, watch.wait(0).phase)
        self.assertIn('guest: source (running)',
                      self.events(events.OUTCOME)[0].details)

    def test_get_progress_crash_is_retried_at_next_poll(self):
        driver = self.driver(script=[RuntimeError('boom')] * 3)
        self.watch(driver, self.policy(completion_timeout=1))
        self.at(1.5)        # deadline check crashes: no blind action
        self.assertEqual(0, driver.count('abort'))
        for step in range(4):
            self.at(2 + step * 0.5)
        self.assertEqual(1, driver.count('abort'))
        self.assertEqual(3, self.log.output.count('get_progress failed'))
        [blind, fired] = self.events(events.TIMEOUT_ACTION)
        self.assertEqual(events.ERROR, blind.result)
        self.assertIn('progress unavailable', blind.details)
        self.assertEqual(events.SUCCESS, fired.result)

    def test_post_copy_seen_once_latches_no_action(self):
        # a later reading that misses post-copy (e.g. a failed state call)
        # must not make the monitor abort or pause a post-copy migration
        driver = self.driver(script=[P.POSTCOPY])
        self.watch(driver, self.policy(completion_timeout=5))
        self.at(1)
        for step in range(20):
            self.at(5 + step * 0.5)
        self.assertEqual(0, driver.count('abort'))
        self.assertEqual([], self.events(events.TIMEOUT_ACTION))

    def test_no_resume_after_failure_in_post_copy(self):
        self.cfg.config(permit_post_copy=False, group='lmcaps')
        driver = self.driver(reactions={'pause': P.PAUSED})
        watch = self.watch(driver, self.policy(
            completion_timeout=5, timeout_action='force_complete'))
        self.at(5.5)
        self.assertEqual(1, driver.count('pause'))
        driver.script.extend([P.POSTCOPY])
        self.at(6)
        driver.phase = P.FAILED
        self.at(7)
        self.assertEqual(0, driver.count('resume_source'))
        outcome = watch.wait(0)
        self.assertFalse(outcome.resumed_source)
        # Where the guest is comes from the driver, never from the phase.
        self.assertEqual('scripted', outcome.location.detail)
        self.assertGreaterEqual(driver.count('locate'), 1)


class LifecycleTest(MonitorTestCase):

    def test_from_conf(self):
        self.cfg.config(monitor_poll_interval=0.25, monitor_workers=3,
                        host='cmp-7', group='lmcaps')
        mon = monitor.TimeoutMonitor.from_conf(self.conf, self.store)
        self.assertEqual((0.25, 3, 'cmp-7'),
                         (mon.poll_interval, mon.workers, mon.host))

    def test_watch_twice_is_refused(self):
        driver = self.driver()
        watch = self.watch(driver, self.policy())
        self.assertRaises(exception.MonitorError, self.monitor.watch, driver,
                          watch.migration, watch.policy, instance_uuid='i',
                          request_id='r')

    def test_stop_ends_watches_with_last_phase(self):
        driver = self.driver()
        watch = self.watch(driver, self.policy(completion_timeout=100))
        self.assertIsNone(watch.wait(0))
        self.at(1)
        self.monitor.stop()
        self.assertTrue(watch.done)
        self.assertEqual(P.PRECOPY, watch.wait(0).phase)
        self.assertFalse(watch.wait(0).ended)
        [ev] = self.store.list_events('inst-1')
        # not an outcome: "lmcaps watch" can take the migration over
        self.assertEqual((registry.UNENFORCED, events.ERROR),
                         (ev.event, ev.result))
        self.assertIn('lmcaps watch', ev.details)
        self.assertIn('guest: source (running): scripted', ev.details)
        self.assertRaises(exception.MonitorError, self.watch, driver,
                          self.policy())

    def test_run_pending_refused_when_started(self):
        with monitor.TimeoutMonitor(self.store) as mon:
            self.assertRaises(exception.MonitorError, mon.run_pending)


class ThreadedTest(MonitorTestCase):
    """The real scheduler thread and workers, on the real clock."""

    def setUp(self):
        super().setUp()
        self.cfg.config(permit_post_copy=True, group='lmcaps')
        self.monitor = monitor.TimeoutMonitor(self.store, host='src',
                                              poll_interval=0.02, workers=4)
        self.addCleanup(self.monitor.stop)
        self.monitor.start()
        self.fake = fake.FakeDriver(self.conf)
        self.cfg.config(dirty_rate_mib=2000.0, time_scale=10.0,
                        group='lmcaps_fake')

    def watch_fake(self, instance, postcopy=False, **request):
        migration = self.fake.start_migration(base.MigrationSpec(
            instance, 'dst',
            prepare_for=base.PREPARE_POSTCOPY if postcopy else frozenset()))
        return self.monitor.watch(self.fake, migration,
                                  self.policy(**request),
                                  instance_uuid=instance, request_id='req')

    def test_many_concurrent_migrations_each_fire_once(self):
        watches = [self.watch_fake(f'inst-{i}',
                                   completion_timeout=0.1 + i * 0.004)
                   for i in range(60)]
        outcomes = [w.wait(10) for w in watches]
        for i, (watch, outcome) in enumerate(zip(watches, outcomes)):
            self.assertEqual((P.CANCELLED, 'abort', None),
                             (outcome.phase, outcome.action,
                              outcome.action_error))
            self.assertGreater(outcome.fired_at, outcome.deadline)
            # generous: speed is measured by the benchmarks, not here
            self.assertLess(outcome.fired_at - outcome.deadline, 3.0)
            self.assertEqual(1, len(self.events(events.TIMEOUT_ACTION,
                                                f'inst-{i}')))
            self.assertEqual((fake.SOURCE, fake.RUNNING),
                             self.fake.guest_location(watch.migration).pair)

    def test_fake_postcopy_completes_on_destination(self):
        watch = self.watch_fake('inst-1', postcopy=True,
                                completion_timeout=0.05,
                                timeout_action='force_complete')
        outcome = watch.wait(10)
        self.assertEqual((P.COMPLETED, 'postcopy'),
                         (outcome.phase, outcome.action))
        self.assertEqual((fake.DESTINATION, fake.RUNNING),
                         self.fake.guest_location(watch.migration).pair)

    def test_fake_pause_then_failure_resumes_once(self):
        watch = self.watch_fake('inst-1', completion_timeout=0.05,
                                timeout_action='force_complete',
                                force_complete_mode='pause')
        deadline = time.monotonic() + 5
        while self.fake.get_progress(watch.migration).phase is not P.PAUSED:
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.005)
        self.fake.fail_migration(watch.migration, 'link down')
        outcome = watch.wait(10)
        self.assertEqual((P.FAILED, 'pause', True),
                         (outcome.phase, outcome.action,
                          outcome.resumed_source))
        self.assertEqual((fake.SOURCE, fake.RUNNING),
                         self.fake.guest_location(watch.migration).pair)

    def test_one_driver_call_at_a_time_per_migration(self):
        driver = ScriptedDriver(self.conf, time.monotonic, delay=0.03)
        crashing = ScriptedDriver(self.conf, time.monotonic,
                                  errors={'get_progress': RuntimeError('x')})
        watches = [self.watch(d, self.policy(completion_timeout=0.05),
                              instance=f'inst-{i}')
                   for i, d in enumerate((driver, crashing))]
        waited = time.monotonic() + 10
        while (crashing.count('get_progress') <= 3 or
               not driver.count('abort')) and time.monotonic() < waited:
            time.sleep(0.02)
        driver.phase = P.CANCELLED
        self.assertIsNotNone(watches[0].wait(5))
        # polls never overlap; the action lane may run beside one poll
        self.assertLessEqual(driver.max_inflight, 2)
        self.assertEqual(1, driver.count('abort'))
        # the crashing driver is polled on, not given up
        self.assertGreater(crashing.count('get_progress'), 3)
        self.assertFalse(watches[1].done)

    def test_hung_action_call_is_abandoned_by_its_watchdog(self):
        """An abort that never returns is timed out at driver_call_timeout
        on the scheduler's watchdog, the retry runs on another lane thread
        while the first call is still stuck, and the stuck call's late
        return changes nothing."""
        self.cfg.config(driver_call_timeout=0.3, group='lmcaps')
        release = threading.Event()
        threads = []

        class Hanging(ScriptedDriver):
            def _abort(self, migration):
                threads.append(threading.current_thread().name)
                if len(threads) == 1:
                    release.wait(10)        # the first call hangs
                super()._abort(migration)

        driver = Hanging(self.conf, time.monotonic)
        self.monitor.backoff = 0.05
        watch = self.watch(driver, self.policy(completion_timeout=0.05))
        outcome = watch.wait(10)
        stuck = [a for a in watch.attempts if a.result is latch.Result.TIMED_OUT]
        self.assertEqual(P.CANCELLED, outcome.phase)
        self.assertEqual(1, len(stuck), watch.attempts)
        self.assertIn('did not return within 0.3 s', stuck[0].error)
        self.assertGreaterEqual(stuck[0].returned - stuck[0].started, 0.3)
        self.assertIs(latch.Result.EFFECTIVE, watch.attempts[-1].result)
        self.assertEqual(2, len(threads))
        self.assertNotEqual(threads[0], threads[1])
        release.set()                   # the hung call returns: dropped
        deadline = time.monotonic() + 5
        while driver.count('abort') < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)
        self.assertEqual(2, len(watch.attempts))
        results = [e.details for e in self.events(events.TIMEOUT_ACTION,
                                                  'inst-1')]
        self.assertEqual(2, len(results), results)
        self.assertIn('timed out', results[0])

    def test_hung_readings_are_abandoned_by_the_poll_watchdog(self):
        """As many hung get_progress calls as poll threads: each is
        abandoned at driver_call_timeout (a blind reading, reported once
        past the deadline, no action fired blind), and another migration
        is still read, acted on and seen to end."""
        self.cfg.config(driver_call_timeout=0.2, group='lmcaps')
        release = threading.Event()
        self.addCleanup(release.set)

        class Hanging(ScriptedDriver):
            def _progress(self, migration):
                release.wait(10)
                return super()._progress(migration)

        hung = [self.watch(Hanging(self.conf, time.monotonic),
                           self.policy(completion_timeout=0.3),
                           instance=f'hung-{i}')
                for i in range(self.monitor.workers)]
        healthy = ScriptedDriver(self.conf, time.monotonic)
        watch = self.watch(healthy, self.policy(completion_timeout=0.3),
                           instance='ok')
        outcome = watch.wait(10)
        self.assertIsNotNone(outcome, 'a hung reading held the others')
        self.assertEqual((P.CANCELLED, 'abort'),
                         (outcome.phase, outcome.action))
        waited = time.monotonic() + 5
        while time.monotonic() < waited and not all(
                self.events(events.TIMEOUT_ACTION, f'hung-{i}')
                for i in range(len(hung))):
            time.sleep(0.02)
        for i, w in enumerate(hung):
            [blind] = self.events(events.TIMEOUT_ACTION, f'hung-{i}')
            self.assertEqual(events.ERROR, blind.result)
            self.assertIn('progress unavailable', blind.details)
            self.assertIn('get_progress did not return within 0.2 s',
                          blind.details)
            self.assertFalse(w.done)
            self.assertEqual([], w.attempts)

    def test_a_hung_effect_reading_is_abandoned_and_read_again(self):
        """The first reading of an accepted abort's effect hangs: the
        effect pool's watchdog abandons it at driver_call_timeout, the
        next effect reading sees the end, and the abort stays the one
        effective attempt."""
        self.cfg.config(driver_call_timeout=0.2, group='lmcaps')
        release = threading.Event()
        self.addCleanup(release.set)
        hung = []

        class HangsOnce(ScriptedDriver):
            def _progress(self, migration):
                name = threading.current_thread().name
                if self.count('abort') and not hung and \
                        name.startswith('lmcaps-effect'):
                    hung.append(name)
                    release.wait(10)
                return super()._progress(migration)

        driver = HangsOnce(self.conf, time.monotonic)
        self.monitor.poll_interval = 30.0   # the effect readings see it
        watch = self.watch(driver, self.policy(completion_timeout=0.05))
        outcome = watch.wait(10)
        self.assertEqual((P.CANCELLED, 'abort'),
                         (outcome.phase, outcome.action))
        self.assertEqual(1, driver.count('abort'))
        self.assertEqual([latch.Result.EFFECTIVE],
                         [a.result for a in watch.attempts])
        self.assertTrue(hung)
        self.assertIn('get_progress did not return within 0.2 s',
                      self.log.output)

    def test_a_burst_settles_its_results_after_every_call_entered(self):
        """Calls with one deadline are entered first; what each returned
        call means (latch, effect, event) is settled after the last one
        was entered, with the time each really returned."""
        watches, seen, exits = [], [], {}

        class Recording(fake.FakeDriver):
            def _abort(self, migration):
                seen.append(any(a.returned is not None
                                for w in watches for a in w.attempts))
                try:
                    super()._abort(migration)
                finally:
                    exits[migration.spec.instance] = time.monotonic()

        driver = Recording(self.conf)
        start = time.monotonic()
        for i in range(40):
            migration = driver.start_migration(base.MigrationSpec(
                f'inst-{i}', 'dst'))
            migration.started_at = start
            watches.append(self.monitor.watch(
                driver, migration, self.policy(completion_timeout=0.2),
                instance_uuid=f'inst-{i}', request_id='req'))
        outcomes = [w.wait(10) for w in watches]
        self.assertEqual(40, len(seen))
        self.assertEqual([False] * 40, seen)    # none settled in the burst
        for i, (watch, outcome) in enumerate(zip(watches, outcomes)):
            self.assertEqual(P.CANCELLED, outcome.phase)
            attempt, = watch.attempts
            self.assertIs(latch.Result.EFFECTIVE, attempt.result)
            self.assertGreaterEqual(attempt.returned, exits[f'inst-{i}'])
            self.assertEqual(1, len(self.events(events.TIMEOUT_ACTION,
                                                f'inst-{i}')))

    def test_stop_settles_results_a_burst_left_unsettled(self):
        """Results stashed during a burst get their events on stop, even
        when their settling task never ran."""
        held = []
        real = monitor.LANE.submit_many

        def submit_many(tasks):
            held.extend(t for t in tasks if t == self.monitor._settle_later)
            real([t for t in tasks if t != self.monitor._settle_later])

        self.useFixture(fixtures.MockPatchObject(
            monitor.LANE, 'submit_many', submit_many))
        driver = ScriptedDriver(self.conf, time.monotonic, errors={
            'abort': exception.OperationRefused(
                driver='scripted', operation='abort', migration='m',
                reason='busy')})
        start = time.monotonic()
        watches = []
        for i in range(5):
            migration = driver.start_migration(base.MigrationSpec(
                f'inst-{i}', 'dst'))
            migration.started_at = start
            watches.append(self.monitor.watch(
                driver, migration, self.policy(completion_timeout=0.1),
                instance_uuid=f'inst-{i}', request_id='req'))
        deadline = time.monotonic() + 5
        while driver.count('abort') < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertEqual(5, driver.count('abort'))
        self.assertTrue(held)       # at least the first four were stashed
        self.monitor.stop()
        refused = [e for i in range(5)
                   for e in self.events(events.TIMEOUT_ACTION, f'inst-{i}')
                   if 'refused' in e.details]
        self.assertGreaterEqual(len(refused), 4, refused)

    def test_readings_go_on_when_the_lane_never_starts_a_call(self):
        """Polls held for a burst's calls are released after HOLD_MAX even
        if the lane never starts them: the migration's end is still seen."""
        self.useFixture(fixtures.MockPatchObject(
            monitor.LANE, 'submit_many', lambda tasks: None))
        driver = ScriptedDriver(self.conf, time.monotonic)
        watch = self.watch(driver, self.policy(completion_timeout=0.05))
        deadline = time.monotonic() + 5
        while not watch.attempts and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertEqual(1, len(watch.attempts))     # begun, never entered
        driver.phase = P.COMPLETED
        outcome = watch.wait(5)
        self.assertIsNotNone(outcome, 'polls stayed held behind the lane')
        self.assertEqual(P.COMPLETED, outcome.phase)
        self.assertEqual(0, driver.count('abort'))
