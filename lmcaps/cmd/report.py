"""``lmcaps report``: the capability matrix of the installed drivers."""

from __future__ import annotations

import argparse
from collections.abc import Iterable

from cliff import lister

from lmcaps.cmd import main as cli_main

from lmcaps import report


class Report(lister.Lister):
    """List what each installed driver declares it supports, per operation.

    Generated from the drivers' own declarations; ``--ini`` prints the
    support-matrix ini that nova's documentation renders.
    """

    def get_epilog(self) -> str:
        return ''  # cliff's default scans every installed distribution

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = cli_main.one_line_usage(super().get_parser(prog_name))
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
            '--strict', action='store_true',
            help='Exit 1 when any installed driver fails to load (its row '
                 'says why either way).')
        parser.add_argument(
            '--verified', action='store_true',
            help='Add the verdict of the last "lmcaps conformance" run of '
                 'each driver (saved under [lmcaps] state_path) next to '
                 'what it declares.')
        return parser

    def run(self, parsed_args: argparse.Namespace) -> int:
        self.failures: dict[str, str] = {}
        if parsed_args.ini:
            decls, self.failures = report.survey(names=parsed_args.drivers)
            self.app.stdout.write(report.to_ini(decls) + '\n')
            code = 0
        else:
            code = super().run(parsed_args)
        for name, reason in self.failures.items():
            self.app.stderr.write(f'lmcaps: driver {name} does not load: '
                                  f'{reason}\n')
        if parsed_args.strict and self.failures:
            return 1
        return code

    def take_action(self, parsed_args: argparse.Namespace
                    ) -> tuple[tuple[str, ...], Iterable[tuple[str, ...]]]:
        decls, self.failures = report.survey(names=parsed_args.drivers)
        if parsed_args.verified:
            from lmcaps.conformance import results
            runs = results.load_last(cli_main.conf_of(self.app).lmcaps.state_path)
            columns = report.COLUMNS + ('Verified', 'Verified At')
            return columns, (report.with_verdicts(decls, runs) +
                             report.failure_rows(self.failures, len(columns)))
        return report.COLUMNS, (report.rows(decls) +
                                report.failure_rows(self.failures))
