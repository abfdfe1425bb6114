"""Events written off the monitor's hot path: a bounded queue, one writer.

A timeout action must never wait for a database: the monitor puts each
event on a bounded queue and one writer thread stores them in order.  A
store that fails (locked, unreachable) is retried with backoff, so events
are not lost while it recovers; :meth:`EventQueue.close` flushes what is
queued, waiting at most ``flush_timeout`` seconds, and logs (at ERROR, in
full) any event it could not store by then.  When the queue is full,
``put`` waits for room: memory stays bounded and nothing is dropped.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time

from lmcaps import events

LOG = logging.getLogger(__name__)

#: Events kept in memory while the store is slow.
QUEUE_SIZE = 100_000


@dataclasses.dataclass(frozen=True)
class Pending:
    """One event to record (``EventStore.record``'s arguments)."""

    request_id: str
    instance_uuid: str
    event: str
    result: str
    host: str | None
    details: str | None
    traceback: str | None
    action: str = events.LIVE_MIGRATION


class EventQueue:
    """Records events on ``store`` from a thread of its own.

    :param store: the event store.
    :param retry: first wait after a failed write, seconds (doubles, at
        most 5 s).
    :param flush_timeout: how long :meth:`close` waits for the queue to
        drain, seconds.
    """

    def __init__(self, store: events.EventStore, *, retry: float = 0.05,
                 flush_timeout: float = 120.0,
                 size: int = QUEUE_SIZE) -> None:
        self.store = store
        self.retry = retry
        self.flush_timeout = flush_timeout
        self._queue: queue.Queue[tuple[int, Pending] | None] = queue.Queue(
            size)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._closing = False
        self._seq = 0          # last sequence number given out
        self._stored = 0       # every event up to this one is handled
        #: events stored, and write attempts that failed (for benchmarks)
        self.written = 0
        self.failures = 0

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name='lmcaps-events', daemon=True)
                self._thread.start()

    def put(self, item: Pending) -> int:
        """Queue one event; returns its sequence number.

        Written at once (in the caller) if the queue is not started.
        """
        with self._lock:
            self._seq += 1
            seq = self._seq
            threaded = self._thread is not None and not self._closing
        if not threaded:
            self._write(item, once=True)
            self._handled(seq)
            return seq
        self._queue.put((seq, item))
        return seq

    def wait_written(self, seq: int, timeout: float | None = None) -> bool:
        """Wait until event ``seq`` (and every one before) was handled."""
        with self._done:
            return self._done.wait_for(lambda: self._stored >= seq, timeout)

    def _handled(self, seq: int) -> None:
        with self._done:
            self._stored = max(self._stored, seq)
            self._done.notify_all()

    def close(self) -> None:
        """Write what is queued (bounded by ``flush_timeout``), then stop."""
        with self._lock:
            thread, self._closing = self._thread, True
        if thread is None:
            return
        self._queue.put(None)
        thread.join(self.flush_timeout)
        if thread.is_alive():
            left = []
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    left.append(item[1])
            LOG.error('Event store %r still failing after %.0f s: %d '
                      'events not recorded: %r', self.store,
                      self.flush_timeout, len(left), left)
        self._handled(self._seq)   # nobody waits for what cannot come

    def _run(self) -> None:
        while True:
            entry = self._queue.get()
            if entry is None:
                return
            seq, item = entry
            self._write(item)
            self._handled(seq)

    def _write(self, item: Pending, once: bool = False) -> None:
        wait = self.retry
        while True:
            try:
                self.store.record(item.request_id, item.instance_uuid,
                                  item.event, item.result, host=item.host,
                                  details=item.details,
                                  traceback=item.traceback,
                                  action=item.action)
                self.written += 1
                return
            except Exception as exc:
                self.failures += 1
                if once:
                    LOG.exception('Could not record event %s of instance '
                                  '%s', item.event, item.instance_uuid)
                    return
                if self.failures == 1 or self.failures % 100 == 0:
                    LOG.warning('Event store failing (%s); retrying %s of '
                                '%s', exc, item.event, item.instance_uuid)
                time.sleep(wait)
                wait = min(5.0, wait * 2)
