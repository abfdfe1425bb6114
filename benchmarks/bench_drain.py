"""``lmcaps drain`` scheduling: makespan, start latency, plan time.

Drains 200 fake guests (RAM 512-2047 MiB, no dirtying, so each migration
takes exactly RAM / bandwidth simulated seconds) at ``--max-parallel 5``
with a SQLite event store, and compares the makespan (first start to last
end) with the ideal, the sum of the migrations' own durations divided by
the parallelism, and with the makespan of the same start order on slots
that never wait (what smallest-first costs by itself).  Also prints the
time from a migration's end (the monitor's outcome) to the next start, and
the time to plan (select, resolve, pre-check, record) 1,000 guests.  Exit
status 1 when a target is missed.  Run: ``python -m benchmarks drain``.
"""

from __future__ import annotations

import argparse
import heapq
import statistics
import sys
import tempfile
import time

from oslo_config import cfg

from lmcaps import conf as lmcaps_conf
from lmcaps import drain
from lmcaps import drainpolicy
from lmcaps import drainer
from lmcaps import events_sql
from lmcaps.drivers import fake

TARGET_MAKESPAN = 1.02        # of the ideal
TARGET_START_P99_MS = 50.0
TARGET_PLAN_S = 2.0
BANDWIDTH_MIB = 1000.0


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _conf(state: str, world: str, time_scale: float,
          poll: float) -> cfg.ConfigOpts:
    conf = cfg.ConfigOpts()
    lmcaps_conf.register_opts(conf)
    conf([], project='lmcaps-bench', default_config_files=[])
    conf.set_override('state_path', state, group='lmcaps')
    conf.set_override('host', 'bench-src', group='lmcaps')
    conf.set_override('monitor_poll_interval', poll, group='lmcaps')
    fake.FakeDriver(conf)                       # registers [lmcaps_fake]
    conf.set_override('world', world, group='lmcaps_fake')
    conf.set_override('time_scale', time_scale, group='lmcaps_fake')
    conf.set_override('bandwidth_mib', BANDWIDTH_MIB, group='lmcaps_fake')
    conf.set_override('dirty_rate_mib', 0.0, group='lmcaps_fake')
    return conf


def list_schedule(durations: list[float], parallel: int) -> float:
    """Makespan of starting ``durations`` in this order on ``parallel``
    slots with no overhead at all (each starts the moment a slot frees)."""
    slots = [0.0] * parallel
    for d in durations:
        heapq.heappush(slots, heapq.heappop(slots) + d)
    return max(slots)


def run_drain(guests: int, parallel: int, time_scale: float,
              poll: float) -> dict:
    """Drain ``guests`` fake guests; returns the figures."""
    with tempfile.TemporaryDirectory() as state:
        conf = _conf(state, 'bench-drain', time_scale, poll)
        driver = fake.FakeDriver(conf)
        for n in range(guests):
            driver.world.add_guest(f'g{n:04d}', 512 + (n * 389) % 1536)
        store = events_sql.SQLEventStore.from_conf(conf)
        drain_id = drain.new_drain_id()
        items = drain.plan(conf, driver, store, driver.list_guests(), [], {},
                           drain_id)
        options = drain.Options(dests=('bench-dst',), max_parallel=parallel)
        result = drainer.Drainer(conf, driver, store, items, options,
                                 drain_id, on_line=lambda _t: None).run()
        store.close()
    durations = [i.guest.ram_mib / BANDWIDTH_MIB / time_scale
                 for i in result.items]
    started = sorted((i for i in result.items if i.started_at is not None),
                     key=lambda i: i.started_at)
    same_order = list_schedule(
        [i.guest.ram_mib / BANDWIDTH_MIB / time_scale for i in started],
        parallel)
    observed = [i.ended_at - i.started_at for i in result.items
                if i.ended_at is not None and i.started_at is not None]
    return {'counts': result.counts(), 'makespan': result.elapsed,
            'ideal': sum(durations) / parallel,
            'ideal_observed': sum(observed) / parallel,
            'same_order': same_order,
            'start_latency': result.start_latency}


def run_plan(guests: int) -> float:
    """Seconds to list, select, resolve and pre-check ``guests`` guests."""
    with tempfile.TemporaryDirectory() as state:
        conf = _conf(state, 'bench-plan', 1.0, 0.5)
        driver = fake.FakeDriver(conf)
        for n in range(guests):
            driver.world.add_guest(f'p{n:04d}', 512 + n % 4096,
                                   {'tier': 'db' if n % 3 else 'web'})
        store = events_sql.SQLEventStore.from_conf(conf)
        store.list_events('00000000-0000-0000-0000-000000000000')  # schema
        rules = drainpolicy.parse({'rules': [
            {'policy': {'completion_timeout_per_gib': 60}},
            {'match': {'labels': {'tier': 'db'}},
             'policy': {'timeout_action': 'abort', 'priority': 5}}]})
        begin = time.perf_counter()
        selected = drain.select(driver.list_guests(), drain.Selection())
        items = drain.plan(conf, driver, store, selected, rules, {},
                           drain.new_drain_id())
        elapsed = time.perf_counter() - begin
        store.close()
    assert len(items) == guests
    return elapsed


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog='bench_drain')
    parser.add_argument('--guests', type=int, default=200)
    parser.add_argument('--parallel', type=int, default=5)
    parser.add_argument('--time-scale', type=float, default=2.0)
    parser.add_argument('--poll', type=float, default=0.01,
                        help='[lmcaps] monitor_poll_interval, seconds')
    parser.add_argument('--plan-guests', type=int, default=1000)
    args = parser.parse_args(argv)
    figures = run_drain(args.guests, args.parallel, args.time_scale,
                        args.poll)
    ratio = figures['makespan'] / figures['ideal']
    lat = [v * 1000 for v in figures['start_latency']]
    p99 = _percentile(lat, 0.99) if lat else 0.0
    plan_s = run_plan(args.plan_guests)
    print(f'bench_drain: {args.guests} fake guests, --max-parallel '
          f'{args.parallel}, monitor_poll_interval {args.poll:g} s, SQLite '
          f'events: {figures["counts"]}')
    print(f'  makespan {figures["makespan"]:.2f} s vs ideal '
          f'{figures["ideal"]:.2f} s (sum of migration times / '
          f'{args.parallel}): ratio {ratio:.4f} (goal <= '
          f'{TARGET_MAKESPAN}); vs observed durations '
          f'{figures["ideal_observed"]:.2f} s')
    print(f'  the same order started with no overhead would take '
          f'{figures["same_order"]:.2f} s (ratio '
          f'{figures["same_order"] / figures["ideal"]:.4f}: the idle tail '
          f'smallest-first leaves); lmcaps adds '
          f'{100 * (figures["makespan"] / figures["same_order"] - 1):.2f} %')
    print(f'  end -> next start over {len(lat)} starts: median '
          f'{statistics.median(lat) if lat else 0:.2f} ms, p99 {p99:.2f} ms,'
          f' max {max(lat) if lat else 0:.2f} ms (goal p99 <= '
          f'{TARGET_START_P99_MS:g} ms)')
    print(f'  plan of {args.plan_guests} guests (list, select, rules, '
          f'pre-checks, events): {plan_s:.2f} s (goal <= '
          f'{TARGET_PLAN_S:g} s)')
    ok = (ratio <= TARGET_MAKESPAN and p99 <= TARGET_START_P99_MS and
          plan_s <= TARGET_PLAN_S and
          figures['counts'] == {'completed': args.guests})
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
