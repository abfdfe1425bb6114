"""The timeout monitor: fires each migration's timeout action exactly once.

One scheduler thread keeps a heap of timers: each watched migration has a
deadline timer (its completion timeout) and a poll timer (to notice the end
of the migration, staggered and batched).  Driver calls run in a small
thread pool; a migration never has two driver calls in flight from the
monitor.  Unlike nova's libvirt monitor the action is latched: it fires once,
never at ``elapsed == timeout`` and never once the migration is in post-copy.
"""

from __future__ import annotations

import concurrent.futures
import enum
import heapq
import itertools
import logging
import math
import threading
import time
import traceback
from collections.abc import Callable

from oslo_config import cfg

from lmcaps import capabilities as caps
from lmcaps import conf as lmcaps_conf
from lmcaps import events
from lmcaps import exception
from lmcaps import policy as lmcaps_policy
from lmcaps.drivers import base
from lmcaps.watch import Outcome  # noqa: F401 (part of this API)
from lmcaps.watch import State
from lmcaps.watch import Watch

LOG = logging.getLogger(__name__)

ABORT = 'abort'
POSTCOPY = caps.ForceCompleteMode.POSTCOPY.value
PAUSE = caps.ForceCompleteMode.PAUSE.value
#: Outcome.action when force_complete had no usable mode on this host.
FORCE_COMPLETE = 'force_complete'

#: Largest granularity of poll timers, in seconds; polls due in the same
#: tick run as one batch, so the scheduler wakes at most ~50 times a second
#: for polls however many migrations are watched.
MAX_TICK = 0.02
#: Delay before re-checking a deadline reached exactly (elapsed == timeout).
RECHECK = 0.001
#: Fewest migrations a poll batch carries before using another worker.
MIN_BATCH = 8

_GOLDEN = (math.sqrt(5) - 1) / 2


class _Timer(enum.IntEnum):
    DEADLINE = 0
    POLL = 1


class TimeoutMonitor:
    """Carries out completion timeouts and their actions for many migrations.

    :param store: where TIMEOUT_ACTION and OUTCOME events are recorded.
    :param host: the host name recorded in events.
    :param poll_interval: seconds between two progress polls of a migration.
    :param workers: threads performing driver calls, shared by all.
    :param clock: monotonic clock; must be the clock of
        ``Migration.started_at``.
    """

    def __init__(self, store: events.EventStore, *, host: str | None = None,
                 poll_interval: float = 0.5, workers: int = 8,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not poll_interval > 0 or workers < 1:
            raise ValueError('poll_interval must be > 0 and workers >= 1')
        self.store = store
        self.host = host
        self.poll_interval = poll_interval
        self.workers = workers
        self._clock = clock
        self._tick = min(MAX_TICK, poll_interval / 5)
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, _Timer, State]] = []
        self._seq = itertools.count()
        self._stagger = itertools.count()
        self._states: dict[str, State] = {}
        self._thread: threading.Thread | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._stopped = False

    @classmethod
    def from_conf(cls, conf: cfg.ConfigOpts,
                  store: events.EventStore) -> TimeoutMonitor:
        """A monitor configured from ``[lmcaps]`` (poll interval, workers)."""
        group = conf[lmcaps_conf.GROUP]
        return cls(store, host=group.host,
                   poll_interval=group.monitor_poll_interval,
                   workers=group.monitor_workers)

    # -- life cycle -------------------------------------------------------

    def start(self) -> None:
        """Start the scheduler thread and the workers (idempotent)."""
        with self._cond:
            if self._stopped:
                raise exception.MonitorError(reason='the monitor was stopped')
            if self._thread is not None:
                return
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.workers,
                thread_name_prefix='lmcaps-monitor')
            self._thread = threading.Thread(
                target=self._run, name='lmcaps-monitor-timers', daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop; driver calls in flight finish, unfinished watches end."""
        with self._cond:
            if self._stopped:
                return
            self._stopped = True
            self._cond.notify_all()
            thread, executor = self._thread, self._executor
        if thread is not None:
            thread.join()
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        with self._cond:
            pending = list(self._states.values())
            self._states.clear()
            self._heap.clear()
        for st in pending:
            phase = st.phase or base.Phase.PREPARING
            where = st.driver.guest_location(st.migration)
            LOG.warning('Monitor stopped before migration %s of instance %s '
                        'ended (%s); its timeout is no longer enforced',
                        st.migration.id, st.instance_uuid, phase.value)
            self._record(st, events.OUTCOME, events.ERROR, events.details_text(
                {'phase': phase.value, 'guest': str(where),
                 'timeout_action': st.action or 'none',
                 'monitor': 'stopped before the migration ended; the '
                            'timeout is no longer enforced'}), None)
            self._set_outcome(st, phase, False, where, '')

    def __enter__(self) -> TimeoutMonitor:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- watching ---------------------------------------------------------

    def watch(self, driver: base.LiveMigrationDriver,
              migration: base.Migration,
              policy: lmcaps_policy.EffectivePolicy, *,
              instance_uuid: str, request_id: str) -> Watch:
        """Watch ``migration`` until it ends, applying ``policy`` once.

        :raises: MonitorError if stopped or if it is watched already.
        """
        timeout = policy.completion_timeout
        deadline = None if timeout is None else migration.started_at + timeout
        st = State(driver=driver, migration=migration, policy=policy,
                   instance_uuid=instance_uuid, request_id=request_id,
                   deadline=deadline)
        with self._cond:
            if self._stopped:
                raise exception.MonitorError(reason='the monitor is stopped')
            if migration.id in self._states:
                raise exception.MonitorError(
                    reason=f'migration {migration.id} is already watched')
            self._states[migration.id] = st
            offset = (next(self._stagger) * _GOLDEN) % 1.0
            self._push(st, _Timer.POLL,
                       self._clock() + offset * self.poll_interval)
            if deadline is not None:
                self._push(st, _Timer.DEADLINE, deadline)
        return Watch(st)

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
            with self._cond:
                urgent, polls = self._pop_due(self._clock())
            due = urgent + polls
            if not due:
                return count
            for st in due:
                self._run_batch([st])
            count += len(due)

    # -- timers (call under the lock) --------------------------------------

    def _push(self, st: State, kind: _Timer, when: float) -> None:
        if kind is _Timer.POLL:     # polls are batched by tick
            when = st.poll_at = math.ceil(when / self._tick) * self._tick
        else:
            st.deadline_at = when
        earliest = not self._heap or when < self._heap[0][0]
        heapq.heappush(self._heap, (when, next(self._seq), kind, st))
        if earliest:
            self._cond.notify()

    def _pop_due(self, now: float) -> tuple[list[State], list[State]]:
        """Pop due timers: the migrations to check (deadlines, polls)."""
        urgent: dict[State, None] = {}
        polls: dict[State, None] = {}
        while self._heap and self._heap[0][0] <= now:
            when, _seq, kind, st = heapq.heappop(self._heap)
            if st.finished.is_set():
                continue
            if kind is _Timer.POLL:
                if st.poll_at != when:
                    continue
                st.poll_at = None
            else:
                st.deadline_at = None
            if st in urgent or st in polls:     # both timers due at once
                if kind is _Timer.DEADLINE and st in polls:
                    del polls[st]
                    urgent[st] = None
                continue
            if st.busy:
                st.again = True
                continue
            st.busy = True
            (urgent if kind is _Timer.DEADLINE else polls)[st] = None
        return list(urgent), list(polls)

    # -- scheduler and workers --------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                with self._cond:
                    while True:
                        if self._stopped:
                            return
                        now = self._clock()
                        urgent, polls = self._pop_due(now)
                        if urgent or polls:
                            break
                        wait = self._heap[0][0] - now if self._heap else None
                        self._cond.wait(wait)
                self._dispatch(urgent, polls)
            except Exception:  # never let the scheduler die
                LOG.exception('Timeout monitor scheduler error')
                time.sleep(self._tick)

    def _dispatch(self, urgent: list[State], polls: list[State]) -> None:
        for st in urgent:       # one task each: a deadline waits for no poll
            self._submit([st])
        if polls:
            chunks = min(self.workers, math.ceil(len(polls) / MIN_BATCH))
            size = math.ceil(len(polls) / chunks)
            for i in range(0, len(polls), size):
                self._submit(polls[i:i + size])

    def _submit(self, batch: list[State]) -> None:
        executor = self._executor
        if executor is None:
            self._run_batch(batch)
            return
        try:
            executor.submit(self._run_batch, batch)
        except RuntimeError:  # shut down: stop() ends these watches
            LOG.debug('Monitor stopping; %d checks dropped', len(batch))

    def _run_batch(self, batch: list[State]) -> None:
        for st in batch:
            try:
                self._check(st)
            except Exception:
                LOG.exception('Timeout monitor failed on migration %s',
                              st.migration.id)
            finally:
                self._release(st)

    def _release(self, st: State) -> None:
        with self._cond:
            st.busy = False
            if st.finished.is_set() or self._stopped:
                return
            if st.poll_at is None:
                self._push(st, _Timer.POLL, self._clock() + self.poll_interval)
            if not st.again:
                return
            st.again, st.busy = False, True
        self._submit([st])

    # -- decisions ----------------------------------------------------------

    def _check(self, st: State) -> None:
        """Observe one migration; end it, or fire its action when due."""
        try:
            progress = st.driver.get_progress(st.migration)
        except Exception as exc:
            LOG.warning('get_progress failed for migration %s; retrying at '
                        'the next poll', st.migration.id, exc_info=True)
            self._blind(st, exc)
            return
        st.blind_since = None
        st.phase = progress.phase
        if progress.phase is base.Phase.POSTCOPY:
            st.seen_postcopy = True
        if progress.phase.terminal:
            self._conclude(st, progress)
            return
        if st.latched or st.deadline is None:
            return
        now = self._clock()
        elapsed = now - st.migration.started_at
        if not lmcaps_policy.deadline_reached(
                elapsed, st.policy.completion_timeout):
            if now >= st.deadline:
                with self._cond:
                    if st.deadline_at is None:
                        self._push(st, _Timer.DEADLINE, now + RECHECK)
            return
        st.latched = True
        if st.seen_postcopy:   # once seen, whatever a later reading says
            st.skipped = 'timeout reached in post-copy: no action'
            LOG.info('Migration %s of instance %s reached its timeout in '
                     'post-copy; no action', st.migration.id,
                     st.instance_uuid)
            return
        self._fire(st, elapsed)

    def _blind(self, st: State, exc: Exception) -> None:
        """Past the deadline without progress: say so once, never act blind."""
        now = self._clock()
        if st.blind_since is None:
            st.blind_since = now
        if (st.latched or st.blind_reported or st.deadline is None or
                now <= st.deadline):
            return
        st.blind_reported = True
        self._record(st, events.TIMEOUT_ACTION, events.ERROR,
                     events.details_text({
                         'action': 'none yet',
                         'error': f'timeout reached but progress unavailable '
                                  f'for {now - st.blind_since:.1f} s: '
                                  f'{type(exc).__name__}: {exc}; the action '
                                  f'fires once progress is readable again'}),
                     None)

    def _fire(self, st: State, elapsed: float) -> None:
        pol, migration, driver = st.policy, st.migration, st.driver
        error = tb = None
        action = ABORT
        try:
            if pol.timeout_action is lmcaps_policy.TimeoutAction.ABORT:
                driver.abort(migration)
            else:
                action = FORCE_COMPLETE
                mode = pol.mode or lmcaps_policy.choose_mode(
                    pol, driver.host_declaration())
                if mode is None:
                    raise exception.UnsupportedOperation(
                        driver=driver.name, operation=FORCE_COMPLETE,
                        reason='neither post-copy nor pause is usable')
                action = mode.value
                driver.force_complete(migration, mode)
        except exception.LmcapsException as exc:
            error = str(exc)
        except Exception as exc:
            error = f'{type(exc).__name__}: {exc}'
            tb = traceback.format_exc()
        st.fired_at = self._clock()
        st.action, st.action_error = action, error
        st.paused = action == PAUSE and error is None
        LOG.log(logging.WARNING if error else logging.INFO,
                'Timeout action %s on migration %s of instance %s after '
                '%.3f s: %s', action, migration.id, st.instance_uuid,
                elapsed, error or 'done')
        details = {'action': action, 'elapsed': f'{elapsed:.3f} s',
                   'completion_timeout': f'{pol.completion_timeout:g} s',
                   'from': ', '.join(f'{k}={v}' for k, v in
                                     sorted(pol.sources.items()))}
        if error:
            details['error'] = error + ' (not retried)'
        self._record(st, events.TIMEOUT_ACTION,
                     events.ERROR if error else events.SUCCESS,
                     events.details_text(details), tb)

    def _conclude(self, st: State, progress: base.Progress) -> None:
        phase = progress.phase
        resumed = False
        notes: dict[str, str | None] = {}
        if st.paused and not st.seen_postcopy and phase in (
                base.Phase.FAILED, base.Phase.CANCELLED):
            try:
                st.driver.resume_source(st.migration)
                resumed = True
                LOG.info('Resumed instance %s on the source after migration '
                         '%s ended %s', st.instance_uuid, st.migration.id,
                         phase.value)
            except Exception as exc:
                notes['resume_error'] = str(exc) or type(exc).__name__
                LOG.error('Could not resume instance %s on the source: %s',
                          st.instance_uuid, notes['resume_error'])
        if phase is base.Phase.FAILED:
            try:
                notes['recovered'] = st.driver.recover(st.migration)
            except Exception as exc:
                notes['recover_error'] = str(exc) or type(exc).__name__
                LOG.error('Recovery of instance %s after the failed '
                          'migration failed: %s', st.instance_uuid,
                          notes['recover_error'])
        where = st.driver.guest_location(st.migration)
        details = {'phase': phase.value, 'guest': str(where),
                   'reason': (progress.message or None) if phase is not
                   base.Phase.COMPLETED else None,
                   'timeout_action': st.action or 'none',
                   'action_error': st.action_error, 'timeout': st.skipped,
                   'resumed_source': (('yes' if resumed else 'no')
                                      if st.paused else None), **notes}
        kept = {k: str(v) for k, v in details.items() if v is not None}
        ok = (phase is base.Phase.COMPLETED and
              'resume_error' not in notes)
        self._record(st, events.OUTCOME,
                     events.SUCCESS if ok else events.ERROR,
                     events.details_text(kept), None)
        message = '; '.join(str(v) for v in (
            progress.message if phase is not base.Phase.COMPLETED else None,
            notes.get('recovered'), notes.get('recover_error'),
            notes.get('resume_error')) if v)
        self._set_outcome(st, phase, resumed, where, message)

    def _set_outcome(self, st: State, phase: base.Phase, resumed: bool,
                     where: base.GuestLocation, message: str) -> None:
        outcome = Outcome(phase=phase, action=st.action,
                          action_error=st.action_error, deadline=st.deadline,
                          fired_at=st.fired_at, resumed_source=resumed,
                          location=where, message=message)
        with self._cond:
            st.outcome = outcome
            if self._states.get(st.migration.id) is st:
                del self._states[st.migration.id]
            st.finished.set()

    def _record(self, st: State, event: str, result: str, details: str,
                tb: str | None) -> None:
        try:
            self.store.record(st.request_id, st.instance_uuid, event, result,
                              host=self.host, details=details, traceback=tb)
        except Exception:
            LOG.exception('Could not record event %s of instance %s',
                          event, st.instance_uuid)
