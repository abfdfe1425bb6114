"""The per-instance request in nova: os-migrateLive fields and their carrier.

nova 34's os-migrateLive body has no such fields (its schemas up to 2.104 set
``additionalProperties: False``).  :data:`MIGRATE_LIVE_PROPERTIES` is the
fragment a nova microversion would merge (:func:`extend_migrate_live`), with
the names of the 2018 spec (review 600613): ``timeout_seconds`` (absolute
seconds, 0 = never) and ``on_timeout`` (``force_complete`` | ``abort``), plus
lmcaps's ``force_complete_mode`` (``auto`` | ``postcopy`` | ``pause``).  The
nova-api middleware :mod:`lmcaps.nova.api` validates with the same fragment.

The values reach the source compute in the instance's system metadata under
:data:`SYSMETA_KEY`, bound to the request id of the live migration
(:func:`stash`), so that a value left there never applies to a later
migration.  System metadata needs no object or RPC change in nova; what is
missing in stock nova 34 is an API handler that calls :func:`stash`; the
paste filter :mod:`lmcaps.nova.api` is one.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

import jsonschema

from lmcaps import conf as lmcaps_conf
from lmcaps import exception
from lmcaps import request as lmcaps_request

#: Properties a nova microversion merges into ``os-migrateLive``.
MIGRATE_LIVE_PROPERTIES: dict[str, Any] = {
    'timeout_seconds': {
        'type': 'integer', 'minimum': 0,
        'maximum': lmcaps_request.MAX_TIMEOUT,
        'description': 'Absolute seconds after which on_timeout is carried '
                       'out; 0 = never. Overrides [libvirt] '
                       'live_migration_completion_timeout (per GiB).',
    },
    'on_timeout': {
        'type': 'string', 'enum': list(lmcaps_conf.TIMEOUT_ACTIONS),
        'description': 'What to do at the timeout: abort, or force_complete '
                       '(post-copy when permitted, else pause).',
    },
    'force_complete_mode': {
        'type': 'string', 'enum': list(lmcaps_conf.FORCE_COMPLETE_MODES),
        'description': 'How force_complete is carried out: postcopy, pause, '
                       'or auto (post-copy when [libvirt] '
                       'live_migration_permit_post_copy is True and the host '
                       'supports it, else pause). Overrides [lmcaps] '
                       'force_complete_mode.',
    },
}

#: The lmcaps fields of an os-migrateLive body as a schema of their own.
MIGRATE_LIVE_SCHEMA: dict[str, Any] = {
    'type': 'object',
    'properties': MIGRATE_LIVE_PROPERTIES,
    'additionalProperties': False,
}
_MIGRATE_LIVE_VALIDATOR = jsonschema.Draft202012Validator(MIGRATE_LIVE_SCHEMA)

#: os-migrateLive field -> lmcaps request field.
API_FIELDS: Mapping[str, str] = {
    'timeout_seconds': 'completion_timeout',
    'on_timeout': 'timeout_action',
    'force_complete_mode': 'force_complete_mode',
}


def api_name(field: str) -> str:
    """The os-migrateLive name of lmcaps request ``field``
    (``completion_timeout`` -> ``timeout_seconds``)."""
    for api, ours in API_FIELDS.items():
        if ours == field:
            return api
    return field


#: System-metadata key carrying a request to the compute (value <= 255 chars).
SYSMETA_KEY = 'lmcaps_request'
_SYSMETA_MAX = 255


def extend_migrate_live(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a nova os-migrateLive schema with the lmcaps fields added.

    :param schema: e.g. ``nova.api.openstack.compute.schemas.migrate_server.
        migrate_live_v2_68``.
    """
    result = copy.deepcopy(dict(schema))
    body = result['properties']['os-migrateLive']
    clash = sorted(set(body['properties']) & set(MIGRATE_LIVE_PROPERTIES))
    if clash:
        raise ValueError(f'os-migrateLive already has {clash}')
    body['properties'].update(copy.deepcopy(MIGRATE_LIVE_PROPERTIES))
    return result


def validate_migrate_live(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The lmcaps fields of an os-migrateLive body, under their API names,
    validated with :data:`MIGRATE_LIVE_SCHEMA` (also what a client sends).

    :raises: InvalidRequest naming the field and its allowed values.
    """
    return lmcaps_request.validate(fields, MIGRATE_LIVE_SCHEMA,
                                   _MIGRATE_LIVE_VALIDATOR)


def from_migrate_live(body: Mapping[str, Any]) -> dict[str, Any]:
    """The lmcaps request in an os-migrateLive body; nova's own fields ignored.

    :param body: the ``os-migrateLive`` object.
    :returns: validated values under lmcaps's names (may be empty).
    :raises: InvalidRequest naming the API field and its allowed values.
    """
    if not isinstance(body, Mapping):
        raise exception.InvalidRequest(
            reason=f'os-migrateLive must be an object, got '
                   f'{type(body).__name__}')
    ours = {k: v for k, v in body.items() if k in MIGRATE_LIVE_PROPERTIES}
    values = validate_migrate_live(ours)
    return lmcaps_request.validate(
        {API_FIELDS[k]: v for k, v in values.items()})


def bound_record(request_id: str, values: Mapping[str, Any]) -> str:
    """System-metadata text of ``values`` tied to ``request_id``:
    ``{"request_id": ..., "values": {...}}`` (JSON, at most 255 characters,
    nova's limit for a system-metadata value).

    :raises: InvalidRequest when it would not fit.
    """
    text = json.dumps({'request_id': request_id, 'values': dict(values)},
                      sort_keys=True, separators=(',', ':'))
    if len(text) > _SYSMETA_MAX:
        raise exception.InvalidRequest(
            reason=f'request id {request_id!r} is too long to carry')
    return text


def read_bound(text: str, key: str) -> tuple[str, Mapping[str, Any]]:
    """(request id, values) of a :func:`bound_record` text.

    :param key: the system-metadata key, for the error message.
    :raises: InvalidRequest when the text is unreadable or malformed.
    """
    try:
        data = json.loads(text)
        owner, values = data['request_id'], data['values']
    except (ValueError, TypeError, KeyError) as exc:
        raise exception.InvalidRequest(
            reason=f'system metadata {key} is unreadable: '
                   f'{type(exc).__name__}: {exc}') from exc
    if not isinstance(owner, str) or not isinstance(values, Mapping):
        raise exception.InvalidRequest(
            reason=f'system metadata {key} is malformed: request_id '
                   f'must be a string and values an object')
    return owner, values


def stash(instance: Any, request_id: str, values: Mapping[str, Any]) -> None:
    """Put validated lmcaps values for one migration on the instance.

    The caller saves the instance (``instance.save()``), before it casts the
    live migration, as a nova API handler would.

    :param request_id: the request id of the live migration
        (``context.request_id``, or the caller's ``X-OpenStack-Request-ID``,
        which nova keeps as ``context.global_request_id``).
    :raises: InvalidRequest.
    """
    clean = lmcaps_request.validate(values)
    instance.system_metadata[SYSMETA_KEY] = bound_record(request_id, clean)


def from_instance(instance: Any, context: Any) -> dict[str, Any]:
    """The values stashed for this live migration, or ``{}``.

    Values stashed for another request id are ignored (a previous migration).

    :raises: InvalidRequest if the stashed text is unreadable or invalid.
    """
    text = (instance.system_metadata or {}).get(SYSMETA_KEY)
    if not text:
        return {}
    owner, values = read_bound(text, SYSMETA_KEY)
    ids = {getattr(context, 'request_id', None),
           getattr(context, 'global_request_id', None)} - {None}
    if owner not in ids:
        return {}
    return lmcaps_request.validate(values)
