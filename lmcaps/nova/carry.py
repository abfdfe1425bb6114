"""The resolved per-instance values, from the source pre-check to the monitor.

The source pre-check (``check_can_live_migrate_source``) resolves the
per-instance values once (:func:`lmcaps.nova.policy.resolve_instance`); the
monitor (``_live_migration_monitor``, in the later ``live_migration`` cast to
the same nova-compute) enforces exactly those, so a change of the owner's
instance metadata in between changes nothing.  The resolution is carried
two ways, both tied to the live migration's request id
(``context.request_id``, the same in both calls):

* in process: a record keyed by instance uuid and request id (the last
  :data:`RECENT` pre-checks), the common case;
* in the instance's system metadata, key :data:`SYSMETA_KEY`, as JSON
  ``{"request_id": ..., "values": {field: [value, source]}}`` (at most 255
  characters, nova's limit), so that it survives a restart of nova-compute
  between the two calls (the conductor's cast then waits in the queue).
  The instance nova hands to ``live_migration`` is the conductor's copy,
  loaded before the pre-check wrote the key, so the monitor reads the key
  from the database (one conductor call), and only when the in-process
  record is missing.  Owners cannot read or write system metadata.

The notes of a resolution (owner values ignored or clamped) are recorded by
the pre-check and kept in process only.  When neither record is found (a
pre-check that could not write it, or ran before lmcaps was upgraded), the
monitor resolves again with the same bounded function and logs that it did
(:func:`recall` returns None).
"""

from __future__ import annotations

import collections
import threading
from typing import Any

from nova import objects
from oslo_log import log as logging

from lmcaps import request as lmcaps_request
from lmcaps.nova import policy as nova_policy
from lmcaps.nova import request as nova_request

LOG = logging.getLogger(__name__)

#: System-metadata key of the carried resolution.
SYSMETA_KEY = 'lmcaps_resolved'
#: How many resolutions the process keeps (oldest dropped first).
RECENT = 512

_lock = threading.Lock()
_recent: collections.OrderedDict[tuple[str, str], nova_policy.Resolution] = \
    collections.OrderedDict()


def encode(request_id: str, resolution: nova_policy.Resolution) -> str:
    """The system-metadata text of ``resolution`` for ``request_id``
    (:func:`lmcaps.nova.request.bound_record`).

    :raises: InvalidRequest when it would not fit in 255 characters.
    """
    return nova_request.bound_record(request_id, {
        f: [v, s] for f, (v, s) in resolution.picked.items()})


def decode(text: str, request_id: str) -> nova_policy.Resolution | None:
    """The resolution in ``text`` if it belongs to ``request_id``, else None.

    :raises: ValueError for a value that is not ``[value, source]``,
        InvalidRequest for text that is not a valid record or a value that
        is not valid.
    """
    owner, values = nova_request.read_bound(text, SYSMETA_KEY)
    if owner != request_id:
        return None
    picked = {}
    for field, pair in values.items():
        if not (isinstance(pair, list) and len(pair) == 2 and
                pair[1] in nova_policy.ORDER):
            raise ValueError(f'{field}: not [value, source]')
        lmcaps_request.validate({field: pair[0]})
        picked[field] = (pair[0], pair[1])
    return nova_policy.Resolution(picked=picked)


def remember(context: Any, instance: Any,
             resolution: nova_policy.Resolution, *,
             persist: bool = True) -> bool:
    """Keep ``resolution`` for this live migration of ``instance``.

    :param persist: also write it to the instance's system metadata.
    :returns: whether it was written there (a failure is logged, never
        raised: the in-process record still holds).
    """
    key = (instance.uuid, context.request_id)
    with _lock:
        _recent[key] = resolution
        _recent.move_to_end(key)
        while len(_recent) > RECENT:
            _recent.popitem(last=False)
    if not persist:
        return False
    try:
        text = encode(context.request_id, resolution)
        target = instance
        if instance.obj_what_changed():
            # Not the caller's instance: it holds changes of nova's.
            target = objects.Instance.get_by_uuid(
                context, instance.uuid, expected_attrs=['system_metadata'])
        target.system_metadata[SYSMETA_KEY] = text
        target.save()
    except Exception:
        LOG.warning('lmcaps could not write the resolved live-migration '
                    'values of %s to its system metadata; a restart of '
                    'nova-compute before the migration starts loses them',
                    instance.uuid, exc_info=True)
        return False
    return True


def recall(context: Any, instance: Any) -> nova_policy.Resolution | None:
    """The resolution the pre-check kept for this migration, or None.

    In process first, else the instance's system metadata (as given, then
    as the database has it).  Never raises: an unreadable record is logged
    and counts as none.
    """
    key = (instance.uuid, context.request_id)
    with _lock:
        found = _recent.pop(key, None)
    if found is not None:
        return found
    for where in ('instance', 'database'):
        try:
            sysmeta = (instance.system_metadata if where == 'instance' else
                       objects.Instance.get_by_uuid(
                           context, instance.uuid,
                           expected_attrs=['system_metadata']
                       ).system_metadata) or {}
            text = sysmeta.get(SYSMETA_KEY)
            if text:
                found = decode(text, context.request_id)
                if found is not None:
                    return found
        except Exception:
            LOG.warning('lmcaps could not read the resolved live-migration '
                        'values of %s from the %s', instance.uuid, where,
                        exc_info=True)
    return None


def for_monitor(conf: Any, context: Any,
                instance: Any) -> nova_policy.Resolution:
    """What the monitor enforces for this live migration: the pre-check's
    resolution (:func:`recall`); without one, the same bounded resolution
    done now (logged); where that fails, none (nova's host-wide values,
    logged).  Never raises."""
    found = recall(context, instance)
    if found is not None:
        return found
    try:
        found = nova_policy.resolve_instance(conf, context, instance)
    except Exception as exc:
        # The pre-check refuses a bad request or flavor value; if one gets
        # here anyway the migration runs on the host-wide values.
        LOG.error('Ignoring per-instance live-migration values of %s: %s',
                  instance.uuid, getattr(exc, 'message', None) or
                  f'{type(exc).__name__}: {exc}')
        return nova_policy.Resolution(picked={})
    LOG.warning('No lmcaps pre-check record for the live migration of %s '
                '(request %s); its per-instance values were resolved again '
                'at the start of the monitor', instance.uuid,
                context.request_id)
    return found


def forget_all() -> None:
    """Drop every in-process record (a restart, in tests)."""
    with _lock:
        _recent.clear()
