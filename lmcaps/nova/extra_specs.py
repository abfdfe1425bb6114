"""Validators of the ``lmcaps:`` flavor extra specs, loaded by nova's API.

Entry point ``lmcaps = lmcaps.nova.extra_specs`` in the
``nova.api.extra_spec_validators`` namespace: nova calls :func:`register` and
then refuses (microversion 2.86+) any ``lmcaps:`` key not listed here and any
value outside its range.  The ranges come from lmcaps's request schema.
"""

from __future__ import annotations

from nova.api.validation.extra_specs import base

from lmcaps import request as lmcaps_request
from lmcaps.nova import policy as nova_policy

_DESCRIPTIONS = {
    'completion_timeout': (
        'Live-migration completion timeout of instances of this flavor, in '
        'absolute seconds (not per GiB); 0 = never. Overrides [libvirt] '
        'live_migration_completion_timeout; a live-migration request '
        'overrides it.'),
    'timeout_action': (
        'What nova-compute does when a live migration of an instance of this '
        'flavor reaches its completion timeout: abort, or force_complete.'),
    'force_complete_mode': (
        'How force_complete is carried out: postcopy (needs [libvirt] '
        'live_migration_permit_post_copy on the source), pause, or auto '
        '(post-copy when permitted, else pause).'),
}


def _value(field: str) -> dict:
    prop = lmcaps_request.REQUEST_SCHEMA['properties'][field]
    if prop['type'] == 'integer':
        return {'type': int, 'min': prop['minimum'], 'max': prop['maximum']}
    return {'type': str, 'enum': list(prop['enum'])}


def register() -> list[base.ExtraSpecValidator]:
    """One validator per lmcaps request field (nova's plugin interface)."""
    return [
        base.ExtraSpecValidator(
            name=nova_policy.spec_key(field),
            description=_DESCRIPTIONS[field],
            value=_value(field))
        for field in lmcaps_request.FIELDS
    ]
