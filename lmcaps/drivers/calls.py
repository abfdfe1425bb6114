"""Driver calls that cannot hold their caller: bounded and blocking calls."""

from __future__ import annotations

import dataclasses
import itertools
import math
import queue
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from collections.abc import Callable
from typing import Any, TypeVar

from lmcaps import exception
from lmcaps.drivers.model import Phase, Progress

T = TypeVar('T')


class DaemonPool:
    """Daemon threads that run calls, reused when idle, added when not.

    A hung call keeps its thread; the others are reused, so a burst of
    calls (2,000 deadlines at once) does not start 2,000 threads, and a
    process whose backend hangs still exits (the threads are daemons,
    unlike ``concurrent.futures``' workers).

    :param idle_timeout: seconds an idle thread waits for work, then ends.
    """

    def __init__(self, name: str, idle_timeout: float = 30.0) -> None:
        self.name = name
        self.idle_timeout = idle_timeout
        self._queue: queue.SimpleQueue[tuple[Callable[[], Any],
                                             Future[Any]]] = \
            queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._count = itertools.count(1)

    def submit(self, call: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            spawn = self._idle == 0
            if not spawn:
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
                        return
                continue
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(call())
                except BaseException as exc:  # handed to the caller
                    future.set_exception(exc)
            with self._lock:
                self._idle += 1


#: Runs every bounded driver call.
CALLS = DaemonPool('lmcaps-call')


def bounded(call: Callable[[], T], timeout: float, what: str,
            driver: str) -> T:
    """Run ``call`` on a pool thread and wait at most ``timeout`` seconds.

    A call that does not return in time is abandoned (its thread goes on
    and its result is dropped), so a hung backend never holds the caller.

    :raises: DriverCallTimeout when the time ran out; whatever ``call``
        raised otherwise.
    """
    if not timeout or math.isinf(timeout):
        return call()
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
