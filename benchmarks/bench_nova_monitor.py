"""Deadline -> action inside nova-compute: stock nova 34 vs lmcaps, one run.

nova's own ``LibvirtDriver._live_migration_monitor`` (nova 34 from
``.venv-nova``) runs on nova's fake libvirt and the real clock, N
non-converging migrations at once (one thread each; the phase of nova's
0.5 s passes against the deadline drawn uniformly over one pass), first
with lmcaps's hooks disabled (stock nova: the deadline is checked on each
0.5 s pass, a force-complete is queued for the next pass, the action
repeated every pass) then enabled (lmcaps's timer), for
each host-wide timeout action: abort, force-complete by post-copy
(``[libvirt] live_migration_permit_post_copy = True``) and by pause
(``False``).  Both see the same ``[libvirt]`` options
(``live_migration_completion_timeout`` 1 s/GiB x 2 GiB = 2 s).  A job ends
``--end-after`` seconds after the first action reaches the fake domain.

Measured per migration: the deadline (nova's ``start``, its first
``time.time()`` in the monitor, + the timeout) to the first call of
``abortJob`` / ``migrateStartPostCopy`` / ``suspend`` on the fake domain;
re-issues are the further calls.  Prints median, p99, max and re-issues;
exit status 1 when lmcaps misses its target (every migration acted on
once, p99 <= 50 ms).

Run: ``python -m benchmarks.bench_nova_monitor [--migrations N]`` from any
venv: the measurement runs in ``.venv-nova`` (a child process, so nova's
concurrency mode is chosen before anything imports eventlet; ``--threads
eventlet`` for nova's eventlet mode, default native threads as nova 34's
nova-compute).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOVA_VENV = os.path.join(ROOT, '.venv-nova')
TARGET_P99_MS = 50.0
#: host-wide timeout action -> (nova [libvirt] options, the fake call)
SCENARIOS = {
    'abort': ({'live_migration_timeout_action': 'abort',
               'live_migration_permit_post_copy': True}, 'abort'),
    'postcopy': ({'live_migration_timeout_action': 'force_complete',
                  'live_migration_permit_post_copy': True}, 'postcopy'),
    'pause': ({'live_migration_timeout_action': 'force_complete',
               'live_migration_permit_post_copy': False}, 'pause'),
}
TIMEOUT_PER_GIB = 1      # x 2 GiB of the test flavor = a 2 s deadline
MARK = 'BENCH_NOVA_MONITOR '


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _nova_python() -> str | None:
    try:
        import nova  # noqa: F401
    except ImportError:
        path = os.path.join(NOVA_VENV, 'bin', 'python')
        return path if os.access(path, os.X_OK) else None
    return sys.executable


# -- the measurement (child process, in the nova venv) ----------------------

def _measure(args: argparse.Namespace) -> dict[str, Any]:
    """Runs in the child: returns {scenario: {nova|lmcaps: figures}}."""
    import random
    import threading
    import unittest

    from oslo_utils import uuidutils

    from lmcaps.nova import hooks
    from tests.nova import base
    from tests.nova import realtime

    results: dict[str, Any] = {}

    class Bench(base.NovaLmcapsTestCase):
        def round(self, flags: dict[str, Any], expect: str,
                  enabled: bool, seed: int) -> dict[str, Any]:
            self.flags(group='libvirt',
                       live_migration_completion_timeout=TIMEOUT_PER_GIB,
                       **flags)
            self.drvr._parse_migration_flags()
            if enabled:
                hooks.enable()
            else:
                hooks.disable()
            rnd = random.Random(seed)
            # the phase of nova's passes against the deadline, uniform over
            # one pass: on a long migration the passes drift (each takes
            # its own time on top of the 0.5 s sleep)
            jobs = [realtime.Job(self.make_instance(
                uuid=uuidutils.generate_uuid()), end_after=args.end_after,
                first_delay=rnd.uniform(0, 0.5))
                for _ in range(args.migrations)]
            with realtime.Runner(self.drvr, self.context) as runner:
                threads = [threading.Thread(target=runner.run, args=(job,))
                           for job in jobs]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
            deadline = TIMEOUT_PER_GIB * 2
            late, reissues, missing, errors = [], [], 0, []
            for job in jobs:
                if job.error is not None:
                    errors.append(f'{type(job.error).__name__}: {job.error}')
                calls = job.times(expect)
                if not calls or job.start is None:
                    missing += 1
                    continue
                late.append((calls[0] - (job.start + deadline)) * 1000)
                reissues.append(len(job.calls) - 1)
            return {'late_ms': late, 'reissues': reissues,
                    'missing': missing, 'errors': errors[:3]}

        def test_bench(self) -> None:
            seed = 0
            for name, (flags, expect) in SCENARIOS.items():
                results[name] = {}
                for label, enabled in (('nova', False), ('lmcaps', True)):
                    seed += 1
                    results[name][label] = self.round(flags, expect,
                                                      enabled, seed)

    outcome = unittest.TestResult()
    Bench('test_bench').run(outcome)
    for _, text in outcome.errors + outcome.failures:
        raise RuntimeError(text)
    return results


def _child(args: argparse.Namespace) -> int:
    os.environ['OS_NOVA_DISABLE_EVENTLET_PATCHING'] = (
        '1' if args.threads == 'native' else '0')
    from nova import monkey_patch
    monkey_patch.patch()
    results = _measure(args)
    print(MARK + json.dumps(results))
    return 0


# -- the report (any venv) ----------------------------------------------------

def _figures(data: dict[str, Any]) -> dict[str, Any]:
    late = data['late_ms']
    nan = float('nan')
    return {
        'n': len(late),
        'median': statistics.median(late) if late else nan,
        'p99': _percentile(late, 0.99) if late else nan,
        'max': max(late) if late else nan,
        'reissues': sum(data['reissues']),
        'reissues_max': max(data['reissues'], default=0),
        'missing': data['missing'],
        'errors': data['errors'],
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures; 0 when lmcaps meets its
    target, 1 when not, 2 when the nova venv is missing."""
    parser = argparse.ArgumentParser(
        prog='python -m benchmarks.bench_nova_monitor',
        description=__doc__.splitlines()[0])
    parser.add_argument('--migrations', type=int, default=20,
                        help='concurrent migrations per round')
    parser.add_argument('--end-after', type=float, default=2.0,
                        help='seconds from the first action to the job end')
    parser.add_argument('--threads', choices=('native', 'eventlet'),
                        default='native',
                        help="nova's concurrency mode (default: native, as "
                             "nova 34's nova-compute)")
    parser.add_argument('--child', action='store_true',
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args)
    python = _nova_python()
    if python is None:
        print(f'bench_nova_monitor: nova is not installed here and '
              f'{NOVA_VENV} is missing; run tools/setup-nova-venv.sh',
              file=sys.stderr)
        return 2
    proc = subprocess.run(
        [python, '-m', 'benchmarks.bench_nova_monitor', '--child',
         '--migrations', str(args.migrations), '--end-after',
         str(args.end_after), '--threads', args.threads],
        cwd=ROOT, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        print(f'bench_nova_monitor: the nova child failed (exit '
              f'{proc.returncode}):\n{proc.stderr[-3000:]}', file=sys.stderr)
        return 1
    results = json.loads(lines[-1][len(MARK):])
    print(f'nova monitor: deadline -> action call on the fake domain, nova '
          f'34 on its fake libvirt, {args.migrations} concurrent '
          f'non-converging migrations per round, {args.threads} threads, '
          f'deadline {TIMEOUT_PER_GIB * 2} s, job ends '
          f'{args.end_after:g} s after the first action')
    ok = True
    for name, by in results.items():
        for label in ('nova', 'lmcaps'):
            f = _figures(by[label])
            print(f'  {name:8} {label + (" (stock)" if label == "nova" else ""):13}'
                  f' median {f["median"]:7.1f} ms, p99 {f["p99"]:7.1f} ms, '
                  f'max {f["max"]:7.1f} ms; re-issues {f["reissues"]} '
                  f'(max {f["reissues_max"]} per migration); acted on '
                  f'{f["n"]}/{args.migrations}'
                  + (f'; errors: {f["errors"]}' if f['errors'] else ''))
            if label == 'lmcaps':
                ok &= (f['n'] == args.migrations and f['reissues'] == 0
                       and f['p99'] <= TARGET_P99_MS and not f['errors'])
    print(f'  target: lmcaps acts on every migration once, p99 <= '
          f'{TARGET_P99_MS:g} ms; result:', 'PASS' if ok else 'FAIL')
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
