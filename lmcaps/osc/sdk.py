"""openstacksdk calls for lmcaps: a live migration with a per-instance
timeout and action, and each compute host's lmcaps capabilities.

Both take an ``openstack.connection.Connection`` and use its compute and
placement proxies (keystoneauth adapters), so the caller's authentication,
endpoints, region and microversion settings apply.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from openstack import exceptions as sdk_exceptions
from openstack import utils as sdk_utils

from lmcaps import exception
from lmcaps.nova import request as nova_request
from lmcaps.nova import traits as lmcaps_traits

#: Placement trait every nova compute node provider has.
COMPUTE_NODE_TRAIT = 'COMPUTE_NODE'
#: Placement microversion of the reads (``required`` needs 1.18).
PROVIDERS_MICROVERSION = '1.18'
#: The compute microversions that decide the body, as openstacksdk's and
#: OpenStackClient's own ``server migrate --live``: ``host`` without
#: ``force`` from 2.30, ``block_migration: auto`` from 2.25.
HOST_MICROVERSION = '2.30'
AUTO_MICROVERSION = '2.25'


@dataclasses.dataclass(frozen=True)
class LiveMigration:
    """What :func:`live_migrate_server` sent and nova answered.

    :ivar request_id: nova's ``X-OpenStack-Request-ID`` (``req-<uuid>``):
        the live-migration instance action's id, to which nova-api's filter
        binds the lmcaps values (``openstack server event show SERVER ID``).
    :ivar microversion: the compute microversion of the request ('2.1'
        when none above it was usable).
    """

    server_id: str
    request_id: str | None
    microversion: str
    body: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class HostCapabilities:
    """One compute host's lmcaps traits in placement.

    :ivar traits: sorted lmcaps traits of the provider (``CUSTOM_LMCAPS_*``,
        ``COMPUTE_MIGRATE_POST_COPY``, ``COMPUTE_MIGRATE_AUTO_CONVERGE``).
    :ivar operations: the lmcaps operations those traits say are complete
        (``abort``, ``force_complete_postcopy`` ...), in enum order.
    """

    host: str
    provider_uuid: str
    traits: tuple[str, ...]
    operations: tuple[str, ...]


def migrate_live_fields(timeout_seconds: int | None = None,
                        on_timeout: str | None = None,
                        force_complete_mode: str | None = None
                        ) -> dict[str, Any]:
    """The lmcaps fields of an ``os-migrateLive`` body, validated.

    :param timeout_seconds: absolute seconds before ``on_timeout`` is
        carried out, 0 = never; None leaves nova's host-wide timeout.
    :raises: lmcaps.exception.InvalidRequest naming the field and the
        allowed values.
    """
    given = {'timeout_seconds': timeout_seconds, 'on_timeout': on_timeout,
             'force_complete_mode': force_complete_mode}
    fields = {k: v for k, v in given.items() if v is not None}
    if isinstance(fields.get('timeout_seconds'), bool):
        raise exception.InvalidRequest(
            reason='timeout_seconds: must be of type integer, got bool')
    # the schema nova-api's lmcaps_migrate_live filter validates with
    return nova_request.validate_migrate_live(fields)


def live_migrate_server(conn: Any, server: Any, host: str | None = None,
                        block_migration: bool | str = 'auto',
                        timeout_seconds: int | None = None,
                        on_timeout: str | None = None,
                        force_complete_mode: str | None = None
                        ) -> LiveMigration:
    """Live-migrate ``server`` with a per-instance timeout and action.

    Posts ``os-migrateLive`` to ``/servers/{id}/action`` through
    ``conn.compute`` at the highest of 2.30 / 2.25 / 2.1 the cloud (and the
    connection's ``compute_api_version``, if set) supports, as
    openstacksdk's ``live_migrate_server`` does, with the lmcaps fields
    added.  nova-api needs lmcaps's ``lmcaps_migrate_live`` filter to accept
    them (stock nova answers 400 for unknown fields).

    :param server: a server id, name, or ``openstack.compute.v2.server.
        Server``.
    :param host: destination compute host; None lets the scheduler choose.
    :param block_migration: True, False or 'auto' ('auto' needs 2.25;
        below it 'auto' is sent as False, as OpenStackClient does).
    :param timeout_seconds: absolute seconds, 0 = never.
    :param on_timeout: ``abort`` | ``force_complete``.
    :param force_complete_mode: ``auto`` | ``postcopy`` | ``pause``.
    :raises: lmcaps.exception.InvalidRequest for a bad value (nothing is
        sent); openstack.exceptions.SDKException subclasses for what nova
        answers (ResourceNotFound, BadRequestException with nova's message,
        ForbiddenException ...).
    """
    fields = migrate_live_fields(timeout_seconds, on_timeout,
                                 force_complete_mode)
    if block_migration not in (True, False, 'auto'):
        raise exception.InvalidRequest(
            reason=f'block_migration: {block_migration!r} is not allowed; '
                   f'allowed values: True, False, auto')
    compute = conn.compute
    found = compute.find_server(
        getattr(server, 'id', server), ignore_missing=False)
    body: dict[str, Any] = {'host': host}
    if sdk_utils.supports_microversion(compute, HOST_MICROVERSION):
        microversion = HOST_MICROVERSION
        body['block_migration'] = block_migration
    elif sdk_utils.supports_microversion(compute, AUTO_MICROVERSION):
        microversion = AUTO_MICROVERSION
        body['block_migration'] = block_migration
        if host:
            raise exception.InvalidRequest(
                reason=f'host: a destination needs compute API '
                       f'{HOST_MICROVERSION} or later (without force)')
    else:
        microversion = '2.1'
        body['block_migration'] = block_migration is True
        body['disk_over_commit'] = False
        if host:
            raise exception.InvalidRequest(
                reason=f'host: a destination needs compute API '
                       f'{HOST_MICROVERSION} or later (without force)')
    body.update(fields)
    response = compute.post(
        f'/servers/{found.id}/action', json={'os-migrateLive': body},
        microversion=microversion, headers={'Accept': ''})
    sdk_exceptions.raise_from_response(response)
    return LiveMigration(
        server_id=found.id,
        request_id=response.headers.get('x-openstack-request-id'),
        microversion=microversion, body=body)


def lmcaps_traits_of(traits: Any) -> tuple[str, ...]:
    """The traits lmcaps owns among ``traits``, sorted."""
    return tuple(sorted(t for t in traits
                        if t in lmcaps_traits.OWNED or
                        t.startswith(lmcaps_traits.PREFIX)))


def operations_of(traits: Any) -> tuple[str, ...]:
    """The lmcaps operations (``Operation`` values) ``traits`` declare."""
    have = set(traits)
    return tuple(op.value for op, name in
                 lmcaps_traits.OPERATION_TRAITS.items() if name in have)


def capabilities(conn: Any, host: str | None = None
                 ) -> list[HostCapabilities]:
    """Each compute host's lmcaps traits, read from placement.

    Lists the resource providers with the ``COMPUTE_NODE`` trait (nova's
    compute nodes; named by hypervisor hostname) through ``conn.placement``
    (``GET /resource_providers?required=COMPUTE_NODE`` and
    ``GET /resource_providers/{uuid}/traits`` at placement 1.18; plain REST
    calls of the proxy, so they also work where openstacksdk could not pick
    its placement v1 proxy, e.g. behind an endpoint override whose version
    it did not discover).

    :param host: only the provider of this name.
    :returns: one entry a compute node, sorted by host.
    :raises: lmcaps.exception.InvalidInput when ``host`` names no compute
        node; openstack.exceptions.SDKException from placement.
    """
    placement = conn.placement
    query: dict[str, Any] = {'required': COMPUTE_NODE_TRAIT}
    if host is not None:
        query['name'] = host
    response = placement.get('/resource_providers', params=query,
                             microversion=PROVIDERS_MICROVERSION)
    sdk_exceptions.raise_from_response(response)
    result = []
    for provider in response.json()['resource_providers']:
        got = placement.get(
            f"/resource_providers/{provider['uuid']}/traits",
            microversion=PROVIDERS_MICROVERSION)
        sdk_exceptions.raise_from_response(got)
        ours = lmcaps_traits_of(got.json()['traits'])
        result.append(HostCapabilities(
            host=provider['name'], provider_uuid=provider['uuid'],
            traits=ours, operations=operations_of(ours)))
    if host is not None and not result:
        raise exception.InvalidInput(
            what='host', value=repr(host),
            allowed='the name of a compute node resource provider in '
                    'placement (openstack resource provider list)')
    return sorted(result, key=lambda c: c.host)
