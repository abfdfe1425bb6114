"""``lmcaps db upgrade`` / ``lmcaps db version``: the event database schema."""

from __future__ import annotations

from typing import Any

import argparse

from cliff import show

from lmcaps.cmd import main as cli_main


class Upgrade(show.ShowOne):
    """Upgrade the event database to the newest schema revision.

    Safe to run on many hosts at once, and while lmcaps runs: the upgrade
    takes a lock (PostgreSQL advisory lock; SQLite write lock).  lmcaps also
    upgrades on first use, so this is for operators who upgrade explicitly.
    """

    def get_epilog(self) -> str:
        return ''

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        return cli_main.one_line_usage(super().get_parser(prog_name))

    def take_action(self, parsed_args: argparse.Namespace
                    ) -> tuple[tuple[str, ...], tuple[Any, ...]]:
        from lmcaps import events_sql

        store = events_sql.SQLEventStore.from_conf(cli_main.conf_of(self.app),
                                                   upgrade=False)
        try:
            before, after = store.upgrade()
        finally:
            store.close()
        return (('Database', 'From revision', 'To revision'),
                (store.url, before or '(none)', after))


class Version(show.ShowOne):
    """Show the event database's schema revision and the newest one."""

    def get_epilog(self) -> str:
        return ''

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        return cli_main.one_line_usage(super().get_parser(prog_name))

    def take_action(self, parsed_args: argparse.Namespace
                    ) -> tuple[tuple[str, ...], tuple[Any, ...]]:
        from lmcaps import db
        from lmcaps import events_sql

        store = events_sql.SQLEventStore.from_conf(cli_main.conf_of(self.app),
                                                   upgrade=False)
        try:
            with store._guard(), store.engine.connect() as conn:
                current = db.read_revision(
                    conn.execution_options(lmcaps_read_only=True))
        finally:
            store.close()
        return (('Database', 'Revision', 'Newest revision'),
                (store.url, current or '(none)', db.head()))
