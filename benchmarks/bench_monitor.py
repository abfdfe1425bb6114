"""Timeout monitor at scale: many fake migrations, staggered deadlines.

Every migration dirties memory faster than the link, so none converges and
each reaches its deadline; actions rotate over abort, pause and post-copy.
Prints the reaction latency (``fired_at - deadline``) and the process CPU
use while the monitor works, and fails (exit status 1) when a target is
missed.  Run: ``python -m benchmarks.bench_monitor [--migrations N]``.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import time

from oslo_config import cfg

from lmcaps import conf as lmcaps_conf
from lmcaps import events
from lmcaps import monitor
from lmcaps import policy
from lmcaps.drivers import base
from lmcaps.drivers import fake

TARGET_P99_MS = 100.0
TARGET_CPU = 0.10        # of one core
ACTIONS = (('abort', 'auto', 'abort'),
           ('force_complete', 'pause', 'pause'),
           ('force_complete', 'postcopy', 'postcopy'))


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run(migrations: int, first: float, spread: float, poll_interval: float,
        workers: int) -> dict:
    """Run the scenario; returns the figures measured."""
    conf = cfg.ConfigOpts()
    lmcaps_conf.register_opts(conf)
    conf([], project='lmcaps-bench')
    conf.set_override('permit_post_copy', True, group=lmcaps_conf.GROUP)
    driver = fake.FakeDriver(conf)
    conf.set_override('dirty_rate_mib', 2000.0, group='lmcaps_fake')
    store = events.MemoryEventStore()
    mon = monitor.TimeoutMonitor(store, host='bench',
                                 poll_interval=poll_interval,
                                 workers=workers)
    watches, expected = [], {}
    with mon:
        for i in range(migrations):
            action, mode, expect = ACTIONS[i % len(ACTIONS)]
            spec = base.MigrationSpec(instance=f'bench-{i}', destination='b',
                                      prepare_for=(base.PREPARE_POSTCOPY
                                                   if mode == 'postcopy'
                                                   else frozenset()))
            migration = driver.start_migration(spec)
            body = {'completion_timeout': first + spread * i / migrations,
                    'timeout_action': action, 'force_complete_mode': mode}
            pol = policy.resolve(conf, migration.data_gib,
                                 [(policy.REQUEST, body)])
            watches.append(mon.watch(driver, migration, pol,
                                     instance_uuid=spec.instance,
                                     request_id='req-bench'))
            expected[spec.instance] = expect
        wall0, cpu0 = time.monotonic(), time.process_time()
        outcomes = [w.wait(first + spread + 60) for w in watches]
        wall, cpu = time.monotonic() - wall0, time.process_time() - cpu0

    fired = collections.Counter()
    for instance in expected:
        for ev in store.list_events(instance):
            if ev.event == events.TIMEOUT_ACTION:
                fired[instance] += 1
    wrong = [w.migration.spec.instance for w, o in zip(watches, outcomes)
             if o is None or o.action != expected[w.migration.spec.instance]
             or o.action_error or fired[w.migration.spec.instance] != 1]
    latency = [(o.fired_at - o.deadline) * 1000 for o in outcomes
               if o is not None and o.fired_at is not None]
    return {
        'migrations': migrations,
        'fired_once': migrations - len(wrong),
        'wrong': wrong[:5],
        'phases': collections.Counter(o.phase.value for o in outcomes if o),
        'median_ms': statistics.median(latency) if latency else float('nan'),
        'p99_ms': _percentile(latency, 0.99) if latency else float('nan'),
        'max_ms': max(latency) if latency else float('nan'),
        'wall_s': wall,
        'cpu_s': cpu,
        'cpu_share': cpu / wall if wall else float('nan'),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures; 0 when the targets are met."""
    parser = argparse.ArgumentParser(prog='python -m benchmarks.bench_monitor',
                                     description=__doc__.splitlines()[0])
    parser.add_argument('--migrations', type=int, default=500)
    parser.add_argument('--first', type=float, default=2.0,
                        help='earliest completion timeout, seconds')
    parser.add_argument('--spread', type=float, default=6.0,
                        help='deadlines spread over this many seconds')
    parser.add_argument('--poll-interval', type=float, default=0.5)
    parser.add_argument('--workers', type=int, default=8)
    args = parser.parse_args(argv)
    r = run(args.migrations, args.first, args.spread, args.poll_interval,
            args.workers)
    print(f'monitor: {r["migrations"]} concurrent fake migrations, deadlines '
          f'over {args.first:g}-{args.first + args.spread:g} s, poll '
          f'{args.poll_interval:g} s, {args.workers} workers')
    print(f'  actions fired exactly once: {r["fired_once"]}/{r["migrations"]}'
          + (f' (wrong: {", ".join(r["wrong"])})' if r['wrong'] else ''))
    print(f'  end phases: {dict(r["phases"])}')
    print(f'  reaction latency (fired_at - deadline): median '
          f'{r["median_ms"]:.2f} ms, p99 {r["p99_ms"]:.2f} ms, '
          f'max {r["max_ms"]:.2f} ms (target p99 <= {TARGET_P99_MS:g} ms)')
    print(f'  CPU while watching: {r["cpu_s"]:.2f} s over {r["wall_s"]:.2f} s '
          f'wall = {100 * r["cpu_share"]:.1f}% of one core '
          f'(target <= {100 * TARGET_CPU:g}%)')
    ok = (r['fired_once'] == r['migrations'] and
          r['p99_ms'] <= TARGET_P99_MS and r['cpu_share'] <= TARGET_CPU)
    print('  result:', 'PASS' if ok else 'FAIL')
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
