"""``lmcaps events``: the instance action events recorded for an instance."""

from __future__ import annotations

import argparse
from typing import Any
from collections.abc import Iterable

from cliff import lister

from lmcaps.cmd import main as cli_main

COLUMNS = ('Request ID', 'Action', 'Event', 'Result', 'Start Time',
           'Finish Time', 'Host', 'Details')


class Events(lister.Lister):
    """List the instance action events of an instance, oldest first."""

    def get_epilog(self) -> str:
        return ''

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = cli_main.one_line_usage(super().get_parser(prog_name))
        parser.add_argument('instance', metavar='INSTANCE',
                            help='Instance UUID, or the name the events '
                                 'were recorded with (a domain name).')
        parser.add_argument('--request-id', metavar='ID',
                            help='Only the events of this request.')
        parser.add_argument('--long', action='store_true',
                            help='Also show the traceback column.')
        return parser

    def take_action(self, parsed_args: argparse.Namespace
                    ) -> tuple[tuple[str, ...], Iterable[tuple]]:
        from lmcaps import events_sql  # SQLAlchemy only for this command
        from lmcaps import validation

        instance = parsed_args.instance
        if instance.startswith('drain-'):
            # a drain's own events, under the id ``lmcaps drain`` printed
            from lmcaps import drain as lmcaps_drain
            validation.instance_key(instance, 'INSTANCE')
            key = lmcaps_drain.drain_key(instance)
        else:
            key = validation.instance_key(instance, 'INSTANCE')
        if parsed_args.request_id:
            validation.request_id(parsed_args.request_id)
        store = events_sql.SQLEventStore.from_conf(cli_main.conf_of(self.app))
        try:
            records = store.list_events(key)
        finally:
            store.close()
        if parsed_args.request_id:
            records = [r for r in records
                       if r.request_id == parsed_args.request_id]
        if not records:
            # an empty table prints nothing: say so on stderr (stdout stays
            # the empty list for -f json/csv), exit code 0
            which = (f' with request id '
                     f'{validation.echo(parsed_args.request_id)}'
                     if parsed_args.request_id else '')
            named = f' ({key})' if key != instance else ''
            self.app.stderr.write(f'lmcaps: no events recorded for '
                                  f'{validation.echo(instance)}{named}'
                                  f'{which}\n')
        columns = COLUMNS + (('Traceback',) if parsed_args.long else ())
        rows = []
        for r in records:
            row = (r.request_id, r.action, r.event, r.result,
                   _time(r.start_time), _time(r.finish_time), r.host,
                   r.details)
            rows.append(row + ((r.traceback,) if parsed_args.long else ()))
        return columns, rows


def _time(value: Any) -> str | None:
    return value.isoformat() if value is not None else None
