"""The OpenStackClient plugin module of lmcaps (``openstack lmcaps ...``).

OpenStackClient loads it from the ``openstack.cli.extension`` entry point
``lmcaps``, adds :func:`build_option_parser`'s options to its parser, and
loads the commands of the entry-point group ``openstack.lmcaps.v1``
(``openstack.<API_NAME>.v<major of --os-lmcaps-api-version>``).  The
client, ``client_manager.lmcaps``, is OSC's openstacksdk ``Connection``:
the commands talk to nova and placement with the session, endpoints and
microversion settings the user gave OSC.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from osc_lib import utils

LOG = logging.getLogger(__name__)

API_NAME = 'lmcaps'
#: Attribute of OSC's parsed options (``--os-lmcaps-api-version``).
API_VERSION_OPTION = 'os_lmcaps_api_version'
DEFAULT_API_VERSION = '1'
API_VERSIONS = ('1',)


def make_client(instance: Any) -> Any:
    """The client of ``openstack lmcaps``: OSC's openstacksdk Connection.

    :param instance: OSC's ``ClientManager``.
    """
    LOG.debug('lmcaps client: openstacksdk connection %s',
              instance.sdk_connection)
    return instance.sdk_connection


def build_option_parser(
        parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--os-lmcaps-api-version`` to OSC's global options."""
    parser.add_argument(
        '--os-lmcaps-api-version',
        metavar='<lmcaps-api-version>',
        default=utils.env('OS_LMCAPS_API_VERSION'),
        help=f'lmcaps plugin command version, default={DEFAULT_API_VERSION} '
             f'(Env: OS_LMCAPS_API_VERSION)')
    return parser
