"""Driver calls that cannot hold their caller: bounded and blocking calls."""

from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
import math
import queue
import sys
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from collections.abc import Callable
from typing import Any, TypeVar

from lmcaps import exception
from lmcaps.drivers.model import Phase, Progress

T = TypeVar('T')

LOG = logging.getLogger(__name__)


class DaemonPool:
    """Daemon threads that run calls, reused when idle, added when not.

    A hung call keeps its thread; the others are reused, so a burst of
    calls (2,000 deadlines at once) does not start 2,000 threads, and a
    process whose backend hangs still exits (the threads are daemons,
    unlike ``concurrent.futures``' workers).

    :param idle_timeout: seconds an idle thread waits for work, then ends.
    :param max_threads: threads at most; beyond, calls wait in a queue.
    """

    def __init__(self, name: str, idle_timeout: float = 30.0,
                 max_threads: int = 1024) -> None:
        self.name = name
        self.idle_timeout = idle_timeout
        self.max_threads = max_threads
        self._threads = 0
        self._queue: queue.SimpleQueue[tuple[Callable[[], Any],
                                             Future[Any]]] = \
            queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._count = itertools.count(1)

    def reserve(self, count: int) -> None:
        """Start idle threads until ``count`` exist, so that a burst of
        calls later starts none (the cost is paid now, not at a deadline)."""
        with self._lock:
            want = min(count, self.max_threads) - self._threads
            if want <= 0:
                return
            self._threads += want
            self._idle += want
        for _ in range(want):
            threading.Thread(target=self._work, daemon=True,
                             name=f'{self.name}-{next(self._count)}').start()

    def submit(self, call: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            spawn = self._idle == 0 and self._threads < self.max_threads
            if spawn:
                self._threads += 1
            elif self._idle > 0:
                self._idle -= 1
        self._queue.put((call, future))
        if spawn:
            threading.Thread(target=self._work, daemon=True,
                             name=f'{self.name}-{next(self._count)}').start()
        return future

    def _work(self) -> None:
        while True:
            try:
                call, future = self._queue.get(timeout=self.idle_timeout)
            except queue.Empty:
                with self._lock:
                    if self._idle > 0 and self._queue.empty():
                        self._idle -= 1
                        self._threads -= 1
                        return
                continue
            if not future.set_running_or_notify_cancel():
                with self._lock:
                    self._idle += 1
                continue
            try:
                result: Any = call()
                failed = False
            except BaseException as exc:  # handed to the caller
                result, failed = exc, True
            # Idle before the caller wakes: a caller that submits its next
            # call at once (a poll worker reading migration after
            # migration) then reuses this thread instead of starting one.
            with self._lock:
                self._idle += 1
            if failed:
                future.set_exception(result)
            else:
                future.set_result(result)


#: Runs every bounded driver call.
CALLS = DaemonPool('lmcaps-call')


def _cpu_clock(ident: int) -> int | None:
    """The CPU clock of thread ``ident`` (an OS thread), or None.

    None under eventlet's monkey-patching, where ``threading.get_ident()``
    names a green thread, not a pthread, and where there is no clock.
    """
    patcher = sys.modules.get('eventlet.patcher')
    if patcher is not None and patcher.is_monkey_patched('thread'):
        return None
    try:
        return time.pthread_getcpuclockid(ident)
    except (AttributeError, OSError, OverflowError, ValueError):
        return None


class Lane:
    """Short tasks run in order on few threads, more while they block.

    For the timeout monitor's action calls.  Tasks wait in one queue and
    each thread takes the next.  A thread counts as *blocked* when its task
    has run for at least ``period`` seconds and used less than half of
    that time on its CPU clock (a backend round trip, a hung call).  While
    tasks wait and no thread is idle, threads are added for the blocked
    ones — at queueing time, and every ``period`` by a supervisor while
    more tasks wait than threads are idle (one thread, woken then).  Where
    a thread has no CPU clock (``time.pthread_getcpuclockid``; green
    threads), a task counts as blocked once it ran ``period``.  So a
    burst of calls that compute (each holds the GIL: more threads only add
    switches) runs on one thread at the speed of one thread, and calls that
    wait on a backend, or hang, never hold the capacity the others need.
    Threads beyond ``runners`` end when idle; all are daemons.

    :param runners: threads kept, and the fewest added at a time.
    :param period: seconds a task runs before it may count as blocked,
        and between two supervisor readings.
    :param max_threads: threads at most (blocked ones included).
    """

    BLOCKED = 0.5       # CPU share of a task's time below which it blocks

    def __init__(self, name: str, runners: int = 1, period: float = 0.01,
                 idle_timeout: float = 30.0, max_threads: int = 1024) -> None:
        self.name = name
        self.runners = runners
        self.period = period
        self.idle_timeout = idle_timeout
        self.max_threads = max_threads
        lock = threading.Lock()
        self._cond = threading.Condition(lock)      # idle threads wait
        self._sup = threading.Condition(lock)       # the supervisor waits
        self._tasks: collections.deque[Callable[[], Any]] = \
            collections.deque()
        #: thread ident -> (its CPU clock, CPU and wall time at task start)
        self._busy: dict[int, tuple[int | None, float, float]] = {}
        self._threads = 0
        self._idle = 0
        self._supervising = False       # the supervisor reads, or will
        self._supervisor = False        # its thread was started
        self._count = itertools.count(1)

    def submit_many(self, tasks: list[Callable[[], Any]]) -> None:
        """Queue tasks, taken in this order (one lock for all); their
        exceptions are logged, not raised."""
        if not tasks:
            return
        with self._cond:
            self._tasks.extend(tasks)
            self._cond.notify(min(len(tasks), self._idle))
            spawn = self._wanted()
            self._threads += spawn
            # the supervisor reads while more tasks wait than threads are
            # idle (one thread, started once, woken here)
            start = False
            if not self._supervising and len(self._tasks) > self._idle:
                self._supervising = True
                start, self._supervisor = not self._supervisor, True
                self._sup.notify()
        for _ in range(spawn):
            self._start(self._run)
        if start:
            self._start(self._supervise, 'supervisor')

    def _wanted(self) -> int:
        """Threads to add now (under the lock): none while one is idle or
        no task waits; else as many as are blocked, at least ``runners``
        when every thread is blocked."""
        if self._idle or not self._tasks:
            return 0
        now = time.monotonic()
        blocked = 0
        for clock, cpu, wall in self._busy.values():
            ran = now - wall
            if ran < self.period:
                continue
            if clock is None:
                blocked += 1
                continue
            try:
                used = time.clock_gettime(clock) - cpu
            except OSError:             # the thread just ended
                continue
            if used < self.BLOCKED * ran:
                blocked += 1
        free = self._threads - blocked
        if free >= self.runners:
            return 0
        return max(0, min(max(self.runners - free, blocked),
                          len(self._tasks), self.max_threads - self._threads))

    def _start(self, target: Callable[[], None], role: str = '') -> None:
        threading.Thread(target=target, daemon=True,
                         name=f'{self.name}-{role or next(self._count)}'
                         ).start()

    def _run(self) -> None:
        me = threading.get_ident()
        clock = _cpu_clock(me)
        while True:
            with self._cond:
                while not self._tasks:
                    if self._threads > self.runners and self._idle > 0:
                        self._threads -= 1      # the idle ones are enough
                        return
                    self._idle += 1
                    woken = self._cond.wait(self.idle_timeout)
                    self._idle -= 1
                    if not woken and not self._tasks and \
                            self._threads > self.runners:
                        self._threads -= 1
                        return
                task = self._tasks.popleft()
                self._busy[me] = (clock, time.thread_time(),
                                  time.monotonic())
            try:
                task()
            except Exception:
                LOG.exception('%s task failed', self.name)
            finally:
                with self._cond:
                    del self._busy[me]

    def _supervise(self) -> None:
        """While tasks wait, add threads for the blocked ones (every
        ``period``); else wait to be woken by :meth:`submit_many`."""
        while True:
            with self._cond:
                while not self._supervising:
                    self._sup.wait()
            time.sleep(self.period)
            with self._cond:
                if not self._tasks:
                    self._supervising = False
                    continue
                spawn = self._wanted()
                self._threads += spawn
            for _ in range(spawn):
                self._start(self._run)


_LOCAL = threading.local()


class Abandoned(BaseException):
    """Raised on a :class:`WatchedPool` thread whose call the watchdog
    abandoned, once that call returns: what it returned is dropped and
    the thread ends.  A BaseException, so that the handlers of the task it
    runs in (``except Exception``) let it through."""


class _Slot:
    """What one :class:`WatchedPool` thread runs (under the pool's lock)."""

    __slots__ = ('pool', 'batch', 'item', 'deadline', 'timeout', 'what',
                 'driver', 'used', 'abandoned')

    def __init__(self, pool: WatchedPool) -> None:
        self.pool = pool
        self.batch: collections.deque[Any] = collections.deque()
        self.item: Any = None
        self.deadline: float | None = None  # its call's bound, while in it
        self.timeout = 0.0
        self.what = self.driver = ''
        self.used = False       # the task's first bounded call was made
        self.abandoned = False


class WatchedPool:
    """Threads that run batches of tasks, each task's driver call on the
    task's own thread, all calls bounded by one watchdog thread.

    For the timeout monitor's polls.  The first :func:`bounded` call a
    task makes (its reading) runs on the pool thread instead of hopping to
    another one: at a thousand readings a second, the hop (a future and
    two thread switches per reading) is half the monitor's CPU.  The
    watchdog abandons a call still running ``timeout`` seconds (the bound
    given to :func:`bounded`) after it started: ``on_abandon(item, error)``
    is called on the watchdog thread with a DriverCallTimeout, the rest of
    that thread's batch goes to a new thread, and the hung thread ends
    when its call returns (:class:`Abandoned`), dropping the result.  So a
    hung call never holds the capacity the other tasks need.  Later
    bounded calls of the same task, and calls nested in the first, are
    bounded as usual.  All threads are daemons.

    :param threads: threads taking batches (abandoned ones are replaced).
    :param run: ``run(item)``, called for each item of a batch; its
        exceptions are logged.
    :param on_abandon: ``on_abandon(item, error)``, when ``item``'s call
        was abandoned; it must not block.
    :param elastic: start a thread for a batch that finds none idle (up
        to ``max_threads``), so no batch waits behind another; threads
        beyond ``threads`` end after ``idle_timeout`` seconds idle.
    """

    def __init__(self, name: str, threads: int,
                 run: Callable[[Any], None],
                 on_abandon: Callable[[Any, Exception], None], *,
                 elastic: bool = False, idle_timeout: float = 30.0,
                 max_threads: int = 1024) -> None:
        self.name = name
        self.threads = threads
        self.elastic = elastic
        self.idle_timeout = idle_timeout
        self.max_threads = max_threads
        self._nthreads = threads        # live, not abandoned
        self._idle = 0                  # waiting for a batch
        self._run_item = run
        self._on_abandon = on_abandon
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._dog = threading.Condition(self._lock)
        self._batches: collections.deque[list[Any]] = collections.deque()
        self._slots: set[_Slot] = set()
        self._active = 0                # batches being run, not abandoned
        #: when the watchdog reads the slots next (inf: no call since)
        self._wake_at = math.inf
        self._closed = False
        self._count = itertools.count(1)
        for _ in range(threads):
            self._start(self._worker)
        self._start(self._watchdog, 'watchdog')

    def _start(self, target: Callable[[], None], role: str = '') -> None:
        threading.Thread(target=target, daemon=True,
                         name=f'{self.name}-{role or next(self._count)}'
                         ).start()

    def submit(self, batch: list[Any]) -> None:
        """Queue one batch, run in order on one thread.

        :raises: RuntimeError once :meth:`shutdown` was called.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError(f'{self.name} is shut down')
            self._batches.append(batch)
            self._work.notify()
            spawn = (self.elastic and len(self._batches) > self._idle and
                     self._nthreads < self.max_threads)
            if spawn:
                self._nthreads += 1
        if spawn:
            self._start(self._worker)

    def reserve(self, count: int) -> None:
        """Start threads until ``count`` live (elastic pools), so that a
        burst of batches later starts none."""
        with self._lock:
            want = min(count, self.max_threads) - self._nthreads
            if want <= 0 or self._closed:
                return
            self._nthreads += want
        for _ in range(want):
            self._start(self._worker)

    def shutdown(self, wait: bool = True) -> None:
        """Drop the queued batches; with ``wait``, wait for the batches
        being run, a hung call at most until its bound."""
        with self._lock:
            self._closed = True
            self._batches.clear()
            self._work.notify_all()
            while wait and self._active:
                self._work.wait()
            self._dog.notify()

    # -- the bound (called by bounded(), on a pool thread) -----------------

    def _enter(self, slot: _Slot, timeout: float, what: str,
               driver: str) -> None:
        deadline = time.monotonic() + timeout
        with self._lock:
            slot.deadline, slot.timeout = deadline, timeout
            slot.what, slot.driver = what, driver
            if deadline < self._wake_at:
                self._wake_at = deadline
                self._dog.notify()

    def _leave(self, slot: _Slot) -> None:
        with self._lock:
            slot.deadline = None
            if slot.abandoned:
                raise Abandoned()

    # -- threads ----------------------------------------------------------

    def _worker(self) -> None:
        slot = _Slot(self)
        _LOCAL.slot = slot
        while True:
            with self._lock:
                while not self._batches and not self._closed:
                    self._idle += 1
                    woken = self._work.wait(
                        self.idle_timeout if self.elastic else None)
                    self._idle -= 1
                    if not woken and not self._batches and \
                            self._nthreads > self.threads:
                        self._nthreads -= 1     # idle too long: not needed
                        return
                if not self._batches:
                    self._nthreads -= 1
                    return                      # shut down
                slot.batch.extend(self._batches.popleft())
                self._slots.add(slot)
                self._active += 1
            while True:
                with self._lock:
                    if not slot.batch:
                        slot.item = None
                        self._slots.discard(slot)
                        self._active -= 1
                        if self._closed and not self._active:
                            self._work.notify_all()
                        break
                    slot.item = slot.batch.popleft()
                    slot.used = False
                try:
                    self._run_item(slot.item)
                except Abandoned:
                    LOG.warning('%s: %s of driver %s returned after the '
                                'watchdog abandoned it (%g s); result '
                                'dropped', self.name, slot.what,
                                slot.driver, slot.timeout)
                    return
                except Exception:
                    LOG.exception('%s task failed', self.name)

    def _watchdog(self) -> None:
        """Sleep until the earliest bound a call was given since the last
        reading (``_wake_at``; :meth:`_enter` lowers it, so a call that
        returns in time costs the watchdog nothing), then abandon the calls
        past their bound."""
        while True:
            abandoned: list[tuple[Any, Exception]] = []
            with self._lock:
                while True:
                    if self._closed and not self._active:
                        return
                    now = time.monotonic()
                    if now >= self._wake_at:
                        break
                    self._dog.wait(None if math.isinf(self._wake_at)
                                   else self._wake_at - now)
                wake = math.inf
                for slot in list(self._slots):
                    if slot.deadline is None:
                        continue
                    if slot.deadline > now:
                        wake = min(wake, slot.deadline)
                        continue
                    slot.abandoned = True
                    self._slots.discard(slot)
                    self._active -= 1
                    rest = bool(slot.batch)
                    if rest:
                        self._batches.appendleft(list(slot.batch))
                        slot.batch.clear()
                        self._work.notify()
                    abandoned.append((slot.item, exception.DriverCallTimeout(
                        driver=slot.driver, call=slot.what,
                        timeout=f'{slot.timeout:g}')))
                    if not self._closed and (rest or not self.elastic):
                        self._start(self._worker)   # its replacement
                    else:
                        self._nthreads -= 1     # elastic: submit starts more
                    if self._closed and not self._active:
                        self._work.notify_all()
                self._wake_at = wake
            for item, error in abandoned:
                try:
                    self._on_abandon(item, error)
                except Exception:
                    LOG.exception('%s: handling an abandoned call failed',
                                  self.name)


class watchdog_bound:  # noqa: N801 (used as a context manager)
    """The caller bounds the next driver call itself, with a watchdog.

    Inside this context the outermost :func:`bounded` call runs on the
    calling thread instead of a pool thread: the caller (the timeout
    monitor's action lane) has armed a timer that abandons the call at
    the same bound, so the hop to another thread (two thread switches and
    a future per call, most of a burst's cost) is saved.  Calls nested in
    that call are bounded as usual.  (A class, not a generator: it is
    entered once per action call.)
    """

    __slots__ = ()

    def __enter__(self) -> None:
        _LOCAL.watchdog = True

    def __exit__(self, *exc_info: object) -> None:
        _LOCAL.watchdog = False


def bounded(call: Callable[[], T], timeout: float, what: str,
            driver: str) -> T:
    """Run ``call`` on a pool thread and wait at most ``timeout`` seconds.

    A call that does not return in time is abandoned (its thread goes on
    and its result is dropped), so a hung backend never holds the caller.
    Under :func:`watchdog_bound`, and as a :class:`WatchedPool` task's
    first bounded call, the call runs on the caller's thread and the
    caller's watchdog enforces ``timeout``.

    :raises: Abandoned on a WatchedPool thread whose call the watchdog
        abandoned; DriverCallTimeout when the time ran out; whatever ``call``
        raised otherwise.
    """
    if not timeout or math.isinf(timeout):
        return call()
    slot = getattr(_LOCAL, 'slot', None)
    if slot is not None and not slot.used:     # a WatchedPool task's first
        slot.used = True
        slot.pool._enter(slot, timeout, what, driver)
        try:
            return call()
        finally:
            slot.pool._leave(slot)
    if getattr(_LOCAL, 'watchdog', False):
        _LOCAL.watchdog = False         # only the outermost call
        try:
            return call()
        finally:
            _LOCAL.watchdog = True
    future = CALLS.submit(call)
    try:
        return future.result(timeout)
    except FutureTimeout:
        raise exception.DriverCallTimeout(
            driver=driver, call=what, timeout=f'{timeout:g}') from None


class BlockingCall:
    """Runs a backend's blocking migrate call; its result is the verdict.

    For backends whose migrate call returns only when the migration has
    ended (libvirt's ``migrateToURI3``, pypowervm's ``migrate_lpar``).  The
    call runs in a daemon thread; :meth:`verdict` is None while it runs,
    then the exception it raised (None inside a finished ``Verdict`` means
    success).

    :param call: the blocking call.
    :param classify: turns the exception the call raised into a terminal
        Phase (CANCELLED for the backend's "aborted" error, else FAILED).
    :param name: the thread's name.
    :param on_end: called in the thread after the call returned or raised.
    """

    @dataclasses.dataclass(frozen=True)
    class Verdict:
        phase: Phase
        error: BaseException | None = None

        @property
        def message(self) -> str:
            return '' if self.error is None else str(self.error) or type(
                self.error).__name__

    def __init__(self, call: Callable[[], object],
                 classify: Callable[[BaseException], Phase] = lambda _e:
                 Phase.FAILED, *, name: str = 'lmcaps-migrate',
                 on_end: Callable[[], None] | None = None) -> None:
        self._call = call
        self._classify = classify
        self._on_end = on_end
        self.finished = threading.Event()
        self._verdict: BlockingCall.Verdict | None = None
        self.thread = threading.Thread(target=self._run, name=name,
                                       daemon=True)

    def start(self) -> BlockingCall:
        self.thread.start()
        return self

    def _run(self) -> None:
        verdict = BlockingCall.Verdict(Phase.COMPLETED)
        try:
            self._call()
        except BaseException as exc:  # never lose the thread's outcome
            try:
                phase = self._classify(exc)
            except Exception:
                phase = Phase.FAILED
            verdict = BlockingCall.Verdict(phase, exc)
        finally:
            self._verdict = verdict
            self.finished.set()
            if self._on_end is not None:
                try:
                    self._on_end()
                except Exception:
                    pass

    def verdict(self, wait: float = 0.0) -> BlockingCall.Verdict | None:
        """The verdict, waiting up to ``wait`` seconds; None while running."""
        if wait > 0:
            self.finished.wait(wait)
        return self._verdict if self.finished.is_set() else None

    def progress(self) -> Progress | None:
        """The terminal Progress of a finished call, None while it runs."""
        verdict = self.verdict()
        if verdict is None:
            return None
        return Progress(verdict.phase, fraction=(
            1.0 if verdict.phase is Phase.COMPLETED else None),
            raw_state='returned' if verdict.error is None else 'raised',
            message=verdict.message)
