"""vmware on vcsim: deadline -> CancelTask accepted; vcsim build and start.

Builds govmomi's vcsim with the lmcaps extensions (tools/vcsim) from
scratch in a private cache (the time CI pays once), starts it a few times,
then relocates N of its VMs at once, each with a per-instance completion
timeout and ``timeout_action=abort``, under one real ``TimeoutMonitor``
driving the vmware driver over oslo.vmware.  For each migration it takes
the reaction: from the deadline to the return of the driver's abort, which
returns once vCenter accepted CancelTask.  It checks that every relocation
ended cancelled with its VM still on the source host and powered on (asked
of vcsim's model) and that CancelTask was sent exactly once per task.

Exit status 1 when a check fails, 2 when vcsim cannot be built here.
Run: ``python -m benchmarks.bench_vmware [--migrations N] [--timeout S]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='bench_vmware')
    parser.add_argument('--migrations', type=int, default=24)
    parser.add_argument('--timeout', type=int, default=2,
                        help='per-instance completion timeout, seconds')
    parser.add_argument('--starts', type=int, default=3)
    args = parser.parse_args(argv)

    from oslo_config import cfg

    from lmcaps import conf as lmcaps_conf
    from lmcaps import drivers
    from lmcaps import events_sql
    from lmcaps import monitor
    from lmcaps import policy
    from lmcaps.drivers import base
    from tests.functional.vmware import vcsim

    ok, reason = vcsim.available()
    if not ok:
        print(f'bench_vmware: cannot build vcsim: {reason}', file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix='lmcaps-bench-cache-') as cache:
        saved = os.environ.get('LMCAPS_CACHE')
        os.environ['LMCAPS_CACHE'] = cache
        try:
            _binary, build_s = vcsim.build()
        finally:
            if saved is None:
                os.environ.pop('LMCAPS_CACHE')
            else:
                os.environ['LMCAPS_CACHE'] = saved
    print(f'vcsim build from source (empty Go cache): {build_s:.1f} s')
    vcsim.build()                      # the cached one the tests use
    starts = []
    for _ in range(args.starts):
        sim = vcsim.Vcsim()
        sim.setUp()
        starts.append(sim.start_seconds)
        sim.cleanUp()
    print(f'vcsim start until it answers: median '
          f'{statistics.median(starts) * 1000:.0f} ms over {len(starts)}')

    sim = vcsim.Vcsim(machines=args.migrations)
    sim.setUp()
    state = tempfile.mkdtemp(prefix='lmcaps-bench-')
    failures = []
    try:
        conf = cfg.ConfigOpts()
        lmcaps_conf.register_opts(conf)
        conf([], project='lmcaps-bench', default_config_files=[])
        conf.set_override('state_path', state, group='lmcaps')
        conf.set_override('monitor_poll_interval', 0.5, group='lmcaps')
        drivers.driver_class('vmware')(conf)
        sim.configure(conf)
        driver = drivers.load('vmware', conf)
        driver.connect()
        store = events_sql.SQLEventStore.from_conf(conf)
        pol = policy.resolve(conf, 2.0, [(policy.REQUEST, {
            'completion_timeout': args.timeout, 'timeout_action': 'abort'})],
            declaration=driver.host_declaration())
        started = []
        for _ in range(args.migrations):
            vm, src, dest = sim.pick()
            sim.next_relocation(vm, 0)          # never ends by itself
            spec = base.MigrationSpec(instance=vm, destination=base.Destination(
                host=dest, address=dest))
            started.append((vm, src, driver.start_migration(spec)))
        with monitor.TimeoutMonitor.from_conf(conf, store) as mon:
            watches = [(vm, src, m, mon.watch(driver, m, pol,
                                              instance_uuid=vm,
                                              request_id=f'req-{vm}'))
                       for vm, src, m in started]
            reactions = []
            for vm, src, migration, watch in watches:
                outcome = watch.wait(args.timeout + 60)
                if outcome is None or outcome.fired_at is None:
                    failures.append(f'{vm}: no action fired ({outcome})')
                    continue
                reactions.append((outcome.fired_at - outcome.deadline) * 1000)
                seen = sim.vm(vm)
                task = sim.task(migration.reference)
                if (outcome.phase is not base.Phase.CANCELLED or
                        seen['host'] != src or
                        seen['power_state'] != 'poweredOn' or
                        task['cancel_calls'] != 1):
                    failures.append(f'{vm}: {outcome.phase.value}, on '
                                    f'{seen}, CancelTask x'
                                    f'{task["cancel_calls"]}')
        driver.close()
        store.close()
    finally:
        sim.cleanUp()
    if reactions:
        print(f'deadline -> CancelTask accepted over {len(reactions)} '
              f'concurrent relocations: median '
              f'{statistics.median(reactions):.1f} ms, p99 '
              f'{_percentile(reactions, 0.99):.1f} ms, max '
              f'{max(reactions):.1f} ms')
    for line in failures:
        print(f'FAILED {line}')
    print('bench_vmware: ' + ('ok' if not failures else
                              f'{len(failures)} failed'))
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
