"""Pre-checks for one request, with the event recorded in SQLite.

Each run is the request path of one live migration on the source: validate
the per-instance request, resolve the effective policy, run every built-in
check on the fake driver and record the ``lmcaps_precheck_live_migration``
event (one action and one event per request) in a SQLite file in a temporary
directory.  Prints median and p99 and fails (exit status 1) when a target is
missed.  Run: ``python -m benchmarks.bench_precheck [--runs N]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

from oslo_config import cfg

from lmcaps import checks
from lmcaps import conf as lmcaps_conf
from lmcaps import drivers
from lmcaps import events
from lmcaps import events_sql
from lmcaps import policy
from lmcaps import request as lmcaps_request
from lmcaps.checks import base as checks_base
from lmcaps.drivers import base as drivers_base

TARGET_MEDIAN_MS = 1.0
TARGET_P99_MS = 5.0
INSTANCE = '0b7ae5e3-5b6e-4d37-9f38-4a8f6b1d2c3e'
BODY = {'completion_timeout': 600, 'timeout_action': 'force_complete',
        'force_complete_mode': 'pause'}


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run(runs: int, warmup: int, directory: str) -> dict:
    """Time ``runs`` pre-checks; returns the figures in milliseconds."""
    conf = cfg.ConfigOpts()
    lmcaps_conf.register_opts(conf)
    conf([], default_config_files=[])
    conf.set_override('state_path', directory, group=lmcaps_conf.GROUP)
    conf.set_override('enabled_checks', checks.available(),
                      group=lmcaps_conf.GROUP)
    driver = drivers.load('fake', conf)
    driver.connect()
    declaration = driver.host_declaration()
    runner = checks.PreCheckRunner(conf)
    store = events_sql.SQLEventStore.from_conf(conf)
    data_gib = drivers_base.data_gib(4096 * 1024 ** 2)

    def once(i: int) -> None:
        body = lmcaps_request.validate(BODY)
        effective = policy.resolve(conf, data_gib, [(policy.REQUEST, body)])
        ctx = checks_base.CheckContext(INSTANCE, effective, declaration,
                                       conf, request=body)
        runner.run(ctx, store, f'req-bench-{i}')

    for i in range(warmup):
        once(-1 - i)
    times = []
    for i in range(runs):
        start = time.perf_counter()
        once(i)
        times.append((time.perf_counter() - start) * 1000)
    recorded = store.list_events(INSTANCE)
    store.close()
    driver.close()
    return {
        'runs': runs,
        'checks': len(runner.checks),
        'median_ms': statistics.median(times),
        'p99_ms': _percentile(times, 0.99),
        'mean_ms': statistics.fmean(times),
        'max_ms': max(times),
        'events': len(recorded),
        'events_ok': sum(e.result == events.SUCCESS for e in recorded),
        'url': store.url,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures; 0 when the targets are met."""
    parser = argparse.ArgumentParser(
        prog='python -m benchmarks.bench_precheck',
        description=__doc__.splitlines()[0])
    parser.add_argument('--runs', type=int, default=2000)
    parser.add_argument('--warmup', type=int, default=100)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix='lmcaps-bench-') as directory:
        r = run(max(args.runs, 1), args.warmup, directory)
    expected = args.runs + args.warmup
    ok = (r['median_ms'] <= TARGET_MEDIAN_MS and
          r['p99_ms'] <= TARGET_P99_MS and
          r['events'] == r['events_ok'] == expected)
    print('== pre-check with SQL event (fake driver, all built-in checks) ==')
    print(f"store        {r['url']}")
    print(f"runs         {r['runs']} (+{args.warmup} warm-up), "
          f"{r['checks']} checks each")
    print(f"median       {r['median_ms']:.3f} ms   "
          f"(target <= {TARGET_MEDIAN_MS} ms)")
    print(f"p99          {r['p99_ms']:.3f} ms   "
          f"(target <= {TARGET_P99_MS} ms)")
    print(f"mean / max   {r['mean_ms']:.3f} / {r['max_ms']:.3f} ms")
    print(f"events       {r['events']} recorded, {r['events_ok']} Success, "
          f"{expected} expected")
    print('result       ' + ('PASS' if ok else 'FAIL'))
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
