"""Tests of the event writer: order, batches, a failing store, close."""

from __future__ import annotations

import threading

from oslotest import base as test_base

from lmcaps import eventqueue
from lmcaps import events

INSTANCE = '8a1f3a2e-4d5c-4b7a-9e0f-1a2b3c4d5e6f'


class _Store(events.MemoryEventStore):
    """A memory store that counts batches and can be made to fail."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []
        self.failing = threading.Event()
        self.gate = threading.Event()
        self.gate.set()

    def record(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        self.gate.wait(10)
        if self.failing.is_set():
            raise OSError('database is locked')
        super().record(*args, **kwargs)

    def record_many(self, items) -> None:  # type: ignore[no-untyped-def]
        self.gate.wait(10)
        if self.failing.is_set():
            raise OSError('database is locked')
        self.batches.append(len(items))
        super().record_many(items)


def _event(i: int) -> eventqueue.Pending:
    return eventqueue.Pending('req', INSTANCE, f'ev-{i}', events.SUCCESS,
                              'h', str(i), None)


class EventQueueTest(test_base.BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.store = _Store()
        self.queue = eventqueue.EventQueue(self.store, retry=0.01)
        self.queue.start()
        self.addCleanup(self.queue.close)

    def names(self) -> list[str]:
        return [e.event for e in self.store.list_events(INSTANCE)]

    def test_queued_events_are_written_together_in_order(self) -> None:
        self.store.gate.clear()           # the writer blocks on the first
        seqs = [self.queue.put(_event(i)) for i in range(50)]
        self.store.gate.set()
        self.assertTrue(self.queue.wait_written(seqs[-1], 10))
        self.assertEqual([f'ev-{i}' for i in range(50)], self.names())
        # the first call took what was queued then; far fewer than 50 calls
        self.assertLess(len(self.store.batches), 5)
        self.assertEqual(50, self.queue.written)

    def test_failing_store_loses_nothing_and_duplicates_nothing(self) -> None:
        self.store.failing.set()
        seqs = [self.queue.put(_event(i)) for i in range(20)]
        self.assertFalse(self.queue.wait_written(seqs[-1], 0.2))
        self.assertGreater(self.queue.failures, 0)
        self.store.failing.clear()
        self.assertTrue(self.queue.wait_written(seqs[-1], 10))
        self.assertEqual([f'ev-{i}' for i in range(20)], self.names())

    def test_close_flushes_what_is_queued(self) -> None:
        self.store.gate.clear()
        for i in range(30):
            self.queue.put(_event(i))
        self.store.gate.set()
        self.queue.close()
        self.assertEqual([f'ev-{i}' for i in range(30)], self.names())

    def test_not_started_writes_in_the_caller(self) -> None:
        store = _Store()
        q = eventqueue.EventQueue(store)
        seq = q.put(_event(1))
        self.assertTrue(q.wait_written(seq, 0))
        self.assertEqual(['ev-1'], [e.event
                                    for e in store.list_events(INSTANCE)])


class BufferedTest(test_base.BaseTestCase):
    def test_started_and_finished_events_are_written_on_flush(self):
        from lmcaps import events_sql
        store = events_sql.SQLEventStore('sqlite://')
        self.addCleanup(store.close)
        buffered = events.Buffered(store)
        for i in range(3):
            buffered.event_start(f'req-{i}', INSTANCE, 'pre', host='h')
            buffered.event_finish(f'req-{i}', INSTANCE, 'pre', events.ERROR,
                                  details=f'no {i}')
        buffered.record('req-9', INSTANCE, 'whole', events.SUCCESS)
        self.assertEqual([], store.list_events(INSTANCE))
        self.assertEqual(4, buffered.flush())
        got = store.list_events(INSTANCE)
        self.assertEqual(['pre', 'pre', 'pre', 'whole'],
                         [e.event for e in got])
        self.assertEqual(['no 0', 'no 1', 'no 2', None],
                         [e.details for e in got])
        self.assertTrue(all(e.start_time <= e.finish_time for e in got))
        self.assertEqual('h', got[0].host)
        self.assertEqual(0, buffered.flush())
