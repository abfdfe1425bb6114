"""``lmcaps migrate``: one live migration under lmcaps's pre-checks and monitor.

Like ``virsh migrate --timeout N --timeout-suspend|--timeout-postcopy``,
plus abort as an action, early refusal of what this host cannot do, and
instance action events.  Exit codes: 0 completed, 3 aborted/cancelled
(also when interrupted by SIGINT, SIGTERM or SIGHUP: the migration is
aborted through the monitor), 4 failed, 5 interrupted in post-copy (the
migration goes on; ``lmcaps watch`` records its end); 1 refused by a
pre-check or a driver error, 2 bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

from cliff import show

from lmcaps.cmd import check as check_cmd
from lmcaps.cmd import main as cli_main

LOG = logging.getLogger(__name__)
MIB = 1024 ** 2


def _non_empty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError(
            'an empty destination is not allowed; allowed: a host name or '
            'the backend\'s address of the destination')
    return text.strip()


def _positive_int(text: str) -> int:
    from lmcaps import exception
    from lmcaps import validation
    try:
        return validation.bounded_int(text, 'value', 1, 2 ** 31 - 1)
    except exception.InvalidInput as exc:
        raise argparse.ArgumentTypeError(
            f'{exc.kwargs["value"]} is not allowed; allowed: an integer '
            f'from 1 to {2 ** 31 - 1}') from exc


def is_quiet(app: Any) -> bool:
    """Whether ``lmcaps -q`` was given (cliff's verbose level 0)."""
    options = getattr(app, 'options', None)
    return getattr(options, 'verbose_level', 1) == 0


class ProgressView:
    """Live progress: a bar on a terminal, a log line otherwise.

    The bar is the driver's completed fraction (remaining vs total bytes
    where those are known); markers show when the timeout action fired and
    when it took effect.  Off a terminal a line is written every ``every``
    seconds, and every second once the deadline is less than ``near``
    seconds away or past.  ``quiet`` (``lmcaps -q``) shows nothing.
    """

    def __init__(self, stream: TextIO, every: float = 5.0,
                 near: float = 30.0, quiet: bool = False) -> None:
        self.stream = stream
        self.quiet = quiet
        self.tty = stream.isatty()
        self.every = every
        self.near = near
        self._last = 0.0
        self.marker = ''
        self._live: Any = None

    def note(self, text: str) -> None:
        """A marker such as ``abort fired`` or ``abort took effect``."""
        self.marker = text

    def __call__(self, migration: Any, progress: Any,
                 left: float | None) -> None:
        if self.quiet:
            return
        fraction = progress.completed
        remaining = progress.data_remaining
        rate = progress.transfer_rate
        parts = [f'{progress.phase.value:10}']
        if fraction is not None:
            parts.append(f'{fraction * 100:5.1f} %')
        if remaining is not None:
            parts.append(f'{remaining / MIB:8.1f} MiB left')
        if rate:
            parts.append(f'{rate / MIB:6.1f} MiB/s')
        if progress.iteration:
            parts.append(f'pass {progress.iteration}')
        parts.append('no deadline' if left is None else
                     f'deadline in {left:6.1f} s' if left > 0 else
                     f'deadline passed {-left:5.1f} s ago')
        if self.marker:
            parts.append(f'[{self.marker}]')
        text = '  '.join(parts)
        if self.tty:
            self._live_update(fraction, text)
            return
        every = (1.0 if left is not None and left < self.near
                 else self.every)
        if time.monotonic() - self._last >= every:
            self._last = time.monotonic()
            self.stream.write(f'{migration.spec.instance}: {text}\n')
            self.stream.flush()

    def _live_update(self, fraction: float | None, text: str) -> None:
        """The bar and the line on the terminal, redrawn in place (rich)."""
        from rich import console as rich_console
        from rich import live as rich_live
        from rich import progress_bar
        from rich import table as rich_table
        from rich import text as rich_text
        row = rich_table.Table.grid(padding=(0, 1))
        row.add_row(progress_bar.ProgressBar(
            total=1.0, completed=fraction or 0.0, width=24),
            rich_text.Text(text))          # literal: no markup in names
        if self._live is None:
            self._live = rich_live.Live(
                row, console=rich_console.Console(file=self.stream),
                auto_refresh=False, transient=False)
            self._live.start()
        self._live.update(row, refresh=True)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP raise ``Interrupted`` like SIGINT raises
    KeyboardInterrupt, so a migration is never left unenforced; only the
    first signal counts, and after one, later ones are ignored until the
    process exits."""
    from lmcaps import migrate as lmcaps_migrate

    received: list[int] = []

    def handler(signum: int, _frame: object) -> None:
        if received:
            return          # a second signal changes nothing
        received.append(signum)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise lmcaps_migrate.Interrupted(signal.Signals(signum).name)

    saved = {sig: signal.signal(sig, handler)
             for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, old in saved.items():
            # once interrupted, a late signal (the outcome is being
            # printed) must not kill the process before its exit code
            signal.signal(sig, signal.SIG_IGN if received else old)


class Migrate(show.ShowOne):
    """Live-migrate a guest with a per-instance timeout and action."""

    def get_epilog(self) -> str:
        return ''

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = cli_main.one_line_usage(super().get_parser(prog_name))
        parser.add_argument('instance', metavar='DOMAIN',
                            help='Guest to migrate (libvirt domain name or '
                                 'UUID).')
        parser.add_argument('--dest', required=True, metavar='URI',
                            type=_non_empty,
                            help='Destination, e.g. qemu+tcp://host2/system.')
        parser.add_argument('--driver', metavar='NAME',
                            help='Driver; default: [lmcaps] driver.')
        parser.add_argument('--migrate-uri', metavar='URI',
                            help='Address the guest data goes to, e.g. '
                                 'tcp://10.0.0.2 (libvirt migrate_uri).')
        parser.add_argument('--bandwidth', metavar='MIB/S',
                            type=_positive_int,
                            help='Bandwidth cap in MiB/s (an integer >= 1).')
        parser.add_argument('--block-migration', action='store_true',
                            help='Copy local disks too.')
        check_cmd.add_request_arguments(parser)
        parser.add_argument('--request-id', metavar='ID',
                            help='Request id to record the events under; '
                                 'default: a new req-<uuid>.')
        return parser

    def take_action(self, parsed_args: argparse.Namespace
                    ) -> tuple[tuple[str, ...], tuple[Any, ...]]:
        from lmcaps import events_sql
        from lmcaps import migrate as lmcaps_migrate
        from lmcaps.drivers import base

        from lmcaps import events as lmcaps_events
        from lmcaps import validation

        conf = cli_main.conf_of(self.app)
        validation.name(parsed_args.instance, 'DOMAIN')
        validation.name(parsed_args.dest, '--dest')
        if parsed_args.migrate_uri:
            validation.name(parsed_args.migrate_uri, '--migrate-uri')
        if parsed_args.request_id is not None:
            validation.request_id(parsed_args.request_id)
        body = check_cmd.request_body(parsed_args)
        driver = cli_main.load_driver(conf, parsed_args.driver)
        from lmcaps import drain as lmcaps_drain
        # like drain: the source host (its names, its connection URI) is no
        # destination; nothing is connected yet
        lmcaps_drain.check_destinations(conf, driver, [parsed_args.dest])
        options = {}
        if parsed_args.migrate_uri:
            options['migrate_uri'] = parsed_args.migrate_uri
        spec = base.MigrationSpec(
            instance=parsed_args.instance,
            destination=base.Destination(parsed_args.dest, parsed_args.dest),
            block_migration=parsed_args.block_migration,
            bandwidth_mib=parsed_args.bandwidth, options=options)
        store = lmcaps_events.InstanceKeyed(
            events_sql.SQLEventStore.from_conf(conf), parsed_args.instance)
        view = ProgressView(sys.stderr, quiet=is_quiet(self.app))
        from lmcaps import monitor as lmcaps_monitor
        try:
            with signals_interrupt(), lmcaps_monitor.settled_heap():
                summary = lmcaps_migrate.run(
                    conf, driver, spec, body, store,
                    request_id=parsed_args.request_id, on_progress=view)
        except lmcaps_migrate.MigrationContinues as exc:
            view.close()
            self.app.stderr.write(exc.message + '\n')
            self.exit_code = lmcaps_migrate.EXIT_CONTINUES
            return ('instance', 'outcome'), (parsed_args.instance,
                                             'continues')
        finally:
            view.close()
            driver.close()
            store.close()
        self.exit_code = lmcaps_migrate.EXIT_CODES.get(summary.outcome, 4)
        self.app.stderr.write(summary.line() + '\n')
        data = summary.as_dict()
        if parsed_args.formatter == 'table':
            data['policy'] = ', '.join(
                f"{k}={v['value']} ({v['source']})"
                for k, v in summary.policy.items())
            data['attempts'] = '; '.join(summary.attempts)
        return tuple(data), tuple(data.values())

    def run(self, parsed_args: argparse.Namespace) -> int:
        self.exit_code = 0
        super().run(parsed_args)
        return self.exit_code
