"""Instance actions and their events, with nova's fields.

:class:`EventStore` is the interface; :mod:`lmcaps.events_sql` stores them in
a database through SQLAlchemy, and :mod:`lmcaps.nova` implements it with
nova's own ``InstanceAction`` / ``InstanceActionEvent`` objects.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import datetime
import traceback as tb_mod
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

SUCCESS = 'Success'
ERROR = 'Error'

#: The instance action every lmcaps event belongs to (nova's name for it).
LIVE_MIGRATION = 'live-migration'

# Event names recorded by lmcaps.
PRECHECK = 'lmcaps_precheck_live_migration'
TIMEOUT_ACTION = 'lmcaps_live_migration_timeout_action'
OUTCOME = 'lmcaps_live_migration_outcome'
#: Events whose details are text for people, where InstanceKeyed puts the
#: instance's name.
LABELLED = frozenset({PRECHECK})


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


@dataclasses.dataclass(frozen=True)
class Event:
    """One whole event to record: :meth:`EventStore.record`'s arguments."""

    request_id: str
    instance_uuid: str
    event: str
    result: str
    host: str | None = None
    details: str | None = None
    traceback: str | None = None
    action: str = LIVE_MIGRATION
    #: when the event started (UTC); None: when it is recorded
    start_time: datetime.datetime | None = None


@dataclasses.dataclass(frozen=True)
class ActionRecord:
    id: int
    request_id: str
    instance_uuid: str
    action: str
    start_time: datetime.datetime
    finish_time: datetime.datetime | None
    host: str | None
    message: str | None = None


@dataclasses.dataclass(frozen=True)
class EventRecord:
    id: int
    action_id: int
    request_id: str
    instance_uuid: str
    action: str
    event: str
    start_time: datetime.datetime
    finish_time: datetime.datetime | None
    result: str | None
    traceback: str | None
    host: str | None
    details: str | None

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for key in ('start_time', 'finish_time'):
            if d[key] is not None:
                d[key] = d[key].isoformat()
        return d


class EventStore(abc.ABC):
    """Where instance actions and events are recorded (nova's semantics).

    An action is identified by ``(request_id, instance_uuid)``; an event by
    its action and name.  ``event_start`` creates the action if needed.
    """

    @abc.abstractmethod
    def action_start(self, request_id: str, instance_uuid: str, action: str,
                     host: str | None = None) -> None:
        """Create the action unless it exists already."""

    @abc.abstractmethod
    def event_start(self, request_id: str, instance_uuid: str, event: str,
                    host: str | None = None,
                    action: str = LIVE_MIGRATION) -> None:
        """Record that ``event`` started (creating the action if needed)."""

    @abc.abstractmethod
    def event_finish(self, request_id: str, instance_uuid: str, event: str,
                     result: str, details: str | None = None,
                     traceback: str | None = None) -> None:
        """Finish the newest unfinished ``event`` of that action."""

    def record(self, request_id: str, instance_uuid: str, event: str,
               result: str, host: str | None = None,
               details: str | None = None, traceback: str | None = None,
               action: str = LIVE_MIGRATION) -> None:
        """Record a whole event at once (start and finish)."""
        self.event_start(request_id, instance_uuid, event, host=host,
                         action=action)
        self.event_finish(request_id, instance_uuid, event, result,
                          details=details, traceback=traceback)

    def record_many(self, items: Sequence[Event]) -> None:
        """Record whole events, in order; a store may write them in one
        transaction (all or none), this default records one at a time.

        :raises: what :meth:`record` raises; with the default, the events
            before the failing one are recorded.
        """
        for item in items:
            self.record(item.request_id, item.instance_uuid, item.event,
                        item.result, host=item.host, details=item.details,
                        traceback=item.traceback, action=item.action)

    @abc.abstractmethod
    def list_events(self, instance_uuid: str) -> list[EventRecord]:
        """Every event of every action of an instance, oldest first."""

    def find_events(self, event: str,
                    host: str | None = None) -> list[EventRecord]:
        """Every ``event`` recorded by ``host`` (any host if None), oldest
        first, across instances.

        :raises: EventStoreError where the store cannot search.
        """
        from lmcaps import exception
        raise exception.EventStoreError(
            url=type(self).__name__, reason='it cannot search events')

    def close(self) -> None:
        """Release connections."""


@contextlib.contextmanager
def reporter(store: EventStore, request_id: str, instance_uuid: str,
             event: str, host: str | None = None,
             action: str = LIVE_MIGRATION) -> Iterator[dict]:
    """Record ``event`` around a block, like nova's ``EventReporter``.

    The block may put ``details`` (a string) into the yielded dict; an
    exception finishes the event with result Error and its traceback and
    propagates.
    """
    store.event_start(request_id, instance_uuid, event, host=host,
                      action=action)
    info: dict[str, Any] = {}
    try:
        yield info
    except BaseException as exc:
        store.event_finish(request_id, instance_uuid, event, ERROR,
                           details=info.get('details') or str(exc),
                           traceback=''.join(tb_mod.format_exception(exc)))
        raise
    store.event_finish(request_id, instance_uuid, event,
                       info.get('result', SUCCESS),
                       details=info.get('details'))


class MemoryEventStore(EventStore):
    """An in-process store, for unit tests of lmcaps's own logic."""

    def __init__(self) -> None:
        import threading
        self._lock = threading.Lock()
        self._actions: dict[tuple[str, str], ActionRecord] = {}
        self._events: list[dict[str, Any]] = []

    def action_start(self, request_id: str, instance_uuid: str, action: str,
                     host: str | None = None) -> None:
        with self._lock:
            self._action(request_id, instance_uuid, action, host)

    def _action(self, request_id: str, instance_uuid: str, action: str,
                host: str | None) -> ActionRecord:
        key = (request_id, instance_uuid)
        if key not in self._actions:
            self._actions[key] = ActionRecord(
                id=len(self._actions) + 1, request_id=request_id,
                instance_uuid=instance_uuid, action=action,
                start_time=utcnow(), finish_time=None, host=host)
        return self._actions[key]

    def event_start(self, request_id: str, instance_uuid: str, event: str,
                    host: str | None = None,
                    action: str = LIVE_MIGRATION) -> None:
        with self._lock:
            act = self._action(request_id, instance_uuid, action, host)
            self._events.append(dict(
                id=len(self._events) + 1, action_id=act.id,
                request_id=request_id, instance_uuid=instance_uuid,
                action=act.action, event=event, start_time=utcnow(),
                finish_time=None, result=None, traceback=None, host=host,
                details=None))

    def event_finish(self, request_id: str, instance_uuid: str, event: str,
                     result: str, details: str | None = None,
                     traceback: str | None = None) -> None:
        with self._lock:
            for ev in reversed(self._events):
                if (ev['request_id'], ev['instance_uuid'], ev['event']) == (
                        request_id, instance_uuid, event) and \
                        ev['finish_time'] is None:
                    ev.update(finish_time=utcnow(), result=result,
                              details=details, traceback=traceback)
                    return
            raise KeyError(f'no started event {event} for {instance_uuid}')

    def list_events(self, instance_uuid: str) -> list[EventRecord]:
        with self._lock:
            return [EventRecord(**ev) for ev in self._events
                    if ev['instance_uuid'] == instance_uuid]

    def find_events(self, event: str,
                    host: str | None = None) -> list[EventRecord]:
        with self._lock:
            return [EventRecord(**ev) for ev in self._events
                    if ev['event'] == event and
                    (host is None or ev['host'] == host)]


class _Wrapping(EventStore):
    """A store in front of ``self.store``: what it does not change goes
    through."""

    store: EventStore

    def list_events(self, instance_uuid: str) -> list[EventRecord]:
        return self.store.list_events(instance_uuid)

    def find_events(self, event: str,
                    host: str | None = None) -> list[EventRecord]:
        return self.store.find_events(event, host=host)

    def close(self) -> None:
        self.store.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)   # url, list_actions, engine...


class Buffered(_Wrapping):
    """Collects whole events (``record``, or ``event_start`` then
    ``event_finish``) and writes them with one :meth:`flush` —
    :meth:`EventStore.record_many`, one transaction with the SQL store.

    For a burst of short events that are read only later, e.g. the
    pre-checks of every guest of a drain plan.  Start times are kept.
    Reads go to the store (not including what is buffered).

    :param store: the store written to on :meth:`flush`.
    """

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self._open: dict[tuple[str, str, str], tuple[str | None, str,
                                                     datetime.datetime]] = {}
        self._items: list[Event] = []

    def action_start(self, request_id: str, instance_uuid: str, action: str,
                     host: str | None = None) -> None:
        self.store.action_start(request_id, instance_uuid, action, host=host)

    def event_start(self, request_id: str, instance_uuid: str, event: str,
                    host: str | None = None,
                    action: str = LIVE_MIGRATION) -> None:
        self._open[request_id, instance_uuid, event] = (host, action,
                                                        utcnow())

    def event_finish(self, request_id: str, instance_uuid: str, event: str,
                     result: str, details: str | None = None,
                     traceback: str | None = None) -> None:
        opened = self._open.pop((request_id, instance_uuid, event), None)
        if opened is None:       # started elsewhere: finish it there
            self.store.event_finish(request_id, instance_uuid, event, result,
                                    details=details, traceback=traceback)
            return
        host, action, started = opened
        self._items.append(Event(request_id, instance_uuid, event, result,
                                 host, details, traceback, action, started))

    def record(self, request_id: str, instance_uuid: str, event: str,
               result: str, host: str | None = None,
               details: str | None = None, traceback: str | None = None,
               action: str = LIVE_MIGRATION) -> None:
        self._items.append(Event(request_id, instance_uuid, event, result,
                                 host, details, traceback, action))

    def flush(self) -> int:
        """Write what was collected; returns how many events.

        :raises: what the store's ``record_many`` raises (the buffer is
            kept then).
        """
        items = list(self._items)
        if items:
            self.store.record_many(items)
            del self._items[:len(items)]
        return len(items)


class InstanceKeyed(_Wrapping):
    """A store that records an instance given by name under its UUID key.

    Callers name the guest as the user did (a libvirt domain name, say);
    the events go under :func:`lmcaps.validation.instance_key` of it (the
    UUID itself, or a stable uuid5 of the name), and the name is put at the
    head of the details of the events in :data:`LABELLED` (the others,
    such as a watch's JSON document, are left as they are), so that the
    store's 36-character ``instance_uuid`` column holds every valid name.

    :param store: the store written to.
    :param instance: the name or UUID as given (validated).
    :raises: InvalidInput for an invalid name.
    """

    def __init__(self, store: EventStore, instance: str) -> None:
        from lmcaps import validation
        self.store = store
        self.name = instance
        self.key = validation.instance_key(instance)
        self.label = None if validation.is_uuid(instance) else \
            f'instance: {instance}'

    def _key(self, instance: str) -> str:
        return self.key if instance == self.name else instance

    def key_of(self, instance: str) -> str:
        """The ``instance_uuid`` the events of ``instance`` are stored
        under (the name given maps to its key, anything else to itself)."""
        return self._key(instance)

    def _details(self, event: str, details: str | None) -> str | None:
        if self.label is None or event not in LABELLED:
            return details
        return f'{self.label}; {details}' if details else self.label

    def action_start(self, request_id: str, instance_uuid: str, action: str,
                     host: str | None = None) -> None:
        self.store.action_start(request_id, self._key(instance_uuid), action,
                                host=host)

    def event_start(self, request_id: str, instance_uuid: str, event: str,
                    host: str | None = None,
                    action: str = LIVE_MIGRATION) -> None:
        self.store.event_start(request_id, self._key(instance_uuid), event,
                               host=host, action=action)

    def event_finish(self, request_id: str, instance_uuid: str, event: str,
                     result: str, details: str | None = None,
                     traceback: str | None = None) -> None:
        self.store.event_finish(request_id, self._key(instance_uuid), event,
                                result,
                                details=self._details(event, details),
                                traceback=traceback)

    def record(self, request_id: str, instance_uuid: str, event: str,
               result: str, host: str | None = None,
               details: str | None = None, traceback: str | None = None,
               action: str = LIVE_MIGRATION) -> None:
        self.store.record(request_id, self._key(instance_uuid), event, result,
                          host=host,
                          details=self._details(event, details),
                          traceback=traceback, action=action)

    def list_events(self, instance_uuid: str) -> list[EventRecord]:
        return self.store.list_events(self._key(instance_uuid))


def details_text(lines: Mapping[str, str] | list[str]) -> str:
    """Join reasons into the single ``details`` string nova stores."""
    if isinstance(lines, Mapping):
        return '; '.join(f'{k}: {v}' for k, v in lines.items())
    return '; '.join(lines)
