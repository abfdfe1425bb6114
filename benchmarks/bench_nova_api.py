"""Added latency of the nova-api filter ``lmcaps_migrate_live`` per request.

Times one ``POST /servers/{id}/action`` (os-migrateLive) through
:class:`lmcaps.nova.api.MigrateLiveFilter` in front of a next application
that reads the body and answers 202, against that application alone (no
middleware):

* ``none`` — no middleware;
* ``without`` — the filter, body without lmcaps fields (pass-through);
* ``with`` — the filter, body with ``timeout_seconds``/``on_timeout``/
  ``force_complete_mode``: validation, policy check on nova's enforcer,
  InstanceMapping + instance read in its cell and system metadata saved
  (nova's DB fixtures: SQLite in memory, as nova's own tests), body rewritten.

Prints median and p99 of each and the added latency (median and p99 of
``without`` and ``with`` minus ``none``'s median); fails (exit 1) when a
target is missed.  Needs nova: run with ``.venv-nova/bin/python -m
benchmarks.bench_nova_api [--runs N]``; from another interpreter (e.g.
``.venv/bin/python -m benchmarks nova_api``) it re-runs itself in the
repository's ``.venv-nova``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

#: Targets for the added latency, in milliseconds: a request without the
#: fields costs next to nothing; one with them costs at most a few of
#: nova's own instance reads (SQLite here; a real cell database differs).
TARGETS_MS = {'without': (0.5, 5.0), 'with': (50.0, 100.0)}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOVA_PYTHON = os.path.join(ROOT, '.venv-nova', 'bin', 'python')


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _have_nova() -> bool:
    try:
        import nova.tests.fixtures  # noqa: F401
    except ImportError:
        return False
    return True


def _measure(runs: int, db_runs: int) -> dict[str, list[float]]:
    """Run the timings inside one nova DB-backed TestCase; ms per request."""
    import unittest

    import webob
    from nova import context as nova_context
    from nova import objects
    from nova import test
    from oslo_utils import uuidutils

    from lmcaps.nova import api as nova_api

    def next_app(environ: dict, start_response: Any) -> list[bytes]:
        environ['wsgi.input'].read(int(environ.get('CONTENT_LENGTH') or 0))
        start_response('202 Accepted', [('Content-Length', '0')])
        return []

    results: dict[str, list[float]] = {}

    class Bench(test.TestCase):
        def test_bench(self) -> None:
            ctx = nova_context.RequestContext('admin', 'fake', is_admin=True,
                                              roles=['admin'])
            uuid = uuidutils.generate_uuid()
            cell = self.cell_mappings['cell1']
            with nova_context.target_cell(ctx, cell) as cctxt:
                objects.Instance(context=cctxt, uuid=uuid, project_id='fake',
                                 user_id='fake', system_metadata={}).create()
            objects.InstanceMapping(context=ctx, instance_uuid=uuid,
                                    cell_mapping=cell,
                                    project_id='fake').create()
            plain = {'os-migrateLive': {'host': None,
                                        'block_migration': 'auto'}}
            ours = {'os-migrateLive': {
                'host': None, 'block_migration': 'auto',
                'timeout_seconds': 600, 'on_timeout': 'force_complete',
                'force_complete_mode': 'pause'}}
            wrapped = nova_api.MigrateLiveFilter(next_app)

            def once(app: Any, body: bytes) -> float:
                req = webob.Request.blank(f'/servers/{uuid}/action',
                                          method='POST', body=body)
                req.environ['nova.context'] = ctx
                start = time.perf_counter()
                resp = req.get_response(app)
                elapsed = (time.perf_counter() - start) * 1000
                assert resp.status_int == 202, resp.body
                return elapsed

            for name, app, body, n in (
                    ('none', next_app, plain, runs),
                    ('without', wrapped, plain, runs),
                    ('with', wrapped, ours, db_runs)):
                raw = json.dumps(body).encode()
                for _ in range(min(50, n)):
                    once(app, raw)
                results[name] = [once(app, raw) for _ in range(n)]

    result = unittest.TestResult()
    Bench('test_bench').run(result)
    for _, trace in result.errors + result.failures:
        raise RuntimeError(trace)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='bench_nova_api')
    parser.add_argument('--runs', type=int, default=5000)
    parser.add_argument('--db-runs', type=int, default=500)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not _have_nova():
        if not os.path.exists(NOVA_PYTHON):
            print(f'bench_nova_api: nova is not importable here and '
                  f'{NOVA_PYTHON} is missing; run tools/setup-nova-venv.sh',
                  file=sys.stderr)
            return 1
        return subprocess.call(
            [NOVA_PYTHON, '-m', 'benchmarks.bench_nova_api',
             '--runs', str(args.runs), '--db-runs', str(args.db_runs)],
            cwd=ROOT)
    times = _measure(args.runs, args.db_runs)
    base = statistics.median(times['none'])
    print(f'nova-api filter lmcaps_migrate_live, per request '
          f"({args.runs} runs; {args.db_runs} with fields):")
    for name in ('none', 'without', 'with'):
        values = times[name]
        print(f'  {name:8} median {statistics.median(values):.4f} ms, '
              f'p99 {_percentile(values, 0.99):.4f} ms')
    added = {name: (statistics.median(times[name]) - base,
                    _percentile(times[name], 0.99) - base)
             for name in ('without', 'with')}
    for name, (med, p99) in added.items():
        print(f'  added, {name} fields: median {med:.4f} ms, '
              f'p99 {p99:.4f} ms')
    missed = []
    for name, (med, p99) in added.items():
        goal_med, goal_p99 = TARGETS_MS[name]
        if med > goal_med or p99 > goal_p99:
            missed.append(f'{name} fields: goal median <= {goal_med} ms, '
                          f'p99 <= {goal_p99} ms')
    for text in missed:
        print(f'  missed target: {text}')
    return 1 if missed else 0


if __name__ == '__main__':
    sys.exit(main())
