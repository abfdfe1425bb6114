"""An :class:`~lmcaps.events.EventStore` over nova's instance actions.

Events go through ``objects.InstanceActionEvent`` (``event_start`` /
``event_finish_with_failure``), so they are what ``openstack server event
show`` lists, next to nova's own ``compute_check_can_live_migrate_source``.
On a compute node those objects are remoted to the conductor.
"""

from __future__ import annotations

import copy
import datetime
from typing import Any

from nova import exception as nova_exception
from nova import objects

from lmcaps import events as lmcaps_events


def _aware(value: datetime.datetime | None) -> datetime.datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=datetime.timezone.utc)
    return value


class NovaEventStore(lmcaps_events.EventStore):
    """Records lmcaps events as nova instance-action events.

    :param context: the nova RequestContext of the operation; its
        ``request_id`` names the instance action (``live-migration``).
    """

    def __init__(self, context: Any) -> None:
        self.context = context

    def _context(self, request_id: str) -> Any:
        if request_id == self.context.request_id:
            return self.context
        ctx = copy.copy(self.context)
        ctx.request_id = request_id
        return ctx

    def action_start(self, request_id: str, instance_uuid: str, action: str,
                     host: str | None = None) -> None:
        ctx = self._context(request_id)
        if objects.InstanceAction.get_by_request_id(
                ctx, instance_uuid, request_id) is None:
            objects.InstanceAction.action_start(ctx, instance_uuid, action,
                                                want_result=False)

    def event_start(self, request_id: str, instance_uuid: str, event: str,
                    host: str | None = None,
                    action: str = lmcaps_events.LIVE_MIGRATION) -> None:
        ctx = self._context(request_id)
        try:
            objects.InstanceActionEvent.event_start(
                ctx, instance_uuid, event, want_result=False, host=host)
        except nova_exception.InstanceActionNotFound:
            self.action_start(request_id, instance_uuid, action, host)
            objects.InstanceActionEvent.event_start(
                ctx, instance_uuid, event, want_result=False, host=host)

    def event_finish(self, request_id: str, instance_uuid: str, event: str,
                     result: str, details: str | None = None,
                     traceback: str | None = None) -> None:
        ctx = self._context(request_id)
        if result == lmcaps_events.SUCCESS:
            # nova keeps no details for a successful event: they are lost.
            exc_val = exc_tb = None
        else:
            # nova stores exc_val (a string) as details; a non-empty exc_tb
            # is what makes the result 'Error'.
            exc_val = details or result
            exc_tb = traceback or details or result
        objects.InstanceActionEvent.event_finish_with_failure(
            ctx, instance_uuid, event, exc_val=exc_val, exc_tb=exc_tb,
            want_result=False)

    def list_events(self, instance_uuid: str
                    ) -> list[lmcaps_events.EventRecord]:
        ctx = self.context
        records = []
        for act in objects.InstanceActionList.get_by_instance_uuid(
                ctx, instance_uuid):
            for ev in objects.InstanceActionEventList.get_by_action(
                    ctx, act.id):
                records.append(lmcaps_events.EventRecord(
                    id=ev.id, action_id=act.id, request_id=act.request_id,
                    instance_uuid=instance_uuid, action=act.action,
                    event=ev.event,
                    start_time=_aware(ev.start_time),  # type: ignore[arg-type]
                    finish_time=_aware(ev.finish_time), result=ev.result,
                    traceback=ev.traceback, host=ev.host,
                    details=ev.details))
        records.sort(key=lambda r: (r.start_time, r.id))
        return records
