"""``lmcaps drain``: live-migrate the guests of this host away.

Exit codes: 0 every selected guest was migrated (``--dry-run``: the plan
was printed); 1 refused, failed, aborted or not started guests remain
(listed), or a driver error; 2 bad input (unknown guest names, a
destination equal to the source, an invalid policy file, ``--max-parallel
0``, ...), with nothing started.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from typing import Any, TextIO

from cliff import command

from lmcaps.cmd import main as cli_main

LOG = logging.getLogger(__name__)


class Display:
    """A live table on a terminal (rich), plain lines otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self._live: Any = None
        self._last = 0.0

    def line(self, text: str) -> None:
        if self._live is not None:
            self._live.console.print(text, markup=False, highlight=False)
        else:
            self.stream.write(f'{text}\n')
            self.stream.flush()

    def update(self, drainer: Any) -> None:
        if not self.tty:
            return
        now = time.monotonic()
        if self._live is not None and now - self._last < 0.2 and \
                drainer.running:
            return
        self._last = now
        if self._live is None:
            from rich import console as rich_console
            from rich import live
            self._live = live.Live(
                console=rich_console.Console(file=self.stream),
                auto_refresh=False, transient=False)
            self._live.start()
        self._live.update(self._table(drainer), refresh=True)

    def _table(self, drainer: Any) -> Any:
        from rich import table as rich_table
        table = rich_table.Table(title=f'lmcaps drain {drainer.drain_id}')
        for column in ('guest', 'dest', 'phase', 'done', 'rate', 'deadline',
                       'action'):
            table.add_column(column)
        now = time.monotonic()
        for run in drainer.running.values():
            progress = run.watch.progress
            fraction = None if progress is None else progress.completed
            deadline = run.watch.deadline
            attempts = run.watch.attempts
            rate = None if progress is None else progress.transfer_rate
            table.add_row(
                run.item.name, run.dest,
                '-' if progress is None else progress.phase.value,
                '-' if fraction is None else f'{fraction * 100:.0f} %',
                '-' if not rate else f'{rate / 2**20:.0f} MiB/s',
                'none' if deadline is None else
                f'{deadline - now:.0f} s' if deadline > now else 'passed',
                attempts[-1].action if attempts else '')
        counts = {s: 0 for s in ('completed', 'running', 'waiting')}
        failed = 0
        for item in drainer.items:
            if item.status in counts:
                counts[item.status] += 1
            elif item.status != 'waiting':
                failed += 1
        elapsed = now - drainer.started
        eta = drain_eta(drainer, elapsed)
        table.caption = (f"done {counts['completed']}  running "
                         f"{counts['running']}  waiting {counts['waiting']}"
                         f"  failed/refused {failed}  elapsed "
                         f'{elapsed:.0f} s  ETA '
                         f"{'-' if eta is None else f'{eta:.0f} s'}")
        return table

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


def drain_eta(drainer: Any, elapsed: float) -> float | None:
    """Seconds the drain still needs, from the RAM moved so far: the
    ended guests' RAM plus the completed fraction of the running ones,
    against the RAM of those still running or waiting.  None before any
    RAM has moved."""
    moved = left = 0.0
    running = {run.item.name: run for run in drainer.running.values()}
    for item in drainer.items:
        ram = float(item.guest.ram_mib)
        if item.status == 'completed':
            moved += ram
        elif item.name in running:
            progress = running[item.name].watch.progress
            fraction = (progress.completed if progress is not None
                        else None) or 0.0
            moved += ram * fraction
            left += ram * (1 - fraction)
        elif item.status == 'waiting':
            left += ram
    if moved <= 0:
        return None
    return elapsed * left / moved


def _int(text: str | None, what: str, low: int) -> int | None:
    from lmcaps import validation
    if text is None:
        return None
    return validation.bounded_int(text, what, low, 10000)


def _labels(given: list[str]) -> dict[str, str]:
    from lmcaps import exception
    from lmcaps import validation
    out = {}
    for text in given:
        key, sep, value = text.partition('=')
        if not sep or not key:
            raise exception.InvalidInput(
                what='--label', value=validation.echo(text),
                allowed='KEY=VALUE')
        out[key] = value
    return out


class Drain(command.Command):
    """Live-migrate the guests of this host to other hosts, N at a time."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        from lmcaps.cmd import check as check_cmd
        parser = cli_main.one_line_usage(super().get_parser(prog_name))
        parser.add_argument('--dest', action='append', default=[],
                            metavar='URI', help='Destination (repeatable), '
                            'e.g. qemu+tcp://host2/system.')
        parser.add_argument('--migrate-uri', action='append', default=[],
                            metavar='URI', help='Address the guest data '
                            'goes to, e.g. tcp://10.0.0.2 (libvirt '
                            'migrate_uri): none, or one per --dest in the '
                            'same order.')
        parser.add_argument('--driver', metavar='NAME',
                            help='Driver; default: [lmcaps] driver.')
        parser.add_argument('--name', action='append', default=[],
                            metavar='GLOB', help='Guests whose name matches '
                            '(repeatable; default: every guest).')
        parser.add_argument('--uuid', action='append', default=[],
                            metavar='UUID', help='Guests by UUID '
                            '(repeatable).')
        parser.add_argument('--label', action='append', default=[],
                            metavar='KEY=VALUE', help='Only guests with '
                            'this label (repeatable: all must match).')
        parser.add_argument('--max-parallel', metavar='N',
                            help='Migrations at once (default 2; with '
                                 '--resume, the drain\'s own unless given).')
        parser.add_argument('--max-per-dest', metavar='N',
                            help='Migrations at once to one destination.')
        parser.add_argument('--retries', metavar='N', default='0',
                            help='Times a failed migration is tried again '
                                 '(default 0; never after post-copy).')
        parser.add_argument('--policy-file', metavar='PATH',
                            help='YAML rules giving per-guest policies.')
        check_cmd.add_request_arguments(parser)
        parser.add_argument('--bandwidth', metavar='MIB/S',
                            help='Bandwidth cap of every migration.')
        parser.add_argument('--dry-run', action='store_true',
                            help='Print the plan and exit 0.')
        parser.add_argument('--strict', action='store_true',
                            help='Start nothing if any guest is refused.')
        parser.add_argument('--finish-running', action='store_true',
                            help='On SIGINT/SIGTERM let running migrations '
                                 'finish instead of aborting them.')
        parser.add_argument('--resume', metavar='DRAIN_ID',
                            help='Continue a drain whose process died.')
        parser.add_argument('-f', '--format', dest='formatter',
                            choices=('table', 'json'), default='table',
                            help='Summary format (default table).')
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> int:
        from lmcaps.cmd import drain_run
        conf = cli_main.conf_of(self.app)
        return drain_run.run(conf, parsed_args, self.app.stdout,
                             self.app.stderr)

    def run(self, parsed_args: argparse.Namespace) -> int:
        return int(self.take_action(parsed_args))


def print_plan(stream: TextIO, drain_id: str, items: list, fmt: str) -> None:
    """The plan: order, guest, verdict, policy with sources."""
    if fmt == 'json':
        json.dump({'drain_id': drain_id, 'dry_run': True,
                   'guests': [dict(i.as_dict(), outcome=(
                       'refused' if i.refused else 'planned'))
                       for i in items]}, stream, indent=2)
        stream.write('\n')
        return
    stream.write(f'plan of {drain_id} ({len(items)} guests)\n')
    for item in items:
        verdict = f'refused: {item.refused}' if item.refused else 'accepted'
        order = '-' if item.order is None else str(item.order)
        stream.write(f'{order:>4}  {item.name}  {item.guest.ram_mib} MiB  '
                     f'{verdict}\n')
        for field, v in item.policy_with_sources().items():
            stream.write(f'        {field} = {v["value"]} ({v["source"]})\n')


def print_result(stream: TextIO, result: Any, fmt: str) -> None:
    if fmt == 'json':
        json.dump(result.as_dict(), stream, indent=2)
        stream.write('\n')
        return
    counts = ', '.join(f'{n} {k}' for k, n in sorted(result.counts().items()))
    stream.write(f'{result.drain_id}: {counts} in {result.elapsed:.1f} s\n')
    for item in result.items:
        if item.status == 'completed':
            continue
        why = item.refused or item.error or ''
        stream.write(f'  {item.name}: {item.status}'
                     f'{"; " + why if why else ""}; guest: '
                     f'{item.location or "unknown"}\n')
