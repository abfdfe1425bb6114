"""The timeout monitor: one effective timeout action per migration.

One scheduler thread keeps a heap of timers.  Each watched migration has a
poll timer (to notice progress and its end; polls are batched by tick and
run in a small pool of workers) and an action timer (its deadline, then
retries and effect checks).  Actions have their own lane
(:class:`lmcaps.drivers.calls.Lane`): due calls are taken in order by one
thread, and more threads start while calls block, so a deadline never
queues behind polls, event writes or another migration's hung call; polls
and effect readings due meanwhile wait until every call handed to the
lane was entered, and so does what each returned call means (the latch,
its event, its effect reading).  Every driver call
is bounded by ``[lmcaps] driver_call_timeout``: polls by the poll pool's
watchdog and effect readings by the effect pool's (the call runs on the
reading's thread, :class:`lmcaps.drivers.calls.WatchedPool`; effect
readings may take seconds, libvirt's can block 2 s, so each has a thread
of its own, off the action lane), action calls by a watchdog timer (the
call runs on its lane thread, :func:`lmcaps.drivers.calls.watchdog_bound`);
a hung call is abandoned and recorded, its thread replaced, and the action
retried or escalated (:mod:`lmcaps.latch`).
Events go through a bounded queue to one writer (:mod:`lmcaps.eventqueue`)
and are flushed on stop.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import functools
import gc
import heapq
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator

from oslo_config import cfg

from lmcaps import conf as lmcaps_conf
from lmcaps import eventqueue
from lmcaps import events
from lmcaps import exception
from lmcaps import latch as latch_mod
from lmcaps import policy as lmcaps_policy
from lmcaps import registry
from lmcaps.drivers import base
from lmcaps.drivers import calls
from lmcaps.watch import Outcome  # noqa: F401 (part of this API)
from lmcaps.watch import State
from lmcaps.watch import Watch

LOG = logging.getLogger(__name__)

ABORT = latch_mod.ABORT
POSTCOPY = latch_mod.POSTCOPY
PAUSE = latch_mod.PAUSE
#: Outcome.action when force_complete had no usable mode on this host.
FORCE_COMPLETE = 'force_complete'

#: Largest granularity of poll timers, in seconds.
MAX_TICK = 0.02
#: Delay before re-checking a deadline reached exactly (elapsed == timeout).
RECHECK = 0.001
#: Fewest migrations a poll batch carries before using another worker.
MIN_BATCH = 8
#: Most threads kept ready for a burst of readings.
RESERVED_THREADS = 512
#: The action lane: each task makes one action's call, bounded by its
#: watchdog; one thread takes them in order, more start while calls block
#: (:class:`lmcaps.drivers.calls.Lane`).
LANE = calls.Lane('lmcaps-action')
#: Longest wait, in seconds, of polls and effect readings held while a
#: burst's action calls are queued on the lane (2,000 start in ~0.1 s).
HOLD_MAX = 0.25
#: Seconds to the second effect reading after an accepted action (the
#: first is at once); the delay doubles after each reading up to the poll
#: interval.  Readings are timers, not sleeps, so thousands of accepted
#: actions never hold thousands of threads, and they run on the effect
#: pool's threads, so slow polls filling the poll threads never delay them.
EFFECT_POLL = 0.02

_GOLDEN = (math.sqrt(5) - 1) / 2
R = latch_mod.Result


@contextlib.contextmanager
def settled_heap() -> Iterator[None]:
    """Keep what the process allocated so far out of the garbage
    collector's passes while the block runs: ``gc.collect()`` and
    ``gc.freeze()`` on entry, ``gc.unfreeze()`` on exit.

    lmcaps's own commands (``migrate``, ``watch``, ``drain``) run their
    migrations in it, after loading their configuration, driver and event
    store: a full collection then scans only what was allocated since,
    instead of every object of the client libraries and SQLAlchemy.  Such
    a pass stops every thread, deadlines included: 30–70 ms at a deadline
    without it, in ``python -m benchmarks.bench_enforcement``.  The nova
    embedding does not use it (it leaves nova-compute's collector alone).

    Source: https://docs.python.org/3/library/gc.html#gc.freeze
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _predicted_end(progress: base.Progress | None) -> float | None:
    """Seconds until a pre-copy reading predicts the migration ends, or
    None where it says too little (no rate, not converging, other phase)."""
    if progress is None or progress.phase is not base.Phase.PRECOPY:
        return None
    remaining, rate = progress.data_remaining, progress.transfer_rate
    if remaining is None or not rate:
        return None
    net = rate - (progress.memory_dirty_rate or 0)
    if net <= 0:
        return None
    return remaining / net


class _Timer(enum.IntEnum):
    ACTION = 0
    POLL = 1
    EFFECT = 2      # read an accepted action's effect (the effect pool)
    WATCHDOG = 3    # an action call's bound (driver_call_timeout)


def _finite(name: str, value: float, low: float, high: float) -> float:
    value = float(value)
    if not (math.isfinite(value) and low <= value <= high):
        raise exception.MonitorError(
            reason=f'{name} = {value!r} is not allowed; allowed: a finite '
                   f'number from {low:g} to {high:g}')
    return value


class TimeoutMonitor:
    """Carries out completion timeouts and their actions for many migrations.

    :param store: where TIMEOUT_ACTION and OUTCOME events are recorded.
    :param host: the host name recorded in events.
    :param poll_interval: seconds between two progress polls of a migration.
    :param workers: threads polling migrations, shared by all.
    :param clock: monotonic clock; must be the clock of
        ``Migration.started_at``.
    :param attempts_per_step, backoff, backoff_max, effect_timeout,
        escalate: the latch's retry and escalation (:mod:`lmcaps.latch`).
    :raises: MonitorError for a value out of range (before anything runs).
    """

    def __init__(self, store: events.EventStore, *, host: str | None = None,
                 poll_interval: float = 0.5, workers: int = 8,
                 clock: Callable[[], float] = time.monotonic,
                 attempts_per_step: int = 3, backoff: float = 0.5,
                 backoff_max: float = 8.0, effect_timeout: float = 5.0,
                 escalate: bool = True) -> None:
        self.poll_interval = _finite('monitor_poll_interval', poll_interval,
                                     0.001, 3600)
        if not 1 <= int(workers) <= 1024:
            raise exception.MonitorError(
                reason=f'monitor_workers = {workers!r} is not allowed; '
                       f'allowed: 1 to 1024')
        self.workers = int(workers)
        self.backoff = _finite('timeout_action_backoff', backoff, 0.0, 3600)
        self.backoff_max = _finite('timeout_action_backoff_max',
                                   max(backoff, backoff_max), 0.0, 86400)
        self.effect_timeout = _finite('timeout_action_effect_timeout',
                                      effect_timeout, 0.0, 3600)
        self.attempts_per_step = max(1, int(attempts_per_step))
        self.escalate = escalate
        self.store = store
        self.host = host
        self.queue = eventqueue.EventQueue(store)
        self._clock = clock
        self._tick = min(MAX_TICK, self.poll_interval / 5)
        self._lock = threading.Lock()      # the state below; _cond's lock
        self._cond = threading.Condition(self._lock)
        self._heap: list[tuple[float, int, _Timer, State]] = []
        self._effects: list[State] = []     # effect readings due (lock)
        self._polls: list[State] = []       # polls due (lock)
        self._watchdogs: list[State] = []   # call bounds due (lock)
        self._calls_waiting = 0   # action calls queued, not yet entered
        #: calls that returned while others waited (lock): settled after
        self._settling: collections.deque[
            tuple[State, latch_mod.Attempt, tuple[R, str, bool] | None,
                  float]] = collections.deque()
        self._settle_queued = False
        self._waiting_since = 0.0     # when the first of them was queued
        self._dead = 0
        self._seq = itertools.count()
        self._stagger = itertools.count()
        self._states: dict[str, State] = {}
        self._thread: threading.Thread | None = None
        self._pollers: calls.WatchedPool | None = None
        self._effect_pool: calls.WatchedPool | None = None
        self._stopped = False

    @classmethod
    def from_conf(cls, conf: cfg.ConfigOpts,
                  store: events.EventStore) -> TimeoutMonitor:
        """A monitor configured from ``[lmcaps]``, every value checked.

        :raises: MonitorError naming the option and its allowed values.
        """
        g = conf[lmcaps_conf.GROUP]
        _finite('driver_call_timeout', g.driver_call_timeout, 0.1, 3600)
        return cls(store, host=g.host, poll_interval=g.monitor_poll_interval,
                   workers=g.monitor_workers,
                   attempts_per_step=g.timeout_action_attempts,
                   backoff=g.timeout_action_backoff,
                   backoff_max=g.timeout_action_backoff_max,
                   effect_timeout=g.timeout_action_effect_timeout,
                   escalate=g.timeout_action_escalation)

    # -- life cycle -------------------------------------------------------

    def start(self) -> None:
        """Start the scheduler, the poll workers, the event writer."""
        with self._lock:
            if self._stopped:
                raise exception.MonitorError(reason='the monitor was stopped')
            if self._thread is not None:
                return
            self.queue.start()
            self._pollers = calls.WatchedPool(
                'lmcaps-poll', self.workers, self._poll_one,
                self._poll_abandoned)
            self._effect_pool = calls.WatchedPool(
                'lmcaps-effect', 0, self._read_effect,
                self._effect_abandoned, elastic=True)
            self._thread = threading.Thread(
                target=self._run, name='lmcaps-monitor-timers', daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop; unfinished watches end as no longer enforced here.

        Their persisted watch stays open, so ``lmcaps watch`` can take
        them over; queued events are flushed.
        """
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            self._cond.notify_all()
            thread, pollers = self._thread, self._pollers
            effect_pool = self._effect_pool
        if thread is not None:
            thread.join()
        if pollers is not None:
            pollers.shutdown()
        if effect_pool is not None:
            effect_pool.shutdown(wait=False)    # its threads end when idle
        self._settle_later()    # results returned during a burst: events
        with self._lock:
            pending = list(self._states.values())
            self._states.clear()
            self._heap.clear()
        for st in pending:
            phase = st.phase or base.Phase.PREPARING
            where = st.driver.guest_location(st.migration)
            LOG.warning('Monitor stopped before migration %s of instance %s '
                        'ended (%s); not enforced by this process any more',
                        st.migration.id, st.instance_uuid, phase.value)
            self._record(st, registry.UNENFORCED, events.ERROR,
                         events.details_text({
                             'phase': phase.value, 'guest': str(where),
                             'timeout_action': self._action_word(st),
                             'monitor': 'stopped before the migration ended;'
                                        ' "lmcaps watch" takes it over'}))
            self._set_outcome(st, phase, False, where, '', ended=False)
        self.queue.close()

    def __enter__(self) -> TimeoutMonitor:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- watching ---------------------------------------------------------

    def watch(self, driver: base.LiveMigrationDriver,
              migration: base.Migration,
              policy: lmcaps_policy.EffectivePolicy, *,
              instance_uuid: str, request_id: str,
              persist: bool = False,
              on_done: Callable[[], None] | None = None) -> Watch:
        """Watch ``migration`` until it ends, enforcing ``policy``.

        :param persist: record the watch (reference, deadline, policy) so
            that ``lmcaps watch`` can re-attach if this process dies.
        :param on_done: called without arguments on a monitor thread once
            the outcome is known (its events may still be queued:
            :meth:`Watch.wait` waits for them); it must not block.
        :raises: MonitorError if stopped, watched already, or the deadline
            is out of range.
        """
        timeout = policy.completion_timeout
        deadline = None if timeout is None else migration.started_at + timeout
        if deadline is not None and not math.isfinite(deadline):
            raise exception.MonitorError(
                reason=f'completion_timeout {timeout!r} is out of range')
        declaration = driver.host_declaration()
        steps = latch_mod.chain(policy, declaration,
                                prepared_postcopy=migration.spec.postcopy,
                                escalate=self.escalate)
        latch = latch_mod.ActionLatch(
            steps, deadline, attempts_per_step=self.attempts_per_step,
            backoff=self.backoff, backoff_max=self.backoff_max,
            effect_timeout=self.effect_timeout, clock=self._clock)
        st = State(driver=driver, migration=migration, policy=policy,
                   instance_uuid=instance_uuid, request_id=request_id,
                   deadline=deadline, latch=latch, on_done=on_done)
        with self._lock:
            if self._stopped:
                raise exception.MonitorError(reason='the monitor is stopped')
            if migration.id in self._states:
                raise exception.MonitorError(
                    reason=f'migration {migration.id} is already watched')
            self._states[migration.id] = st
            watched = len(self._states)
        if persist:     # queued before any reading can queue the outcome
            self._record(st, registry.WATCH, events.SUCCESS,
                         registry.watch_details(driver, migration, policy,
                                                self.host))
        # threads for effect readings and their bounded calls, started now
        reserve = min(watched + 8, RESERVED_THREADS)
        if self._effect_pool is not None:
            self._effect_pool.reserve(reserve)
        calls.CALLS.reserve(reserve)
        with self._lock:
            offset = (next(self._stagger) * _GOLDEN) % 1.0
            self._push(st, _Timer.POLL,
                       self._clock() + offset * self.poll_interval)
            if deadline is not None:
                self._push(st, _Timer.ACTION, deadline)
        return Watch(st, self.queue)

    def interrupt(self, watch: Watch, reason: str) -> str | None:
        """Abort now (unless in post-copy), as a recorded action.

        :param reason: what interrupted (``SIGTERM``), for the event.
        :returns: None when the abort is under way (or the migration has
            ended); else why the migration goes on, as words that follow
            "interrupted": ``in post-copy``, or that the driver cannot
            abort on this host (its declaration's notes).
        """
        st = watch._state
        if st.finished.is_set():
            return None
        if st.seen_postcopy or st.phase is base.Phase.POSTCOPY:
            return 'in post-copy'
        decl = st.driver.host_declaration()
        op = latch_mod._OPERATION[ABORT]
        if not decl.support(op).usable:
            return (f'and driver {decl.driver} cannot abort here '
                    f'({decl[op].notes or decl.support(op).value})')
        st.interrupted = reason
        with self._lock:
            st.latch.deadline = None       # act now, whatever the deadline
            st.latch.steps = [ABORT]
            st.latch.next_at = self._clock()
            self._push(st, _Timer.ACTION, self._clock())
        return None

    def run_pending(self) -> int:
        """Run the timers due now on the calling thread; returns how many.

        For tests with an injected clock, or a host driving its own loop;
        only on a monitor that was not started.
        """
        if self._thread is not None:
            raise exception.MonitorError(
                reason='run_pending() is for a monitor that is not started')
        count = 0
        while True:
            with self._lock:
                actions, polls = self._pop_due(self._clock())
            if not actions and not polls:
                return count
            for st in polls:        # readings first, as a host loop would
                self._poll_batch([st])
            for st in actions:
                self._act(st, inline=True)
            count += len(actions) + len(polls)

    # -- timers (call under the lock) --------------------------------------

    def _push(self, st: State, kind: _Timer, when: float) -> None:
        if st.finished.is_set():
            return
        if kind is _Timer.POLL:     # polls are batched by tick
            when = st.poll_at = math.ceil(when / self._tick) * self._tick
        elif kind is _Timer.EFFECT:
            if st.effect_at is not None and st.effect_at <= when:
                return
            st.effect_at = when
        elif kind is _Timer.WATCHDOG:
            st.watchdog_at = when
        else:
            if st.action_at is not None and st.action_at <= when:
                return              # an earlier action timer will do
            st.action_at = when
        earliest = not self._heap or when < self._heap[0][0]
        heapq.heappush(self._heap, (when, next(self._seq), kind, st))
        if earliest:
            self._cond.notify()

    def _pop_due(self, now: float) -> tuple[list[State], list[State]]:
        actions: dict[State, None] = {}
        polls: dict[State, None] = {}
        while self._heap and self._heap[0][0] <= now:
            when, _seq, kind, st = heapq.heappop(self._heap)
            if st.finished.is_set():
                self._dead = max(0, self._dead - 1)
                continue
            if kind is _Timer.EFFECT:
                if st.effect_at == when:
                    st.effect_at = None
                    self._effects.append(st)
                continue
            if kind is _Timer.WATCHDOG:
                if st.watchdog_at == when:
                    st.watchdog_at = None
                    self._watchdogs.append(st)
                continue
            if kind is _Timer.POLL:
                if st.poll_at != when:
                    continue
                st.poll_at = None
                if st.polling:
                    continue
                st.polling = True
                polls[st] = None
            else:
                if st.action_at != when:
                    continue
                st.action_at = None
                if not st.acting:
                    st.acting = True
                    actions[st] = None
        return list(actions), list(polls)

    def _forget(self, st: State) -> None:
        """A finished migration leaves the heap (compacted when half dead)."""
        self._dead += ((st.poll_at is not None) + (st.action_at is not None)
                       + (st.effect_at is not None) +
                       (st.watchdog_at is not None))
        st.poll_at = st.action_at = st.effect_at = st.watchdog_at = None
        if self._dead > 64 and self._dead * 2 > len(self._heap):
            self._heap = [e for e in self._heap if not e[3].finished.is_set()]
            heapq.heapify(self._heap)
            self._dead = 0

    # -- scheduler --------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                with self._lock:
                    while True:
                        if self._stopped:
                            return
                        now = self._clock()
                        actions, polls = self._pop_due(now)
                        self._polls.extend(polls)
                        held = bool(self._polls or self._effects)
                        release = self._release_at()
                        if actions or self._watchdogs or (
                                held and release <= now):
                            break
                        wait = (min(60.0, self._heap[0][0] - now)
                                if self._heap else None)
                        if held:
                            wait = min(wait or 60.0, release - now)
                        self._cond.wait(wait)
                self._fire_watchdogs()
                self._act_all(actions)   # begun here; calls on their lane
                self._dispatch_polls()
                self._dispatch_effects()
            except Exception:  # never let the scheduler die
                LOG.exception('Timeout monitor scheduler error')
                time.sleep(self._tick)

    def _release_at(self) -> float:
        """When readings held for a burst's calls may go (under the lock):
        now if no call waits, else :data:`HOLD_MAX` after the first was
        queued (a lane that cannot start its calls never stops the
        readings)."""
        if self._calls_waiting <= 0:
            return -math.inf
        return self._waiting_since + HOLD_MAX

    def _dispatch_polls(self) -> None:
        """Due polls go to the poll workers once every action call handed
        to the lane was entered, or HOLD_MAX after the first was queued: a
        burst of deadlines goes first (the readings' CPU would delay the
        calls' entry); held polls stay popped, so they cost nothing
        meanwhile."""
        with self._lock:
            if not self._polls or self._release_at() > self._clock():
                return
            polls, self._polls = self._polls, []
        chunks = min(self.workers, math.ceil(len(polls) / MIN_BATCH))
        size = math.ceil(len(polls) / chunks)
        for i in range(0, len(polls), size):
            batch = polls[i:i + size]
            try:
                assert self._pollers is not None
                self._pollers.submit(batch)
            except RuntimeError:  # shut down: stop() ends these watches
                return

    def _dispatch_effects(self) -> None:
        """Effect readings go to their own threads, after any action call
        still waiting to be entered (held until then, like polls)."""
        with self._lock:
            if not self._effects or self._release_at() > self._clock():
                return
            due, self._effects = self._effects, []
        assert self._effect_pool is not None
        for st in due:
            try:
                self._effect_pool.submit([st])
            except RuntimeError:  # shut down: stop() ends these watches
                return

    # -- reading ----------------------------------------------------------

    def _read_effect(self, st: State) -> None:
        """One reading of an accepted action's effect, on a thread of its
        own (the effect pool, whose watchdog bounds the call there): never
        queued behind the polls (slow ``get_progress`` calls keep the poll
        threads busy), and never a sleep on that thread — the next reading
        is a timer, sooner at first (EFFECT_POLL, doubling up to the poll
        interval) until the effect shows or its bound passed.
        """
        try:
            if st.finished.is_set() or self._stopped or \
                    not st.latch.awaiting_effect():
                return
            self._after_effect_reading(st, self._read(st))
        except calls.Abandoned:
            raise           # _effect_abandoned did the rest
        except Exception:
            LOG.exception('Timeout monitor failed reading the effect on '
                          'migration %s', st.migration.id)

    def _effect_abandoned(self, st: State, error: Exception) -> None:
        """The effect pool's watchdog abandoned ``st``'s reading."""
        try:
            self._read_failed(st, error)
            self._after_effect_reading(st, None)
        except Exception:
            LOG.exception('Timeout monitor failed reading the effect on '
                          'migration %s', st.migration.id)

    def _after_effect_reading(self, st: State,
                              progress: base.Progress | None) -> None:
        if progress is not None and progress.phase.terminal:
            self._conclude(st, progress)
            return
        expired = st.latch.expire()
        if expired is not None:
            self._attempt_event(st, expired)
            self._rearm(st)
            return
        if st.latch.awaiting_effect():
            with self._lock:
                st.effect_wait = min(self.poll_interval, max(
                    EFFECT_POLL, st.effect_wait * 2))
                if not self._stopped:     # on a poll tick: no wake more
                    self._push(st, _Timer.EFFECT, math.ceil(
                        (self._clock() + st.effect_wait) / self._tick) *
                        self._tick)
        else:
            self._rearm(st)

    def _read(self, st: State) -> base.Progress | None:
        """One bounded reading; None (blind) when it failed.

        On a poll thread the call runs there, bounded by the poll pool's
        watchdog (:class:`lmcaps.drivers.calls.WatchedPool`; an abandoned
        call ends in :meth:`_poll_abandoned`); elsewhere on a call thread.
        """
        try:
            progress = base.bounded(
                lambda: st.driver.get_progress(st.migration),
                st.driver.call_timeout, 'get_progress', st.driver.name)
        except Exception as exc:
            self._read_failed(st, exc)
            return None
        st.blind_since = None
        with st.observing:      # a concurrent reading concludes after
            st.progress, st.read_at = progress, self._clock()
            effective = st.latch.observe(progress.phase)
            if effective is not None:
                self._effective(st, effective)
        return progress

    def _read_failed(self, st: State, exc: Exception) -> None:
        LOG.warning('get_progress failed for migration %s: %s',
                    st.migration.id, exc)
        self._blind(st, exc)

    def _poll_batch(self, batch: list[State]) -> None:
        for st in batch:
            self._poll_one(st)

    def _poll_one(self, st: State) -> None:
        """Read one migration, then time its next poll."""
        try:
            progress = self._read(st)
            if progress is not None and progress.phase.terminal:
                self._conclude(st, progress)
            else:
                self._after_poll(st)
        except calls.Abandoned:
            raise           # _poll_abandoned did the rest
        except Exception:
            LOG.exception('Timeout monitor failed on migration %s',
                          st.migration.id)
        self._polled(st)

    def _poll_abandoned(self, st: State, error: Exception) -> None:
        """The poll pool's watchdog abandoned ``st``'s reading (on the
        watchdog thread): a failed reading, then the next poll."""
        try:
            self._read_failed(st, error)
            self._after_poll(st)
        except Exception:
            LOG.exception('Timeout monitor failed on migration %s',
                          st.migration.id)
        self._polled(st)

    def _polled(self, st: State) -> None:
        with self._lock:
            st.polling = False
            if not st.finished.is_set() and not self._stopped and \
                    st.poll_at is None:
                self._push(st, _Timer.POLL,
                           self._clock() + self._next_poll(st))

    def _next_poll(self, st: State) -> float:
        """Seconds to the next reading (effects have their own timers).

        The poll interval, or sooner where the last reading predicts the
        end before then: ``data_remaining / (transfer_rate -
        memory_dirty_rate)``, read at that moment so an end is seen (and a
        drain's slot freed) without waiting out the interval.  At most one
        such early reading follows a regular one, so a migration whose
        prediction keeps moving (a new pre-copy iteration) is never read
        more than twice per interval.
        """
        early, st.early_poll = st.early_poll, False
        eta = None if early else _predicted_end(st.progress)
        if eta is not None and eta < self.poll_interval:
            st.early_poll = True
            return max(self._tick, eta)
        return self.poll_interval

    def _after_poll(self, st: State) -> None:
        """Keep the action timer armed while something is due or pending."""
        expired = st.latch.expire()
        if expired is not None:
            self._attempt_event(st, expired)
        self._rearm(st)
        self._note_postcopy(st)

    def _rearm(self, st: State) -> None:
        with self._lock:
            if st.latch.done or self._stopped:
                return
            pending = [a for a in st.latch.attempts
                       if a.result is R.PENDING and a.returned is not None]
            returned = pending[-1].returned if pending else None
            if returned is not None:
                self._push(st, _Timer.ACTION,
                           returned + self.effect_timeout + RECHECK)
            elif st.latch.next_at is not None:
                when = st.latch.next_at
                if st.latch.deadline is not None:
                    when = max(when, st.latch.deadline + RECHECK)
                self._push(st, _Timer.ACTION, when)

    def _blind(self, st: State, exc: Exception) -> None:
        """Past the deadline without progress: say so once, never act blind."""
        now = self._clock()
        if st.blind_since is None:
            st.blind_since = now
        if (st.latch.done or st.blind_reported or st.deadline is None or
                now <= st.deadline):
            return
        st.blind_reported = True
        self._record(st, events.TIMEOUT_ACTION, events.ERROR,
                     events.details_text({
                         'action': 'none yet',
                         'error': f'timeout reached but progress unavailable '
                                  f'for {now - st.blind_since:.1f} s: '
                                  f'{type(exc).__name__}: {exc}; the action '
                                  f'fires once progress is readable again'}))

    def _note_postcopy(self, st: State) -> None:
        if (st.seen_postcopy and not st.skipped_reported and
                st.latch.effective is None and st.deadline is not None and
                self._clock() > st.deadline):
            st.skipped_reported = True
            LOG.info('Migration %s of instance %s reached its timeout in '
                     'post-copy; no action', st.migration.id,
                     st.instance_uuid)

    # -- the action lane --------------------------------------------------

    def _act(self, st: State, inline: bool = False) -> None:
        """Fire one due action (see :meth:`_act_all`)."""
        if inline:
            try:
                attempt = self._begin(st)
                if attempt is not None:
                    self._call(st, attempt, inline=True)
            except Exception:
                LOG.exception('Timeout action failed on migration %s',
                              st.migration.id)
            finally:
                self._done_acting(st)
        else:
            self._act_all([st])

    def _act_all(self, states: list[State]) -> None:
        """Fire due actions: cheap, on the scheduler thread.

        Every due attempt is begun first, then the driver calls are handed
        to the action lane in one batch, so a burst of deadlines begins
        every attempt at once; a call that blocks gets another thread
        beside it within the lane's period, so none delays another by
        more than that.
        The last reading decides (a slow get_progress never makes the
        action late); post-copy once seen is latched, and drivers refuse
        an abort or a pause in post-copy themselves.
        """
        if not states:
            return
        handoffs = []
        for st in states:
            attempt = None
            try:
                attempt = self._begin(st)
            except Exception:
                LOG.exception('Timeout action failed on migration %s',
                              st.migration.id)
            if attempt is None:
                self._done_acting(st)
            else:
                handoffs.append((st, attempt))
        with self._lock:
            if handoffs and self._calls_waiting <= 0:
                self._waiting_since = self._clock()
            self._calls_waiting += len(handoffs)
        LANE.submit_many([functools.partial(self._call, st, attempt)
                          for st, attempt in handoffs])

    def _done_acting(self, st: State) -> None:
        with self._lock:
            st.acting = False
        if not st.finished.is_set():
            self._rearm(st)

    def _begin(self, st: State) -> latch_mod.Attempt | None:
        """Begin an attempt if one is due; None when nothing is to call."""
        latch = st.latch
        expired = latch.expire()
        if expired is not None:
            self._attempt_event(st, expired)
        if not latch.steps:
            self._nothing_usable(st)
            return None
        action = latch.due()
        if action is None or self._stopped:
            return None
        if st.blind_since is not None:
            # the backend does not answer: never act blind
            latch.postpone(max(self.backoff, self.poll_interval))
            return None
        if st.phase is not None and st.phase.terminal:
            return None            # the poll that saw it concludes
        if latch.done:
            self._note_postcopy(st)
            return None
        return latch.begin(action)

    def _call(self, st: State, attempt: latch_mod.Attempt,
              inline: bool = False) -> None:
        """The action's driver call, then its settling (on a lane thread).

        The call runs on this thread, bounded by a watchdog timer at
        ``driver_call_timeout`` (:meth:`_fire_watchdogs`): a call that
        does not return by then is abandoned there, and whatever it
        returns later is dropped.  Inline (``run_pending``) the driver's
        own bound applies.

        While other action calls wait to be entered (a burst of
        deadlines), what the result means (the latch, the effect reading,
        the attempt's event) is settled after them (:meth:`_settle_later`):
        the calls still queued go first.
        """
        action = attempt.action
        attempt.started = self._clock()     # when the call really starts
        bound: contextlib.AbstractContextManager[object] = \
            contextlib.nullcontext()
        if not inline:
            timeout = st.driver.call_timeout
            with self._lock:
                self._calls_waiting -= 1
                if not self._calls_waiting and (self._polls or
                                                self._effects):
                    self._cond.notify()     # held readings may go now
                st.in_call = attempt
                if timeout and math.isfinite(timeout):
                    bound = calls.watchdog_bound()
                    self._push(st, _Timer.WATCHDOG, attempt.started + timeout)
        settle_here = True
        try:
            failure: tuple[R, str, bool] | None = None
            try:
                with bound:
                    if action == ABORT:
                        st.driver.abort(st.migration)
                    else:
                        st.driver.force_complete(st.migration,
                                                 latch_mod.Mode(action))
            except exception.DriverCallTimeout as exc:
                failure = (R.TIMED_OUT, str(exc), False)
            except exception.OperationRefused as exc:
                failure = (R.REFUSED, str(exc), False)
            except exception.UnsupportedOperation as exc:
                failure = (R.FAILED, str(exc), True)
            except Exception as exc:
                failure = (R.FAILED, f'{type(exc).__name__}: {exc}', False)
            returned = self._clock()
            if inline:
                self._settle(st, attempt, failure, returned, inline=True)
                return
            with self._lock:
                mine = st.in_call is attempt
                if mine:
                    st.in_call = None
                    if self._calls_waiting > 0 and not self._stopped:
                        settle_here = False
                        self._settling.append((st, attempt, failure,
                                               returned))
                        queue = not self._settle_queued
                        self._settle_queued = True
            if not mine:
                settle_here = False     # the watchdog settled it
                LOG.warning('%s on migration %s of instance %s returned '
                            'after its watchdog abandoned it (%s); '
                            'result dropped', action, st.migration.id,
                            st.instance_uuid,
                            'accepted' if failure is None else failure[1])
                return
            if not settle_here:
                if queue:
                    LANE.submit_many([self._settle_later])
                return
            self._settle(st, attempt, failure, returned)
        except Exception:
            LOG.exception('Timeout action failed on migration %s',
                          st.migration.id)
        finally:
            if not inline and settle_here:
                self._done_acting(st)

    def _settle(self, st: State, attempt: latch_mod.Attempt,
                failure: tuple[R, str, bool] | None, returned: float,
                inline: bool = False) -> None:
        """What a returned call means: the latch told (at ``returned``,
        the time the call returned), the effect watched or the attempt's
        event queued."""
        latch, action = st.latch, attempt.action
        if failure is not None:
            latch.failed(attempt, failure[0], failure[1],
                         give_up_step=failure[2], at=returned)
        else:
            latch.accepted(attempt, at=returned)
            LOG.log(logging.WARNING if st.interrupted else logging.INFO,
                    '%s %s on migration %s of instance %s accepted '
                    'after %.3f s',
                    (f'Interrupted ({st.interrupted}):'
                     if st.interrupted else 'Timeout action'),
                    action, st.migration.id, st.instance_uuid,
                    st.migration.elapsed)
            self._watch_effect(st, attempt, inline)
        if attempt.result not in (R.PENDING, R.EFFECTIVE):
            self._attempt_event(st, attempt)

    def _settle_later(self) -> None:
        """Settle the calls that returned while others waited to be
        entered: a lane task queued behind those calls, so it runs once
        they were entered (also called by :meth:`stop`)."""
        while True:
            with self._lock:
                if not self._settling:
                    self._settle_queued = False
                    return
                st, attempt, failure, returned = self._settling.popleft()
            try:
                self._settle(st, attempt, failure, returned)
            except Exception:
                LOG.exception('Timeout action failed on migration %s',
                              st.migration.id)
            finally:
                self._done_acting(st)

    def _fire_watchdogs(self) -> None:
        """Abandon action calls past ``driver_call_timeout`` (scheduler
        thread): the attempt is TIMED_OUT and recorded, and the migration
        is free for its retry or the next step on another lane thread;
        the hung thread's result is dropped when it returns."""
        with self._lock:
            due, self._watchdogs = self._watchdogs, []
        for st in due:
            with self._lock:
                attempt = st.in_call    # stale timers never get here
                if attempt is None or st.finished.is_set():
                    continue        # the call returned first
                st.in_call = None
            timeout = st.driver.call_timeout
            what = ('abort' if attempt.action == ABORT else
                    f'force_complete({attempt.action})')
            error = exception.DriverCallTimeout(
                driver=st.driver.name, call=what, timeout=f'{timeout:g}')
            try:
                st.latch.failed(attempt, R.TIMED_OUT, str(error))
                self._attempt_event(st, attempt)
            except Exception:
                LOG.exception('Timeout monitor failed abandoning the call on '
                              'migration %s', st.migration.id)
            finally:
                self._done_acting(st)

    def _watch_effect(self, st: State, attempt: latch_mod.Attempt,
                      inline: bool) -> None:
        """Have the effect read from an EFFECT timer, at once then sooner
        than a poll (:meth:`_read_effect`); inline (``run_pending``), one
        reading now."""
        if self._stopped:
            return
        if inline:
            progress = self._read(st)
            if progress is not None and progress.phase.terminal:
                self._conclude(st, progress)
            return
        if attempt.result is not R.PENDING or st.finished.is_set():
            return
        with self._lock:
            st.effect_wait = 0.0
            if not self._stopped:
                self._push(st, _Timer.EFFECT, self._clock())

    def _nothing_usable(self, st: State) -> None:
        """The deadline passed and no action is usable here: say so once."""
        if st.unusable_reported or st.deadline is None:
            return
        if self._clock() <= st.deadline:
            with self._lock:
                self._push(st, _Timer.ACTION, st.deadline + RECHECK)
            return
        st.unusable_reported = True
        decl = st.driver.host_declaration()
        if st.policy.timeout_action is lmcaps_policy.TimeoutAction.ABORT:
            wanted = [latch_mod._OPERATION[ABORT]]
            why = 'abort is not usable'
        else:
            wanted = [latch_mod._OPERATION[POSTCOPY],
                      latch_mod._OPERATION[PAUSE]]
            why = 'neither post-copy nor pause is usable'
        notes = '; '.join(
            f'driver {decl.driver} does not support {op.value}: '
            f'{decl[op].notes or decl.support(op).value}' for op in wanted)
        LOG.warning('Migration %s of instance %s reached its timeout: %s',
                    st.migration.id, st.instance_uuid, why)
        self._record(st, events.TIMEOUT_ACTION, events.ERROR,
                     events.details_text({
                         'action': st.policy.timeout_action.value,
                         'error': f'{why} ({notes}); no action'}))

    def _effective(self, st: State, attempt: latch_mod.Attempt) -> None:
        st.paused = attempt.action == PAUSE
        self._attempt_event(st, attempt)

    def _attempt_event(self, st: State, attempt: latch_mod.Attempt) -> None:
        pol = st.policy
        elapsed = attempt.started - st.migration.started_at
        details = {'action': attempt.action, 'attempt': str(attempt.number),
                   'result': attempt.result.value,
                   'elapsed': f'{elapsed:.3f} s'}
        if pol.completion_timeout is not None:
            details['completion_timeout'] = f'{pol.completion_timeout:g} s'
        details['from'] = ', '.join(f'{k}={v}' for k, v in
                                    sorted(pol.sources.items()))
        if attempt.effective_at is not None and attempt.returned is not None:
            details['took_effect'] = (
                f'{attempt.effective_at - attempt.started:.3f} s after the '
                f'call')
        if st.interrupted:
            details['interrupted'] = st.interrupted
        if attempt.error:
            details['error'] = attempt.error
            nxt = st.latch.next_at
            if not st.latch.done and nxt is not None:
                details['next'] = (f'retry in {max(0, nxt - self._clock()):.1f}'
                                   f' s ({st.latch.steps[st.latch._step]})')
        ok = attempt.result is R.EFFECTIVE
        LOG.log(logging.INFO if ok else logging.WARNING,
                'Timeout action on migration %s of instance %s: %s',
                st.migration.id, st.instance_uuid, attempt.describe())
        self._record(st, events.TIMEOUT_ACTION,
                     events.SUCCESS if ok else events.ERROR,
                     events.details_text(details))

    # -- the end ------------------------------------------------------------

    def _action_word(self, st: State) -> str:
        last = st.latch.effective or (st.latch.attempts[-1] if
                                      st.latch.attempts else None)
        return 'none' if last is None else f'{last.action} ({last.result.value})'

    def _conclude(self, st: State, progress: base.Progress) -> None:
        with st.observing:      # an effective attempt's event goes first
            pass
        with self._lock:
            if st.concluding:
                return
            st.concluding = True
        phase = progress.phase
        resumed = False
        notes: dict[str, str | None] = {}
        if st.paused and not st.seen_postcopy and phase in (
                base.Phase.FAILED, base.Phase.CANCELLED):
            try:
                st.driver.resume_source(st.migration)
                resumed = True
            except Exception as exc:
                notes['resume_error'] = str(exc) or type(exc).__name__
        if phase is base.Phase.FAILED:
            try:
                notes['recovered'] = st.driver.recover(st.migration)
            except Exception as exc:
                notes['recover_error'] = str(exc) or type(exc).__name__
        where = st.driver.guest_location(st.migration)
        reason = progress.message if phase is not base.Phase.COMPLETED else ''
        skipped = ('timeout reached in post-copy: no action'
                   if st.skipped_reported else None)
        details = {'phase': phase.value, 'guest': str(where),
                   'reason': reason or None,
                   'timeout_action': self._action_word(st),
                   'attempts': (str(len(st.latch.attempts))
                                if st.latch.attempts else None),
                   'timeout': skipped, 'interrupted': st.interrupted,
                   'resumed_source': (('yes' if resumed else 'no')
                                      if st.paused else None), **notes}
        kept = {k: str(v) for k, v in details.items() if v is not None}
        ok = phase is base.Phase.COMPLETED and 'resume_error' not in notes
        self._record(st, events.OUTCOME, events.SUCCESS if ok else events.ERROR,
                     events.details_text(kept))
        message = '; '.join(str(v) for v in (
            reason, notes.get('recovered'), notes.get('recover_error'),
            notes.get('resume_error')) if v)
        self._set_outcome(st, phase, resumed, where, message)

    def _set_outcome(self, st: State, phase: base.Phase, resumed: bool,
                     where: base.GuestLocation, message: str, *,
                     ended: bool = True) -> None:
        latch = st.latch
        shown = latch.effective or (latch.attempts[-1] if latch.attempts
                                    else None)
        action = None if shown is None else shown.action
        if action is None and latch.deadline is not None and \
                not latch.steps and st.policy.timeout_action is \
                lmcaps_policy.TimeoutAction.FORCE_COMPLETE and \
                self._clock() > latch.deadline:
            action = FORCE_COMPLETE
        error = None
        if latch.effective is None and shown is not None and \
                shown.result is not R.PENDING:
            error = shown.error or shown.result.value
        outcome = Outcome(
            phase=phase, action=action, action_error=error,
            deadline=st.deadline,
            fired_at=None if shown is None else shown.returned,
            resumed_source=resumed, location=where, message=message,
            attempts=tuple(latch.attempts),
            effective_at=(None if latch.effective is None
                          else latch.effective.effective_at),
            interrupted=st.interrupted, ended=ended)
        with self._lock:
            st.outcome = outcome
            if self._states.get(st.migration.id) is st:
                del self._states[st.migration.id]
            st.finished.set()
            self._forget(st)
        if st.on_done is not None:
            try:
                st.on_done()
            except Exception:
                LOG.exception('on_done of migration %s failed',
                              st.migration.id)

    def _record(self, st: State, event: str, result: str,
                details: str) -> None:
        st.last_event = self.queue.put(eventqueue.Pending(
            st.request_id, st.instance_uuid, event, result, self.host,
            details, None))
