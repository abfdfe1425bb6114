"""``lmcaps conformance``: prove that a driver does what it declares."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import TYPE_CHECKING

from cliff import lister

from lmcaps.cmd import main as cli_main

if TYPE_CHECKING:
    from lmcaps.conformance import results

COLUMNS = ('Operation', 'Declared', 'Verdict', 'Reason')
#: Row name of the tests of the plugin as a whole (entry point, options).
PLUGIN = 'plugin'


class Conformance(lister.Lister):
    """Run the conformance kit on a driver; print a verdict per operation.

    Each operation is ``verified`` (it works as declared complete or
    partial), ``refused-as-declared`` (declared missing and refused early,
    without side effects) or ``failed``; with ``--test``, what no selected
    test is about is ``not run``.  The whole run is saved under
    ``[lmcaps] state_path`` for ``lmcaps report``.  Exits 1 when a verdict
    is ``failed`` or no test ran.
    """

    def get_epilog(self) -> str:
        return ''  # cliff's default scans every installed distribution

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = cli_main.one_line_usage(super().get_parser(prog_name))
        parser.add_argument('driver', metavar='DRIVER',
                            help='Entry-point name of the driver to test.')
        parser.add_argument(
            '--backend', metavar='MODULE:CLASS',
            help='The lmcaps.conformance.Backend that provides live '
                 'migrations; default: the entry point named DRIVER in '
                 'lmcaps.conformance.backends (FakeBackend for fake).')
        parser.add_argument('--test', action='append', dest='tests',
                            default=[], metavar='PREFIX',
                            help='Only tests whose method name starts with '
                                 'PREFIX (repeatable); the run is not saved.')
        parser.add_argument('--no-save', action='store_true',
                            help='Do not save the run under state_path.')
        parser.add_argument('--details', action='store_true',
                            help='Print the traceback of each failed test '
                                 'to stderr.')
        return parser

    def run(self, parsed_args: argparse.Namespace) -> int:
        self._result: results.RunResult | None = None
        code = super().run(parsed_args)
        if code == 0 and (self._result is None or not self._result.passed):
            return 1   # no verdict, or a failed one: never a pass
        return code

    def take_action(self, parsed_args: argparse.Namespace
                    ) -> tuple[tuple[str, ...], Iterable[tuple]]:
        from lmcaps import conf as lmcaps_conf
        from lmcaps import conformance
        from lmcaps import drivers
        from lmcaps import exception
        from lmcaps.conformance import results

        missing = conformance.missing_kit_modules()
        if missing:
            raise exception.KitNotInstalled(modules=', '.join(missing))
        conf = cli_main.conf_of(self.app)
        drivers.driver_class(parsed_args.driver)  # unknown: a usage error
        factory = conformance.resolve_backend(parsed_args.driver,
                                              parsed_args.backend)
        verbose = self.app.options.verbose_level >= 2
        result = conformance.run(
            parsed_args.driver, factory,
            config_files=list(conf.config_file or []),
            stream=self.app.stderr if verbose else None,
            tests=parsed_args.tests)
        self._result = result
        if parsed_args.details:
            for name, text in result.tracebacks:
                self.app.stderr.write(f'--- {name}\n{text}\n')
        if not (parsed_args.no_save or parsed_args.tests):
            path = results.save(conf[lmcaps_conf.GROUP].state_path, result)
            self.app.stderr.write(f'lmcaps: saved the run to {path}\n')
        return COLUMNS, rows(result)


def rows(result: results.RunResult) -> list[tuple[str, str, str, str]]:
    """One row for the plugin tests, then one per operation."""
    failed = [t for t in result.general if not t.ok]
    out = [(PLUGIN, '-', result.general_verdict,
            '; '.join(f'{t.test}: {t.reason}' for t in failed))]
    for op, res in result.operations.items():
        out.append((op.value, res.declared.value if res.declared else '?',
                    res.verdict, '; '.join(res.reasons)))
    return out
