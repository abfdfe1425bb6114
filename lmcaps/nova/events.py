"""An :class:`~lmcaps.events.EventStore` over nova's instance actions.

Events go through ``objects.InstanceActionEvent`` (``event_start`` /
``event_finish_with_failure``), so they are what ``openstack server event
show`` lists, next to nova's own ``compute_check_can_live_migrate_source``.
On a compute node those objects are remoted to the conductor.
"""

from __future__ import annotations

import copy
import datetime
import threading
from typing import Any

from nova import exception as nova_exception
from nova import objects
from oslo_log import log as logging

from lmcaps import events as lmcaps_events


LOG = logging.getLogger(__name__)

#: The event recording what was done to an owner's ``lmcaps:`` instance
#: metadata (ignored, clamped); Error, so that nova keeps its details.
METADATA = 'lmcaps_instance_metadata_live_migration'


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
        self._bound: dict[str, tuple[Any, Any]] = {}
        self._lock = threading.Lock()

    def bind(self, context: Any) -> None:
        """Record events of ``context.request_id`` with a copy of ``context``
        (a store shared by many migrations, such as the monitor's).

        A copy: the store writes from its own thread, and a nova context
        carries its DB transaction (oslo.db's enginefacade), so one context
        object must not be used by two threads at once.
        """
        with self._lock:
            self._bound[context.request_id] = (context, copy.copy(context))

    def unbind(self, context: Any) -> None:
        with self._lock:
            key = context.request_id
            found = self._bound.get(key)
            if found is not None and found[0] is context:
                del self._bound[key]

    def _context(self, request_id: str) -> Any:
        if request_id == self.context.request_id:
            return self.context
        with self._lock:
            bound = self._bound.get(request_id)
        if bound is not None:
            return bound[1]
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
        """Finish an event in nova's row.

        nova keeps the first 255 characters of an Error event's details
        (``compute_utils.exception_to_dict``) and its whole traceback text,
        and nothing of a Success event.  So an Error event's details are the
        first line of ``details`` (lmcaps's one-line summary) and its
        traceback is all of ``details`` followed by ``traceback``: the full
        reasons, which ``GET /servers/{id}/os-instance-actions/{request_id}``
        shows to admins as the event's ``traceback``.
        """
        if result == lmcaps_events.SUCCESS:
            # nova keeps no details for a successful event: they are lost.
            self._finish(request_id, instance_uuid, event, None, None)
            return
        summary = (details or result).split('\n', 1)[0]
        full = '\n'.join(t for t in (details or result, traceback) if t)
        self._finish(request_id, instance_uuid, event, summary, full)

    def _finish(self, request_id: str, instance_uuid: str, event: str,
                exc_val: str | None, exc_tb: str | None) -> None:
        # nova stores exc_val (a string) as details; a non-empty exc_tb is
        # what makes the result 'Error'.
        objects.InstanceActionEvent.event_finish_with_failure(
            self._context(request_id), instance_uuid, event, exc_val=exc_val,
            exc_tb=exc_tb, want_result=False)

    def record(self, request_id: str, instance_uuid: str, event: str,
               result: str, host: str | None = None,
               details: str | None = None, traceback: str | None = None,
               action: str = lmcaps_events.LIVE_MIGRATION) -> None:
        """Record a whole event, in nova's one row per event name.

        nova finishes the *first* event of a name in an action (its
        ``action_event_finish``), so a repeated event (each attempt of the
        monitor's timeout action, a second pre-check of one request) is
        folded into that row: its details gain the new summary line and its
        traceback text the new full text (nova keeps the first 255
        characters of details, the whole traceback), its result is Error if
        any was.  A timeout-action event is always Error, as in
        :mod:`lmcaps.nova.monitor`: the migration missed its deadline, and
        nova keeps details only for Error.
        """
        if event == lmcaps_events.TIMEOUT_ACTION:
            result = lmcaps_events.ERROR
        previous = self._recorded(request_id, instance_uuid, event)
        if previous is None:
            super().record(request_id, instance_uuid, event, result,
                           host=host, details=details, traceback=traceback,
                           action=action)
            return
        if previous.result == lmcaps_events.ERROR:
            result = lmcaps_events.ERROR
        if result == lmcaps_events.SUCCESS:
            self._finish(request_id, instance_uuid, event, None, None)
            return
        new = details or result
        summary = new.split('\n', 1)[0]
        joined = '\n'.join(t for t in (previous.details, summary) if t)
        full = '\n'.join(t for t in (previous.traceback, new, traceback)
                         if t)
        self._finish(request_id, instance_uuid, event, joined, full)

    def _recorded(self, request_id: str, instance_uuid: str,
                  event: str) -> Any:
        """The finished ``event`` of that action, if nova has one."""
        ctx = self._context(request_id)
        act = objects.InstanceAction.get_by_request_id(ctx, instance_uuid,
                                                       request_id)
        if act is None:
            return None
        for ev in objects.InstanceActionEventList.get_by_action(ctx, act.id):
            if ev.event == event and ev.finish_time is not None:
                return ev
        return None

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


class BestEffortStore(NovaEventStore):
    """A :class:`NovaEventStore` whose writes never raise: a failure is
    logged and the event is lost.  For the source pre-check, where an event
    that cannot be written must not change the verdict (a refusal keeps its
    reasons, a pass passes)."""

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        #: names of the events this store finished
        self.finished: set[str] = set()

    def _guard(self, what: str, call: Any, *args: Any, **kwargs: Any) -> None:
        try:
            call(*args, **kwargs)
            if call.__name__ in ('event_finish', 'record') and len(args) > 2:
                self.finished.add(args[2])
        except Exception:
            LOG.warning('lmcaps could not %s (instance %s); the event is '
                        'lost', what, args[1] if len(args) > 1 else '?',
                        exc_info=True)

    def action_start(self, *args: Any, **kwargs: Any) -> None:
        self._guard('start an instance action', super().action_start,
                    *args, **kwargs)

    def event_start(self, *args: Any, **kwargs: Any) -> None:
        self._guard('start an instance action event', super().event_start,
                    *args, **kwargs)

    def event_finish(self, *args: Any, **kwargs: Any) -> None:
        self._guard('finish an instance action event', super().event_finish,
                    *args, **kwargs)

    def record(self, *args: Any, **kwargs: Any) -> None:
        self._guard('record an instance action event', super().record,
                    *args, **kwargs)
