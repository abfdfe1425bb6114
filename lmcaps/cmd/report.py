"""``lmcaps report``: the capability matrix of the installed drivers."""

from __future__ import annotations

import argparse
from collections.abc import Iterable

from cliff import lister

from lmcaps import report


class Report(lister.Lister):
    """List what each installed driver declares it supports, per operation.

    Generated from the drivers' own declarations; ``--ini`` prints the
    support-matrix ini that nova's documentation renders.
    """

    def get_epilog(self) -> str:
        return ''  # cliff's default scans every installed distribution

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument(
            '--driver', action='append', dest='drivers', default=[],
            metavar='NAME',
            help='Only this driver (repeatable); default: every installed '
                 'driver.')
        parser.add_argument(
            '--ini', action='store_true',
            help='Print the support-matrix ini (nova\'s '
                 'doc/source/user/support-matrix.ini format) instead of '
                 'rows; -f is ignored.')
        parser.add_argument(
            '--verified', action='store_true',
            help='Add the verdict of the last "lmcaps conformance" run of '
                 'each driver (saved under [lmcaps] state_path) next to '
                 'what it declares.')
        return parser

    def run(self, parsed_args: argparse.Namespace) -> int:
        if parsed_args.ini:
            decls = report.declarations(names=parsed_args.drivers)
            self.app.stdout.write(report.to_ini(decls) + '\n')
            return 0
        return super().run(parsed_args)

    def take_action(self, parsed_args: argparse.Namespace
                    ) -> tuple[tuple[str, ...], Iterable[tuple[str, ...]]]:
        decls = report.declarations(names=parsed_args.drivers)
        if parsed_args.verified:
            from lmcaps.conformance import results
            runs = results.load_last(self.app.conf.lmcaps.state_path)
            return (report.COLUMNS + ('Verified', 'Verified At'),
                    report.with_verdicts(decls, runs))
        return report.COLUMNS, report.rows(decls)
