"""lmcaps's own timer for one migration inside nova-compute.

nova's ``_live_migration_monitor`` computes ``elapsed = time.time() -
start`` on each 0.5 s pass, ``start`` taken just before its loop.  The
timer runs on the same clock (the wall clock, ``time.time`` as bound when
this module is imported, so a test that mocks ``time.time`` for nova's loop
does not feed it) and wakes when the latch next has something due: the
deadline, a retry, or the effect bound of a pending attempt.

Its origin is the moment :meth:`DeadlineTimer.start` is called (in
``monitor.begin()``, before nova takes ``start``); each pass of nova's
loop then says where nova's ``start`` is (:meth:`DeadlineTimer.align`), so
the timer's elapsed never runs ahead of nova's: it fires no earlier than
nova would, and a few microseconds later at most.

Thread model: nova 34's nova-compute runs on native threads by default
(``nova.cmd.compute`` calls ``monkey_patch.patch(backend='threading')``)
and on eventlet where ``[DEFAULT] concurrency_backend = eventlet`` or
``OS_NOVA_DISABLE_EVENTLET_PATCHING`` says so.  The timer is a
``threading.Thread`` waiting on a ``threading.Condition``, both looked up
when created: a native thread under native threading, a green thread once
eventlet has patched ``threading``.  libvirt calls made from it go through
nova's tpool proxy (``Host._wrap_libvirt_proxy``) as nova's own do, so a
slow libvirt call never blocks eventlet's hub.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from oslo_log import log as logging

LOG = logging.getLogger(__name__)

#: The wall clock nova's ``elapsed`` is measured on, unaffected by mocks of
#: ``time.time`` made after import.
wall: Callable[[], float] = time.time

#: The shortest wait, seconds (no busy loop when a wake-up comes early).
MIN_WAIT = 0.001


class DeadlineTimer:
    """A thread that calls ``tick()`` whenever ``wake_at()`` comes due.

    :param lock: the migration state's lock; ``tick`` and ``wake_at`` are
        called holding it, and :meth:`poke` / :meth:`stop` take it.
    :param wake_at: returns the next time (seconds of nova's ``elapsed``)
        to act at, or None for "until poked".
    :param tick: does what is due; returns True when it changed anything.
    :param name: the thread's name.
    """

    def __init__(self, lock: threading.RLock, wake_at: Callable[[], float |
                 None], tick: Callable[[], bool], name: str) -> None:
        self._cond = threading.Condition(lock)
        self._wake_at = wake_at
        self._tick = tick
        self._name = name
        self._origin = 0.0
        self._shift: float | None = None
        self._stopped = False
        self._thread: threading.Thread | None = None
        #: the OS thread the timer runs on (under eventlet: nova's own)
        self.native_id: int | None = None

    def start(self) -> None:
        """Take the origin (now) and start the thread."""
        self._origin = wall()
        self._thread = threading.Thread(target=self._run, name=self._name,
                                        daemon=True)
        self._thread.start()

    def elapsed(self) -> float:
        """Seconds since nova's ``start`` as far as known (never ahead)."""
        return wall() - self._origin - (self._shift or 0.0)

    def align(self, nova_elapsed: float) -> None:
        """One pass of nova's loop read ``nova_elapsed``: move the origin to
        nova's ``start`` (the smallest non-negative offset seen).  A
        negative offset (a mocked or stepped clock) is ignored."""
        offset = wall() - self._origin - nova_elapsed
        if offset >= 0 and (self._shift is None or offset < self._shift):
            self._shift = offset

    def poke(self) -> None:
        """Something changed: compute the next wake-up again."""
        with self._cond:
            self._cond.notify_all()

    def stop(self, join_timeout: float = 2.0) -> None:
        """End the thread (it finishes a call in progress first)."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(join_timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        self.native_id = threading.get_native_id()
        with self._cond:
            while not self._stopped:
                try:
                    at = self._wake_at()
                    wait = None if at is None else at - self.elapsed()
                    if wait is not None and wait <= 0:
                        if self._tick():
                            continue
                        wait = MIN_WAIT
                except Exception:
                    # Never let the timer die silently: nova's pass stays
                    # the fallback observer.
                    LOG.exception('lmcaps timer %s failed; nova\'s monitor '
                                  'pass takes over', self._name)
                    return
                self._cond.wait(wait)
