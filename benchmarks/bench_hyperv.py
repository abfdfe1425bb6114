"""Hyper-V over WinRM: deadline -> cancel accepted, WS-Man round trips.

Starts the WS-Management simulator of a Hyper-V host pair (from
tests/functional/hyperv; 127.0.0.1, stopped by PID at the end) and

1. starts N migrations that never converge, watched by one
   ``lmcaps.monitor.TimeoutMonitor`` with a per-instance completion
   timeout and ``timeout_action=abort``; prints deadline -> cancel
   accepted (``Msvm_MigrationJob.RequestStateChange`` answered) median and
   p99, and checks every VM ended running on the source;
2. counts HTTP round trips (WS-Man messages) per progress poll and per
   location query.

Run: ``python -m benchmarks.bench_hyperv [--migrations N] [--timeout S]``.
Exit status 1 when a migration did not end CANCELLED on the source.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
import uuid

from oslo_config import cfg

from lmcaps import conf as lmcaps_conf
from lmcaps import events
from lmcaps import monitor as lmcaps_monitor
from lmcaps import policy as lmcaps_policy
from lmcaps import request as lmcaps_request
from lmcaps.drivers import base
from lmcaps.drivers import hyperv
from tests.functional.hyperv import conformance_backend as cb
from tests.functional.hyperv.sim import fixture


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--migrations', type=int, default=20)
    parser.add_argument('--timeout', type=float, default=1.0,
                        help='per-instance completion timeout, seconds')
    parser.add_argument('--poll-interval', type=float, default=0.5,
                        help='monitor poll interval, seconds')
    args = parser.parse_args(argv)

    sim = fixture.Simulator().start()
    try:
        conf = cfg.ConfigOpts()
        lmcaps_conf.register_opts(conf)
        conf([], project='lmcaps-bench', default_config_files=[])
        driver = hyperv.HyperVDriver(conf)
        cb.driver_config(sim, conf)
        driver.connect()
        store = events.MemoryEventStore()
        mon = lmcaps_monitor.TimeoutMonitor(
            store, host='hv-src', poll_interval=args.poll_interval,
            workers=8)
        mon.start()
        body = lmcaps_request.validate({'completion_timeout': args.timeout,
                                        'timeout_action': 'abort'})
        started = []
        for i in range(args.migrations):
            name = f'bench-{i}-{uuid.uuid4().hex[:6]}'
            sim.add_vm(name, migration_seconds=math.inf, cancel_delay=0.2)
            migration = driver.start_migration(cb.spec(name))
            pol = lmcaps_policy.resolve(conf, migration.data_gib,
                                        [(lmcaps_policy.REQUEST, body)])
            watch = mon.watch(driver, migration, pol,
                              instance_uuid=str(uuid.uuid4()),
                              request_id=f'req-{i}')
            started.append((migration, watch))
        reaction, bad = [], []
        for migration, watch in started:
            outcome = watch.wait(args.timeout + 60)
            deadline = migration.started_at + args.timeout
            if outcome is None or migration.abort_accepted_at is None:
                bad.append(f'{migration.spec.instance}: no abort')
                continue
            reaction.append((migration.abort_accepted_at - deadline) * 1000)
            vm = sim.vm(migration.extra['vm'])
            if outcome.phase is not base.Phase.CANCELLED or \
                    (vm['host'], vm['enabled_state']) != ('hv-src', 2):
                bad.append(f'{migration.spec.instance}: {outcome.phase} '
                           f'{vm}')
        mon.stop()

        # round trips per poll / per location query
        sim.add_vm('bench-poll', migration_seconds=math.inf)
        migration = driver.start_migration(cb.spec('bench-poll'))
        polls, dest = 50, migration.backend.destination
        before = driver._source.round_trips + dest.round_trips
        for _ in range(polls):
            driver.get_progress(migration)
        per_poll = (driver._source.round_trips + dest.round_trips -
                    before) / polls
        before = driver._source.round_trips + dest.round_trips
        t0 = time.perf_counter()
        for _ in range(polls):
            driver.guest_location(migration)
        locate_ms = (time.perf_counter() - t0) / polls * 1000
        per_locate = (driver._source.round_trips + dest.round_trips -
                      before) / polls
        t0 = time.perf_counter()
        for _ in range(polls):
            driver.get_progress(migration)
        poll_ms = (time.perf_counter() - t0) / polls * 1000
        driver.abort(migration)
        driver.close()
    finally:
        sim.stop()

    print(f'hyperv (WS-Man simulator over pywinrm, Basic over loopback '
          f'http), {len(reaction)} migrations, completion_timeout '
          f'{args.timeout:g} s, monitor poll {args.poll_interval:g} s')
    if reaction:
        print(f'  deadline -> cancel accepted: median '
              f'{statistics.median(reaction):.1f} ms, p99 '
              f'{_percentile(reaction, 0.99):.1f} ms, max '
              f'{max(reaction):.1f} ms')
    print(f'  WS-Man round trips per progress poll: {per_poll:g} '
          f'({poll_ms:.1f} ms each)')
    print(f'  WS-Man round trips per location query: {per_locate:g} '
          f'(source + destination, {locate_ms:.1f} ms)')
    print('  RequestStateChange per abort: 1 round trip')
    for line in bad:
        print(f'  FAILED: {line}')
    return 1 if bad or not reaction else 0


if __name__ == '__main__':
    sys.exit(main())
