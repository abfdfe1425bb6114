"""``lmcaps check``: run the pre-live-migration checks for one request."""

from __future__ import annotations

import argparse
import logging
import uuid
from collections.abc import Iterable
from typing import Any

from cliff import lister

from lmcaps import exception
from lmcaps.cmd import main as cli_main

LOG = logging.getLogger(__name__)
COLUMNS = ('Check', 'Result', 'Reason')
MIB = 1024 ** 2


def _number_or_text(value: str) -> Any:
    """An int or float when the text is one, else the text itself.

    A non-number is left for the request validation, which names the field
    and what is allowed (argparse would print its usage instead).
    """
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def add_request_arguments(parser: argparse.ArgumentParser) -> None:
    """The per-instance request: ``--request JSON`` or one option a field."""
    parser.add_argument('--request', metavar='JSON',
                        help='The per-instance request as a JSON object, '
                             'e.g. \'{"completion_timeout": 600, '
                             '"timeout_action": "abort"}\'.')
    parser.add_argument('--completion-timeout', metavar='SECONDS',
                        type=_number_or_text,
                        help='Absolute seconds before the timeout action '
                             'fires; 0 = never.')
    parser.add_argument('--timeout-action', metavar='ACTION',
                        help='abort or force_complete.')
    parser.add_argument('--force-complete-mode', metavar='MODE',
                        help='auto, postcopy or pause.')


def request_body(parsed_args: argparse.Namespace) -> dict:
    """The request from ``--request`` or the field options, not validated."""
    fields = {
        'completion_timeout': parsed_args.completion_timeout,
        'timeout_action': parsed_args.timeout_action,
        'force_complete_mode': parsed_args.force_complete_mode,
    }
    given = {k: v for k, v in fields.items() if v is not None}
    if parsed_args.request is not None:
        if given:
            raise exception.InvalidRequest(
                reason='give either --request or --completion-timeout/'
                       '--timeout-action/--force-complete-mode, not '
                       'both')
        from lmcaps import request as lmcaps_request
        body = lmcaps_request.parse_json(parsed_args.request)
    else:
        body = given
    return body


class Check(lister.Lister):
    """Run the enabled pre-checks for a live-migration request.

    Validates the request, loads the driver and its host declaration,
    resolves the effective policy, runs ``[lmcaps] enabled_checks`` and
    records the ``lmcaps_precheck_live_migration`` instance action event
    (see ``lmcaps events``).  Exits 1 when a check refuses.
    """

    def get_epilog(self) -> str:
        return ''

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = cli_main.one_line_usage(super().get_parser(prog_name))
        parser.add_argument('--driver', metavar='NAME',
                            help='Driver to check against; default: '
                                 '[lmcaps] driver.')
        parser.add_argument('--instance', metavar='UUID', required=True,
                            help='Instance UUID (the event is recorded '
                                 'under it).')
        add_request_arguments(parser)
        parser.add_argument('--ram-mib', metavar='MIB', default='0',
                            help='Guest RAM in MiB, for the configured '
                                 'per-GiB timeout (at least 2 GiB counts).')
        parser.add_argument('--request-id', metavar='ID',
                            help='Request id to record the event under; '
                                 'default: a new req-<uuid>.')
        return parser

    def take_action(self, parsed_args: argparse.Namespace
                    ) -> tuple[tuple[str, ...], Iterable[tuple]]:
        from lmcaps import checks
        from lmcaps import events as lmcaps_events
        from lmcaps import events_sql
        from lmcaps import precheck
        from lmcaps import request as lmcaps_request
        from lmcaps import validation
        from lmcaps.drivers import base as drivers_base

        conf = cli_main.conf_of(self.app)
        validation.instance_key(parsed_args.instance, '--instance')
        request_id = validation.request_id(
            parsed_args.request_id or f'req-{uuid.uuid4()}')
        ram_mib = validation.bounded_int(parsed_args.ram_mib, '--ram-mib',
                                         0, validation.RAM_MIB_MAX)
        values = lmcaps_request.validate(request_body(parsed_args))
        runner = checks.PreCheckRunner(conf)   # bad enabled_checks: fail now
        driver = cli_main.load_driver(conf, parsed_args.driver)
        data_gib = drivers_base.data_gib(ram_mib * MIB)
        store = lmcaps_events.InstanceKeyed(
            events_sql.SQLEventStore.from_conf(conf), parsed_args.instance)
        self.refused: exception.MigrationPreCheckFailed | None = None
        try:
            verdicts = precheck.run(
                conf, store, request_id, parsed_args.instance,
                precheck.request_layers(values), driver=driver,
                data_gib=data_gib, runner=runner).report.results
        except exception.MigrationPreCheckFailed as exc:
            self.refused = exc
            verdicts = exc.report.results if exc.report else ()
        finally:
            driver.close()
            store.close()
        LOG.info('event %s of request %s recorded in %s',
                 lmcaps_events.PRECHECK, request_id, store.url)
        return COLUMNS, [(r.name, 'pass' if r.passed else 'fail', r.reason)
                         for r in verdicts]

    def run(self, parsed_args: argparse.Namespace) -> int:
        self.refused = None
        code = super().run(parsed_args)
        if self.refused is not None:
            raise self.refused  # printed as one line, exit code 1
        return code
