"""xenapi driver on the xapi simulator: timeout reaction and polling cost.

Starts the xapi simulator of tests/functional/xenapi on 127.0.0.1 and, with
the real XenAPI SDK,

1. runs N never-converging migrations under ``lmcaps.monitor.TimeoutMonitor``
   with per-instance deadlines and ``timeout_action=abort``: prints the time
   from each deadline until ``task.cancel`` was accepted (median, p99) and
   checks that each VM ended resident on the source, running;
2. watches M migrations at once and counts the XenAPI calls the simulator
   received per polling round (every migration's progress read once), with
   the batched ``event.from`` feed and with one ``task.get_record`` per task.

Run: ``python -m benchmarks.bench_xenapi [--migrations N] [--watched M]``.
Exit status 1 when a migration ended wrongly.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from oslo_config import cfg

from lmcaps import conf as lmcaps_conf
from lmcaps import events
from lmcaps import monitor
from lmcaps import policy
from lmcaps.drivers import base
from lmcaps.drivers import xenapi
from tests.functional.xenapi.sim import fixture as sim_fixture


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _driver(sim: sim_fixture.XapiSim, poll: float) -> xenapi.XenAPIDriver:
    conf = cfg.ConfigOpts()
    lmcaps_conf.register_opts(conf)
    driver = xenapi.XenAPIDriver(conf)
    conf([], project='lmcaps-bench', default_config_files=[])
    for name, value in (('url', sim.url), ('username', sim.username),
                        ('password', sim.password),
                        ('task_poll_interval', poll)):
        conf.set_override(name, value, group=driver.group)
    driver.connect()
    return driver


def reaction(sim: sim_fixture.XapiSim, migrations: int) -> dict:
    driver = _driver(sim, 0.05)
    store = events.MemoryEventStore()
    mon = monitor.TimeoutMonitor(store, host='bench', poll_interval=0.05,
                                 workers=2)
    watches, vms = [], {}
    with mon:
        for i in range(migrations):
            name = f'react-{i}'
            vms[name] = sim.add_vm(name, duration=0, cancel_delay=0.1)
            migration = driver.start_migration(base.MigrationSpec(
                instance=name, destination=base.Destination('dst')))
            body = {'completion_timeout': 1 + (i % 10) * 0.1,
                    'timeout_action': 'abort'}
            pol = policy.resolve(driver.conf, migration.data_gib,
                                 [(policy.REQUEST, body)])
            watches.append(mon.watch(driver, migration, pol,
                                     instance_uuid=name, request_id='req'))
        outcomes = [w.wait(60) for w in watches]
    driver.close()
    latency = [(o.fired_at - o.deadline) * 1000 for o in outcomes
               if o is not None and o.fired_at is not None]
    wrong = []
    for name, outcome in zip(vms, outcomes):
        state = sim.control.sim.vm_state(vms[name])
        if (outcome is None or outcome.phase is not base.Phase.CANCELLED or
                state['resident_on'] != sim.src_host or
                state['power_state'] != 'Running'):
            wrong.append(name)
    return {'migrations': migrations, 'wrong': wrong,
            'median_ms': statistics.median(latency) if latency else
            float('nan'),
            'p99_ms': _percentile(latency, 0.99) if latency else
            float('nan'), 'max_ms': max(latency) if latency else
            float('nan')}


def polling(sim: sim_fixture.XapiSim, watched: int, rounds: int,
            batched: bool) -> dict:
    poll = 0.2
    driver = _driver(sim, poll)
    driver.feed.batched = batched
    migrations = []
    for i in range(watched):
        name = f'poll-{int(batched)}-{i}'
        sim.add_vm(name, duration=0)
        migrations.append(driver.start_migration(base.MigrationSpec(
            instance=name, destination=base.Destination('dst'))))
    for m in migrations:
        driver.get_progress(m)
    sim.control.sim.reset_calls()
    t0 = time.monotonic()
    for _ in range(rounds):
        time.sleep(poll)
        for m in migrations:
            driver.get_progress(m)
    wall = time.monotonic() - t0 - rounds * poll
    calls = sim.control.sim.calls()
    for m in migrations:
        driver.abort(m)
    driver.close()
    total = sum(calls.values())
    return {'watched': watched, 'rounds': rounds, 'batched': batched,
            'calls_per_round': total / rounds, 'calls': calls,
            'round_ms': wall / rounds * 1000}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--migrations', type=int, default=20)
    parser.add_argument('--watched', type=int, default=100)
    parser.add_argument('--rounds', type=int, default=10)
    args = parser.parse_args(argv)
    sim = sim_fixture.XapiSim()
    sim.setUp()
    try:
        react = reaction(sim, args.migrations)
        batched = polling(sim, args.watched, args.rounds, True)
        single = polling(sim, args.watched, args.rounds, False)
    finally:
        sim.cleanUp()
    print(f"deadline -> task.cancel accepted over {react['migrations']} "
          f"migrations: median {react['median_ms']:.1f} ms, p99 "
          f"{react['p99_ms']:.1f} ms, max {react['max_ms']:.1f} ms; "
          f"ended wrongly: {len(react['wrong'])} {react['wrong'][:5]}")
    for fig in (batched, single):
        how = ('event.from feed' if fig['batched'] else
               'task.get_record per task')
        print(f"{fig['watched']} watched migrations, {how}: "
              f"{fig['calls_per_round']:.1f} XenAPI round trips per poll "
              f"round ({fig['round_ms']:.1f} ms a round) {fig['calls']}")
    return 1 if react['wrong'] else 0


if __name__ == '__main__':
    sys.exit(main())
