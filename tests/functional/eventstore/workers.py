"""Processes that write events at once (tests and benchmarks/bench_events)."""

from __future__ import annotations

import threading
from typing import Any

from lmcaps import events
from lmcaps import events_sql

INSTANCE = '8a1f3a2e-4d5c-4b7a-9e0f-1a2b3c4d5e6f'


def write_events(url: str, worker: int, threads: int, records: int,
                 queue: Any = None) -> tuple[int, list[str]]:
    """``threads`` threads each start and finish ``records`` events.

    Half the events share one action across all writers, so that writers
    also race to create the same action.

    :returns: (events finished, one line per error); also put on ``queue``.
    """
    store = events_sql.SQLEventStore(url)
    done = [0] * threads
    errors: list[str] = []

    def run(thread: int) -> None:
        for i in range(records):
            req = 'req-shared' if i % 2 else f'req-{worker}-{thread}-{i}'
            name = f'ev-{worker}-{thread}-{i}'
            try:
                store.event_start(req, INSTANCE, name, host=f'host-{worker}')
                store.event_finish(req, INSTANCE, name, events.SUCCESS,
                                   details=str(i))
                done[thread] += 1
            except Exception as exc:  # noqa: BLE001 - counted and reported
                errors.append(f'{type(exc).__name__}: {exc}'[:300])

    pool = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    store.close()
    result = (sum(done), errors)
    if queue is not None:
        queue.put(result)
    return result


def first_start(url: str, barrier: Any, worker: int, queue: Any) -> None:
    """Open a store on an empty database together with others; record one."""
    barrier.wait(120)
    try:
        store = events_sql.SQLEventStore(url)
        store.record(f'req-{worker}', INSTANCE, 'first-start', events.SUCCESS)
        store.close()
        queue.put('ok')
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        queue.put(f'{type(exc).__name__}: {exc}'[:300])
