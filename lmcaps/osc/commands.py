"""``openstack lmcaps server migrate`` and ``openstack lmcaps capabilities``.

Bad option values end the command before any request with one line
``<option>: <value> is not allowed; allowed values: ...`` and exit code 1,
as OpenStackClient's own command errors.
"""

from __future__ import annotations

import argparse
from typing import Any

from osc_lib.cli import format_columns
from osc_lib.command import command
from osc_lib import exceptions as osc_exceptions

from lmcaps import conf as lmcaps_conf
from lmcaps import exception
from lmcaps import request as lmcaps_request
from lmcaps import validation
from lmcaps.osc import sdk


def _timeout(value: str | None) -> int | None:
    """``--completion-timeout`` as an int; CommandError naming the option."""
    if value is None:
        return None
    text = value.strip()
    if (not text.isdigit() or len(text) > validation.INT_DIGITS_MAX or
            int(text) > lmcaps_request.MAX_TIMEOUT):
        raise osc_exceptions.CommandError(
            f'--completion-timeout: {validation.echo(value)} is not allowed; '
            f'allowed: an integer number of seconds from 0 (never) to '
            f'{lmcaps_request.MAX_TIMEOUT}')
    return int(text)


def _choice(option: str, value: str | None,
            allowed: tuple[str, ...]) -> str | None:
    if value is not None and value not in allowed:
        raise osc_exceptions.CommandError(
            f'{option}: {validation.echo(value)} is not allowed; allowed '
            f"values: {', '.join(allowed)}")
    return value


class MigrateServer(command.ShowOne):
    """Live-migrate a server with a per-instance completion timeout and
    timeout action (lmcaps fields in nova's os-migrateLive)."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument('server', metavar='<server>',
                            help='Server (name or ID)')
        parser.add_argument(
            '--live', '--live-migration', dest='live', action='store_true',
            required=True,
            help='Live migrate the server (required: lmcaps times only '
                 'live migrations)')
        parser.add_argument(
            '--host', metavar='<hostname>',
            help='Destination compute host, validated by the scheduler '
                 '(needs compute API 2.30)')
        group = parser.add_mutually_exclusive_group()
        group.add_argument(
            '--block-migration', dest='block_migration',
            action='store_const', const=True, default='auto',
            help='Block live migration (default: auto from compute API '
                 '2.25, shared before)')
        group.add_argument(
            '--shared-migration', dest='block_migration',
            action='store_const', const=False,
            help='Shared-storage live migration')
        parser.add_argument(
            '--completion-timeout', metavar='<seconds>',
            help='Absolute seconds the migration may take before the '
                 'timeout action; 0 = never (default: the flavor, then '
                 "the compute's [libvirt] live_migration_completion_timeout "
                 'per GiB)')
        parser.add_argument(
            '--timeout-action', metavar='<action>',
            help="What to do at the timeout: "
                 f"{' | '.join(lmcaps_conf.TIMEOUT_ACTIONS)}")
        parser.add_argument(
            '--force-complete-mode', metavar='<mode>',
            help='How force_complete completes: '
                 f"{' | '.join(lmcaps_conf.FORCE_COMPLETE_MODES)} (auto: "
                 'post-copy where permitted, else pause)')
        return parser

    def take_action(self, parsed_args: argparse.Namespace
                    ) -> tuple[tuple[str, ...], tuple[Any, ...]]:
        timeout = _timeout(parsed_args.completion_timeout)
        action = _choice('--timeout-action', parsed_args.timeout_action,
                         lmcaps_conf.TIMEOUT_ACTIONS)
        mode = _choice('--force-complete-mode',
                       parsed_args.force_complete_mode,
                       lmcaps_conf.FORCE_COMPLETE_MODES)
        conn = self.app.client_manager.lmcaps
        try:
            sent = sdk.live_migrate_server(
                conn, parsed_args.server, host=parsed_args.host,
                block_migration=parsed_args.block_migration,
                timeout_seconds=timeout, on_timeout=action,
                force_complete_mode=mode)
        except exception.LmcapsException as exc:
            raise osc_exceptions.CommandError(str(exc)) from exc
        columns = ('server_id', 'request_id', 'microversion', 'host',
                   'block_migration', 'timeout_seconds', 'on_timeout',
                   'force_complete_mode')
        body = sent.body
        return columns, (sent.server_id, sent.request_id, sent.microversion,
                         body.get('host'), body.get('block_migration'),
                         body.get('timeout_seconds'), body.get('on_timeout'),
                         body.get('force_complete_mode'))


class Capabilities(command.Lister):
    """List each compute host's lmcaps traits and operations from
    placement."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument(
            '--host', metavar='<hostname>',
            help='Only this compute host (its resource provider name)')
        return parser

    def take_action(self, parsed_args: argparse.Namespace
                    ) -> tuple[tuple[str, ...], list[tuple[Any, ...]]]:
        conn = self.app.client_manager.lmcaps
        try:
            hosts = sdk.capabilities(conn, host=parsed_args.host)
        except exception.LmcapsException as exc:
            raise osc_exceptions.CommandError(str(exc)) from exc
        columns = ('Host', 'Resource Provider', 'Operations', 'Traits')
        return columns, [
            (c.host, c.provider_uuid,
             format_columns.ListColumn(c.operations),
             format_columns.ListColumn(c.traits)) for c in hosts]
