"""``lmcaps watch``: take over migrations whose lmcaps process died.

``lmcaps migrate`` records what it enforces (the migration's reference, its
deadline and policy) in the event store.  If that process is killed
(SIGKILL, OOM, a reboot of the host running it), ``lmcaps watch`` re-attaches
to every migration of this host (``[lmcaps] host``) still open in the store,
enforces its original deadline and action, and records how it ended.
Exit code: the worst of the migrations' (0 completed, 3 aborted, 4 failed,
5 interrupted in post-copy), 0 when there was nothing to watch.  A migration
the backend no longer has is a row with outcome ``gone`` and the guest's
observed location; it does not change the exit code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable

from cliff import lister

from lmcaps.cmd import main as cli_main
from lmcaps.cmd import migrate as migrate_cmd

COLUMNS = ('Instance', 'Outcome', 'Action', 'Guest', 'Elapsed')


class Watch(lister.Lister):
    """Re-attach to this host's running migrations and enforce them."""

    def get_epilog(self) -> str:
        return ''

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = cli_main.one_line_usage(super().get_parser(prog_name))
        parser.add_argument('--driver', metavar='NAME',
                            help='Driver; default: [lmcaps] driver.')
        return parser

    def take_action(self, parsed_args: argparse.Namespace
                    ) -> tuple[tuple[str, ...], Iterable[tuple]]:
        from lmcaps import events_sql
        from lmcaps import migrate as lmcaps_migrate

        conf = cli_main.conf_of(self.app)
        driver = cli_main.load_driver(conf, parsed_args.driver)
        store = events_sql.SQLEventStore.from_conf(conf)
        self.exit_code = 0

        def line(text: str) -> None:
            self.app.stderr.write(text + '\n')

        from lmcaps import monitor as lmcaps_monitor
        gone: list[tuple[str, str]] = []
        try:
            with migrate_cmd.signals_interrupt(), \
                    lmcaps_monitor.settled_heap():
                summaries = lmcaps_migrate.resume(
                    conf, driver, store, on_line=line,
                    on_progress=migrate_cmd.ProgressView(
                        sys.stderr, quiet=migrate_cmd.is_quiet(self.app)),
                    gone=gone)
        except lmcaps_migrate.MigrationContinues as exc:
            line(exc.message)
            self.exit_code = lmcaps_migrate.EXIT_CONTINUES
            return COLUMNS, []
        finally:
            driver.close()
            store.close()
        for summary in summaries:
            self.exit_code = max(self.exit_code, lmcaps_migrate.EXIT_CODES.get(
                summary.outcome, 4))
        if not summaries and not gone:
            line('lmcaps: no running migration to watch on this host')
        rows = [(s.instance, s.outcome, s.action or '-', s.guest_on,
                 f'{s.elapsed:.1f}') for s in summaries]
        # the backend no longer has them: how they ended is not known
        rows += [(name, 'gone', '-', where, '-') for name, where in gone]
        return COLUMNS, rows

    def run(self, parsed_args: argparse.Namespace) -> int:
        self.exit_code = 0
        super().run(parsed_args)
        return self.exit_code
