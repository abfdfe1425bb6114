"""What the monitor enforces, kept in the event store for re-attaching.

When a migration is watched with ``persist=True`` the monitor records a
``lmcaps_live_migration_watch`` event whose details are a JSON document:
the migration's reference (:class:`lmcaps.drivers.base.MigrationRef`), the
policy and the host.  The watch is *open* until an
``lmcaps_live_migration_outcome`` event follows it in the same instance
action.  ``lmcaps watch`` lists the open watches of a host and re-attaches
to each, enforcing the original deadline (counted from the recorded start).
"""

from __future__ import annotations

import json
import os
from typing import Any

from lmcaps import events
from lmcaps import policy as lmcaps_policy
from lmcaps.drivers import base

WATCH = 'lmcaps_live_migration_watch'
#: Recorded when a monitor stops before the migration ended.
UNENFORCED = 'lmcaps_live_migration_unenforced'
#: Version of the watch document.
FORMAT = 1


def watch_details(driver: base.LiveMigrationDriver,
                  migration: base.Migration,
                  policy: lmcaps_policy.EffectivePolicy,
                  host: str | None) -> str:
    """The JSON document of a watch event."""
    return json.dumps({'format': FORMAT, 'host': host, 'pid': os.getpid(),
                       'ref': json.loads(migration.ref(driver.name).to_json()),
                       'policy': policy.as_dict()}, sort_keys=True)


class OpenWatch:
    """One open watch read back from the store.

    :raises: ValueError (at construction) for a document that is not one.
    """

    def __init__(self, record: events.EventRecord) -> None:
        self.record = record
        data: Any = json.loads(record.details or '')
        if not isinstance(data, dict) or data.get('format') != FORMAT:
            raise ValueError('not a watch document')
        self.host = data.get('host')
        self.pid = data.get('pid')
        self.ref = base.MigrationRef.from_json(json.dumps(data['ref']))
        self.policy = lmcaps_policy.EffectivePolicy.from_dict(data['policy'])

    @property
    def instance_uuid(self) -> str:
        return self.record.instance_uuid

    @property
    def request_id(self) -> str:
        return self.record.request_id


def open_watches(store: events.EventStore,
                 host: str | None) -> list[OpenWatch]:
    """The watches of ``host`` with no outcome after them whose process
    (on this host) is gone, oldest first."""
    found = []
    for rec in store.find_events(WATCH, host=host):
        later = [e for e in store.list_events(rec.instance_uuid)
                 if e.request_id == rec.request_id and
                 e.event == events.OUTCOME and e.id > rec.id]
        if later:
            continue
        try:
            watch = OpenWatch(rec)
        except (ValueError, KeyError, TypeError):
            continue
        if _alive(watch.pid):
            continue        # its process on this host still enforces it
        found.append(watch)
    return found


def _alive(pid: object) -> bool:
    """Whether ``pid`` is a live process other than this one."""
    if not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
