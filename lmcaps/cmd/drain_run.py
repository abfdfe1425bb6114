"""What ``lmcaps drain`` does, step by step (the command's parser is in
:mod:`lmcaps.cmd.drain`).

Every input is checked before the backend is asked anything; every guest
is pre-checked before any migration starts.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, TextIO

from oslo_config import cfg

from lmcaps import drain as lmcaps_drain
from lmcaps import drainer as lmcaps_drainer
from lmcaps import drainpolicy
from lmcaps import events as lmcaps_events
from lmcaps import exception
from lmcaps import registry
from lmcaps import request as lmcaps_request
from lmcaps import validation
from lmcaps.cmd import check as check_cmd
from lmcaps.cmd import drain as drain_cmd
from lmcaps.cmd import main as cli_main
from lmcaps.cmd import migrate as migrate_cmd
from lmcaps.drivers import base

#: Options that choose guests or policies: a resumed drain keeps its own.
_PLAN_OPTIONS = ('dest', 'migrate_uri', 'name', 'uuid', 'label', 'policy_file',
                 'completion_timeout', 'timeout_action',
                 'force_complete_mode', 'request', 'bandwidth',
                 'max_per_dest')


def _inputs(args: argparse.Namespace) -> tuple[lmcaps_drain.Options,
                                               lmcaps_drain.Selection,
                                               list[drainpolicy.Rule],
                                               dict[str, Any]]:
    """Every input checked, before any backend is asked.

    :raises: InvalidInput, InvalidRequest, InvalidPolicyFile (exit 2).
    """
    options = lmcaps_drain.Options(
        dests=tuple(args.dest),
        max_parallel=drain_cmd._int(args.max_parallel or '2',
                                    '--max-parallel', 1) or 1,
        per_dest=drain_cmd._int(args.max_per_dest, '--max-per-dest', 1),
        retries=drain_cmd._int(args.retries, '--retries', 0) or 0,
        finish_running=args.finish_running,
        migrate_uris=lmcaps_drain.pair_migrate_uris(args.dest,
                                                    args.migrate_uri))
    lmcaps_drain.check_options(options)
    for name in args.name:
        validation.name(name, '--name')
    for given in args.uuid:
        if not validation.is_uuid(given):
            raise exception.InvalidInput(what='--uuid',
                                         value=validation.echo(given),
                                         allowed='a UUID')
    selection = lmcaps_drain.Selection(tuple(args.name), tuple(args.uuid),
                                       drain_cmd._labels(args.label))
    command_line: dict[str, Any] = lmcaps_request.validate(
        check_cmd.request_body(args))
    if args.bandwidth is not None:
        command_line['bandwidth_mib'] = validation.bounded_int(
            args.bandwidth, '--bandwidth', 1, 2 ** 31 - 1)
    rules = ([] if args.policy_file is None
             else drainpolicy.load(args.policy_file))
    return options, selection, rules, command_line


def run(conf: cfg.ConfigOpts, args: argparse.Namespace, out: TextIO,
        err: TextIO) -> int:
    """Run ``lmcaps drain``; returns the exit code (errors raise)."""
    from lmcaps import events_sql
    if args.resume is not None:
        given = [f'--{n.replace("_", "-")}' for n in _PLAN_OPTIONS
                 if getattr(args, n) not in (None, [], False)]
        if given:
            raise exception.InvalidInput(
                what='option', value=', '.join(given),
                allowed='none of the planning options with --resume (the '
                        'drain keeps its recorded plan)')
        validation.request_id(args.resume)
    else:
        options, selection, rules, command_line = _inputs(args)
    store = events_sql.SQLEventStore.from_conf(conf)
    driver_name = args.driver
    if args.resume is not None and driver_name is None:
        # the drain's own driver, as recorded in its plan
        try:
            driver_name = lmcaps_drain.load(store, args.resume).plan.get(
                'driver')
        except BaseException:
            store.close()
            raise
    try:
        driver = cli_main.load_driver(conf, driver_name)
    except BaseException:
        store.close()
        raise
    display = drain_cmd.Display(err)
    try:
        if args.resume is not None:
            return _resume(conf, driver, store, args, out, display)
        dests = lmcaps_drain.check_destinations(conf, driver, options.dests)
        options = dataclasses.replace(options, dests=tuple(dests))
        listed = driver.list_guests()
        guests = lmcaps_drain.select(listed, selection)
        if listed and not guests:
            # each selector matched some guest, together none
            display.line(f'lmcaps: warning: --name/--uuid/--label together '
                         f'select none of the {len(listed)} guests of this '
                         f'host')
        for rule in drainpolicy.unmatched(rules, guests):
            display.line(f'lmcaps: warning: {rule.source} matches none of '
                         f'the {len(guests)} selected guests')
        drain_id = lmcaps_drain.new_drain_id()
        items = lmcaps_drain.plan(conf, driver, store, guests, rules,
                                  command_line, drain_id)
        refused = [i for i in items if i.refused]
        if args.dry_run:
            drain_cmd.print_plan(out, drain_id, items, args.formatter)
            return 0
        for item in refused:
            display.line(f'{item.name}: refused: {item.refused}')
        if args.strict and refused:
            display.line(f'--strict: {len(refused)} of {len(items)} guests '
                         'refused; nothing started')
            drain_cmd.print_plan(out, drain_id, items, args.formatter)
            return 1
        lmcaps_drain.record_plan(store, conf, driver, drain_id, options,
                                 items)
        to_go = len(items) - len(refused)
        display.line(f"{drain_id}: {to_go} guest{'' if to_go == 1 else 's'} "
                     f'to migrate, {len(refused)} refused; at most '
                     f'{options.max_parallel} at once')
        drainer = lmcaps_drainer.Drainer(
            conf, driver, store, items, options, drain_id,
            on_change=display.update, on_line=display.line)
        return _finish(drainer, None, out, display, args.formatter)
    finally:
        display.close()
        driver.close()
        store.close()


def _finish(drainer: lmcaps_drainer.Drainer, before: Any, out: TextIO,
            display: drain_cmd.Display, fmt: str) -> int:
    from lmcaps import monitor as lmcaps_monitor
    with migrate_cmd.signals_interrupt(), lmcaps_monitor.settled_heap():
        result = drainer.run(before)
    display.close()
    drain_cmd.print_result(out, result, fmt)
    return result.exit_code


def _resume(conf: cfg.ConfigOpts, driver: base.LiveMigrationDriver,
            store: lmcaps_events.EventStore, args: argparse.Namespace,
            out: TextIO, display: drain_cmd.Display) -> int:
    """Re-attach to a drain whose process is gone, and continue it.

    Guests that ended keep their outcome, except those the drain's
    interruption left (not started, or aborted by it), which are planned
    again; a started one is re-attached through its open watch, else
    located (asked of the backend): on the destination it counts as
    migrated, on the source it waits again; waiting guests are pre-checked
    again with their recorded policy.
    """
    import uuid
    from lmcaps import checks
    # bad input first (exit 2), before the store or the backend is asked
    parallel = (None if args.max_parallel is None else
                drain_cmd._int(args.max_parallel, '--max-parallel', 1))
    stored = lmcaps_drain.load(store, args.resume)
    # each resume's own request ids: a later resume never mixes its events
    # with an earlier one's
    resume_n = uuid.uuid4().hex[:8]
    plan = stored.plan
    if plan.get('driver') != driver.name:
        raise exception.InvalidInput(
            what='--driver', value=validation.echo(driver.name),
            allowed=f"the drain's driver {plan.get('driver')!r}")
    if registry._alive(plan.get('pid')):
        raise exception.LmcapsException(
            f"{args.resume} is still run by process {plan['pid']}")
    options = stored.options
    if parallel is not None:
        options = dataclasses.replace(options, max_parallel=parallel)
    if args.finish_running:
        options = dataclasses.replace(options, finish_running=True)
    driver.connect()
    runner = checks.PreCheckRunner(conf)
    host = conf.lmcaps.host
    watches = {w.request_id: w for w in registry.open_watches(store, host)}
    items: list[lmcaps_drain.Item] = []
    adopt: list[tuple[lmcaps_drain.Item, base.Migration, str, str]] = []
    for data in plan['items']:
        item = lmcaps_drain.stored_item(data)
        items.append(item)
        if item.refused is not None:
            item.status = 'refused'
            continue
        ended = stored.ended.get(item.name)
        if ended is not None and ended.get('interrupted'):
            # stopped by the drain's own interruption: migrate it again
            display.line(f"{item.name}: {ended['outcome']} when "
                         f"{ended['interrupted']} stopped the drain; "
                         'planned again')
        elif ended is not None:
            item.status = ended['outcome']
            item.destination = ended.get('destination')
            item.location = ended.get('guest_on')
            item.attempts = int(ended.get('attempts') or 0)
            item.error = ended.get('error')
            continue
        found = next((w for rid, w in watches.items()
                      if rid == item.request_id or
                      rid.startswith(item.request_id + '.')), None)
        if found is not None:
            try:
                migration = driver.reattach(found.ref)
            except exception.MigrationGone:
                migration = None
            if migration is not None:
                item.policy, item.attempts = found.policy, 1
                adopt.append((item, migration,
                              found.ref.spec.destination.host,
                              found.request_id))
                display.line(f'{item.name}: re-attached to '
                             f'{found.ref.reference}')
                continue
        started = stored.started.get(item.name)
        if started is not None:
            dest = started['destination']
            spec = base.MigrationSpec(item.name,
                                      base.Destination(dest, dest))
            where = driver.guest_location(base.Migration(spec=spec,
                                                         data_gib=0.0))
            if where.host is base.GuestHost.DESTINATION:
                item.status, item.destination = 'completed', dest
                item.location = str(where)
                continue
        again = lmcaps_drain.plan_item(
            conf, driver, store, runner, item.guest, item.request_id +
            f'.resumed-{resume_n}', item.layers, item.priority, item.bandwidth_mib,
            item.data_gib)
        again.order = item.order
        items[-1] = again
    display.line(f'{args.resume}: resuming; {len(adopt)} re-attached, '
                 f"{sum(i.status == 'waiting' for i in items)} waiting; at most "
                 f'{options.max_parallel} at once')
    drainer = lmcaps_drainer.Drainer(
        conf, driver, store, items, options, args.resume,
        on_change=display.update, on_line=display.line)

    def before(d: lmcaps_drainer.Drainer) -> None:
        for item, migration, dest, rid in adopt:
            d.adopt(item, migration, dest, rid)

    return _finish(drainer, before, out, display, args.formatter)
