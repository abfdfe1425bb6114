"""Event store figures: many writers at once, and concurrent first starts.

Run as ``.venv/bin/python -m benchmarks.bench_events [--processes 16]
[--threads 16] [--records 8] [--first-starts 12 --rounds 10]``.

- Writers: ``processes`` processes x ``threads`` threads each start and
  finish ``records`` events on SQLite (a file) and on PostgreSQL (a private
  cluster on loopback, tests/postgres.py); the events are then read back
  and counted: lost (never written), half-written (started, not finished),
  and writer errors (each a clean one-line EventStoreError if any).
- First starts: ``rounds`` x ``first-starts`` processes open a store on an
  empty PostgreSQL database at the same moment (schema created under the
  advisory lock); each records one event.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time

from lmcaps import events_sql
from tests import postgres
from tests.functional.eventstore import workers


def writers(url: str, processes: int, threads: int,
            records: int) -> tuple[str, bool]:
    events_sql.SQLEventStore(url).close()   # schema first, not timed
    ctx = multiprocessing.get_context('spawn')
    q = ctx.Queue()
    procs = [ctx.Process(target=workers.write_events,
                         args=(url, w, threads, records, q))
             for w in range(processes)]
    start = time.monotonic()
    for p in procs:
        p.start()
    results = [q.get(timeout=600) for _ in procs]
    elapsed = time.monotonic() - start
    for p in procs:
        p.join(60)
    errors = [e for _done, errs in results for e in errs]
    store = events_sql.SQLEventStore(url)
    evs = store.list_events(workers.INSTANCE)
    store.close()
    expected = processes * threads * records
    names = {e.event for e in evs}
    half = sum(1 for e in evs if e.finish_time is None)
    line = (f'{expected} events by {processes} processes x {threads} '
            f'threads in {elapsed:.1f} s ({expected / elapsed:.0f}/s): '
            f'read back {len(evs)}, lost {expected - len(names)}, '
            f'duplicated {len(evs) - len(names)}, half-written {half}, '
            f'writer errors {len(errors)}')
    if errors:
        line += f' (first: {errors[0]})'
    ok = not errors and half == 0 and len(evs) == len(names) == expected
    return line, ok


def first_starts(cluster: postgres.Cluster, count: int,
                 rounds: int) -> tuple[str, bool]:
    ctx = multiprocessing.get_context('spawn')
    ok = 0
    failures: list[str] = []
    for _ in range(rounds):
        url = cluster.url(cluster.new_database())
        barrier = ctx.Barrier(count)
        q = ctx.Queue()
        procs = [ctx.Process(target=workers.first_start,
                             args=(url, barrier, w, q))
                 for w in range(count)]
        for p in procs:
            p.start()
        for _p in procs:
            result = q.get(timeout=300)
            if result == 'ok':
                ok += 1
            else:
                failures.append(result)
        for p in procs:
            p.join(60)
    line = (f'{ok} of {count * rounds} concurrent first starts succeeded '
            f'({rounds} rounds of {count} processes on an empty database)')
    if failures:
        line += f'; first failure: {failures[0]}'
    return line, ok == count * rounds


def main(argv: list[str] | None = None) -> int:
    """Print the figures; 1 if an event was lost or half-written, an error
    occurred or a first start failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--processes', type=int, default=16)
    parser.add_argument('--threads', type=int, default=16)
    parser.add_argument('--records', type=int, default=8)
    parser.add_argument('--first-starts', type=int, default=12)
    parser.add_argument('--rounds', type=int, default=10)
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        url = f'sqlite:///{os.path.join(tmp, "ev.sqlite")}'
        line, ok = writers(url, args.processes, args.threads, args.records)
        print('sqlite:    ', line, flush=True)
        results.append(ok)
    available, reason = postgres.available()
    if not available:
        print(f'postgresql: not measured: {reason}')
        return 1
    cluster = postgres.Cluster(max_connections=400).start()
    try:
        url = cluster.url(cluster.new_database())
        line, ok = writers(url, args.processes, args.threads, args.records)
        print('postgresql:', line, flush=True)
        results.append(ok)
        line, ok = first_starts(cluster, args.first_starts, args.rounds)
        print('postgresql:', line, flush=True)
        results.append(ok)
    finally:
        cluster.stop()
    return 0 if all(results) else 1


if __name__ == '__main__':
    sys.exit(main())
