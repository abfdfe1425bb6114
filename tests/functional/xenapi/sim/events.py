"""``event.from`` of the simulator (XenAPI reference, class event).

``event.from(classes, token, timeout) -> {events, token, valid_ref_counts}``;
each event has id, timestamp, class, operation (add | mod | del), ref,
obj_uuid and the object's snapshot.  Classes may be ``task`` or one object,
``task/<ref>``.  Only the task class is served.  The model is lazy, so a
change is noticed when a read brings the tasks to now: status,
allowed_operations, current_operations or progress (to 0.01) changed.
"""

from __future__ import annotations

import time
from typing import Any

from tests.functional.xenapi.sim import model

XapiError = model.XapiError


def _collect(m: model.Model) -> None:
    """Turn changes of task records into 'mod'/'add'/'del' events."""
    m.advance()
    with m.lock:
        now = time.time()
        for ref, task in list(m.tasks.items()):
            rec = task.record()
            key = (rec['status'], tuple(rec['allowed_operations']),
                   round(rec['progress'], 2),
                   tuple(rec['current_operations'].values()))
            old = m._seen.get(ref)
            if old == key:
                continue
            m._seen[ref] = key
            m._event_id += 1
            m.events.append({
                'id': str(m._event_id), 'timestamp': str(now),
                'class': 'task', 'operation': 'add' if old is None
                else 'mod', 'ref': ref, 'obj_uuid': rec['uuid'],
                'snapshot': rec})
        for ref in [r for r in m._seen if r not in m.tasks]:
            del m._seen[ref]
            m._event_id += 1
            m.events.append({
                'id': str(m._event_id), 'timestamp': str(now),
                'class': 'task', 'operation': 'del', 'ref': ref,
                'obj_uuid': '', 'snapshot': {}})
        del m.events[:-10000]


def event_from(m: model.Model, classes: list[str], token: str,
               timeout: float) -> dict[str, Any]:
    """Events of the ``task`` class (or ``task/<ref>``) after ``token``."""
    for cls in classes:
        if cls.split('/', 1)[0] != 'task':
            raise XapiError('INVALID_VALUE', 'classes', cls)
    wanted = {c.split('/', 1)[1] for c in classes if '/' in c}
    try:
        after = int(token) if token else 0
    except ValueError:
        raise XapiError('INVALID_VALUE', 'token', token) from None
    deadline = time.monotonic() + max(0.0, float(timeout))
    while True:
        _collect(m)
        with m.lock:
            found = [e for e in m.events if int(e['id']) > after and
                     (not wanted or e['ref'] in wanted)]
            if found or time.monotonic() >= deadline:
                return {'events': found, 'token': str(m._event_id),
                        'valid_ref_counts': {'task': len(m.tasks)}}
            m.changed.wait(min(0.05, deadline - time.monotonic()))
