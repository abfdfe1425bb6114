"""An :class:`~lmcaps.events.EventStore` in a database, through SQLAlchemy.

The tables carry nova's fields (``instance_actions`` and
``instance_actions_events``).  Every call is one short transaction; with
SQLite the database runs in WAL mode, writers take the lock up front
(``BEGIN IMMEDIATE``) and wait for it (busy timeout), so concurrent threads
and processes on one host lose no event.  Point every host at one
PostgreSQL URL to share the events across a fleet.

The schema is versioned (:mod:`lmcaps.db`, alembic) and upgraded on first
use.  A write broken by a lost connection is retried with backoff
(:mod:`lmcaps.db.retry`); each event carries a unique token, so a retried
start or finish is applied exactly once, and :meth:`SQLEventStore.record`
writes a whole event in one transaction.  Free text (details, tracebacks)
is stored with control characters escaped and remembered secrets
(:func:`lmcaps.masking.remember`) scrubbed; names longer than the columns
are refused with a clear error (validate them at the edge first:
:mod:`lmcaps.validation`).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import threading
import uuid
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from oslo_config import cfg
from sqlalchemy import exc as sa_exc
from sqlalchemy import pool as sa_pool

from lmcaps import conf as lmcaps_conf
from lmcaps import db
from lmcaps import events
from lmcaps import exception
from lmcaps import masking
from lmcaps import validation
from lmcaps.db import retry
from lmcaps.db import sqlite as db_sqlite
from lmcaps.db import tables

#: Seconds a writer waits for another writer's lock before giving up.
BUSY_TIMEOUT = 30.0

metadata, actions, action_events = (
    tables.metadata, tables.actions, tables.action_events)
WIDTHS = tables.WIDTHS

# Statements built once; SQLAlchemy caches their compiled form.
_FIND_ACTION = sa.select(actions.c.id).where(
    actions.c.request_id == sa.bindparam('request_id'),
    actions.c.instance_uuid == sa.bindparam('instance_uuid'))
_INSERT_ACTION = actions.insert()
_INSERT_EVENT = action_events.insert()
_FIND_OPEN_EVENT = (
    sa.select(action_events.c.id, action_events.c.action_id)
    .join(actions, actions.c.id == action_events.c.action_id)
    .where(actions.c.request_id == sa.bindparam('request_id'),
           actions.c.instance_uuid == sa.bindparam('instance_uuid'),
           action_events.c.event == sa.bindparam('event'),
           action_events.c.finish_time.is_(None))
    .order_by(action_events.c.id.desc()).limit(1))
_FINISH_EVENT = action_events.update().where(
    action_events.c.id == sa.bindparam('event_id'),
    action_events.c.finish_time.is_(None))
_MARK_ACTION_ERROR = actions.update().where(
    actions.c.id == sa.bindparam('action_id')).values(message='Error')
_LIST_EVENTS = (
    sa.select(action_events.c.id, action_events.c.action_id,
              actions.c.request_id, actions.c.instance_uuid,
              actions.c.action, action_events.c.event,
              action_events.c.start_time, action_events.c.finish_time,
              action_events.c.result, action_events.c.traceback,
              action_events.c.host, action_events.c.details)
    .join(actions, actions.c.id == action_events.c.action_id)
    .where(actions.c.instance_uuid == sa.bindparam('instance_uuid'))
    .order_by(action_events.c.start_time, action_events.c.id))

_FIND_TOKEN = sa.select(action_events.c.id, action_events.c.finish_time,
                        action_events.c.result).where(
    action_events.c.token == sa.bindparam('token'))
_FIND_EVENTS = (
    sa.select(*_LIST_EVENTS.selected_columns)
    .join(actions, actions.c.id == action_events.c.action_id)
    .order_by(action_events.c.start_time, action_events.c.id))


def _event_record(r: Any) -> events.EventRecord:
    return events.EventRecord(
        id=r.id, action_id=r.action_id, request_id=r.request_id,
        instance_uuid=r.instance_uuid, action=r.action, event=r.event,
        start_time=_aware(r.start_time),  # type: ignore[arg-type]
        finish_time=_aware(r.finish_time), result=r.result,
        traceback=r.traceback, host=r.host, details=r.details)


_READ_ONLY = 'lmcaps_read_only'
#: Attempts to open a store (first connection and schema check): a wrong
#: URL fails fast, a busy server at start is waited for a little.
OPEN_ATTEMPTS = 3

#: Kept for callers of lmcaps 0.1: the one masking function.
mask_url = masking.mask_url


def _reason(exc: BaseException) -> str:
    """One line saying why, from a DBAPI, SQLAlchemy or OS error."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None:
        exc = exc.orig
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror + (f': {exc.filename}' if exc.filename else '')
    else:
        text = str(exc) or type(exc).__name__
    return masking.scrub(' '.join(text.split()))[:300]


def _text(value: str | None) -> str | None:
    """Free text as stored: remembered secrets scrubbed, controls escaped."""
    return None if value is None else validation.escape_text(
        masking.scrub(value))


def _now() -> datetime.datetime:
    """Naive UTC, as nova stores it."""
    return events.utcnow().replace(tzinfo=None)


def _aware(value: datetime.datetime | None) -> datetime.datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=datetime.timezone.utc)


class SQLEventStore(events.EventStore):
    """Instance actions and events in a database.

    :param url: an SQLAlchemy URL, e.g. ``sqlite:////var/lib/lmcaps/ev.sqlite``
        or ``postgresql+psycopg2://user:pw@db/lmcaps``; ``~`` in a SQLite path is
        expanded and the directory created.
    :param busy_timeout: SQLite only: seconds to wait for another writer.
    :param retry_budget: seconds a write broken by a lost connection is
        retried for (with backoff) before EventStoreError.
    :param upgrade: upgrade the schema to the newest revision if needed.
    :raises: EventStoreError naming the (masked) URL and the reason when the
        database cannot be opened, read, written or initialised.
    """

    def __init__(self, url: str, busy_timeout: float = BUSY_TIMEOUT,
                 retry_budget: float = retry.BUDGET,
                 upgrade: bool = True) -> None:
        url = str(url)
        masking.remember(url)
        self.url = mask_url(url)
        self.retry_budget = retry_budget
        try:
            parsed = sa.engine.make_url(url)
        except (sa_exc.ArgumentError, ValueError) as exc:
            raise self._error(f'not a database URL ({_reason(exc)})') from exc
        self._memory = False
        self._lock: threading.Lock | contextlib.nullcontext = \
            contextlib.nullcontext()
        kwargs: dict[str, Any] = {}
        sqlite = parsed.get_backend_name() == 'sqlite'
        if sqlite:
            parsed = self._prepare_sqlite(parsed)
            kwargs['connect_args'] = {'timeout': busy_timeout,
                                      'check_same_thread': False}
            if self._memory:
                kwargs['poolclass'] = sa_pool.StaticPool
                self._lock = threading.Lock()
        else:
            kwargs['pool_pre_ping'] = True
        try:
            self.engine = sa.create_engine(parsed, **kwargs)
        except (sa_exc.SQLAlchemyError, ImportError) as exc:
            raise self._error(f'cannot use this database ({_reason(exc)})'
                              ) from exc
        if sqlite:
            db_sqlite.setup(self.engine, busy_timeout, self._memory,
                            _READ_ONLY)
        if upgrade:
            self.upgrade(only_if_needed=True)
        _STORES.add(self)

    def upgrade(self, only_if_needed: bool = False) -> tuple[str | None, str]:
        """Bring the schema to the newest revision (:mod:`lmcaps.db`).

        :returns: (revision before, revision after).
        :raises: EventStoreError.
        """
        def run() -> tuple[str | None, str]:
            with self.engine.connect() as conn:
                before = db.read_revision(
                    conn.execution_options(**{_READ_ONLY: True}))
            if only_if_needed and before == db.head():
                return before, before
            return before, db.upgrade(self.engine)

        with self._guard():
            return retry.run(run, budget=self.retry_budget,
                             attempts=OPEN_ATTEMPTS)

    @classmethod
    def from_conf(cls, conf: cfg.ConfigOpts, **kwargs: Any) -> SQLEventStore:
        """The store at ``[lmcaps] event_connection``."""
        return cls(conf[lmcaps_conf.GROUP].event_connection, **kwargs)

    # -- setup ------------------------------------------------------------

    def _error(self, reason: str) -> exception.EventStoreError:
        return exception.EventStoreError(url=self.url, reason=reason)

    def _prepare_sqlite(self, url: sa.engine.URL) -> sa.engine.URL:
        """Expand ``~``, create the directory and check access."""
        database = url.database or ''
        if database in ('', ':memory:') or url.query.get('mode') == 'memory':
            self._memory = True
            return url
        if database.startswith('file:'):
            return url  # a SQLite URI: the caller knows what it does
        path = os.path.abspath(os.path.expanduser(database))
        url = url.set(database=path)
        self.url = mask_url(url)
        directory = os.path.dirname(path)
        try:
            if not os.path.isdir(directory):
                os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise self._error(f'cannot create directory {directory}: '
                              f'{exc.strerror or exc}') from exc
        if not os.path.isdir(directory):
            raise self._error(f'{directory} is not a directory')
        if not os.access(directory, os.W_OK | os.X_OK):
            raise self._error(f'directory {directory} is not writable')
        if os.path.isdir(path):
            raise self._error(f'{path} is a directory')
        if os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
            raise self._error(f'file {path} is not readable and writable')
        return url

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """Turn database and OS errors into one-line EventStoreErrors."""
        try:
            with self._lock:
                yield
        except exception.LmcapsException:
            raise
        except (sa_exc.SQLAlchemyError, OSError) as exc:
            raise self._error(_reason(exc)) from exc

    # -- EventStore -------------------------------------------------------

    def _action_id(self, conn: sa.Connection, request_id: str,
                   instance_uuid: str, action: str,
                   host: str | None) -> int:
        found = conn.execute(_FIND_ACTION, {
            'request_id': request_id,
            'instance_uuid': instance_uuid}).scalar()
        if found is not None:
            return found
        result = conn.execute(_INSERT_ACTION, {
            'request_id': request_id, 'instance_uuid': instance_uuid,
            'action': action, 'start_time': _now(), 'host': host})
        key: Any = result.inserted_primary_key
        return key[0]

    def _action_ids(self, conn: sa.Connection,
                    wanted: list[tuple[str, str, str, str | None]]
                    ) -> dict[tuple[str, str], int]:
        """The action id of each (request_id, instance_uuid), creating the
        missing actions (action name and host from their first mention):
        three statements whatever the number."""
        keys: dict[tuple[str, str], tuple[str, str | None]] = {}
        for request_id, instance_uuid, action, host in wanted:
            keys.setdefault((request_id, instance_uuid), (action, host))
        if not keys:
            return {}

        def find() -> dict[tuple[str, str], int]:
            found: dict[tuple[str, str], int] = {}
            pairs = list(keys)
            for start in range(0, len(pairs), 400):   # bound parameters
                chunk = pairs[start:start + 400]
                found.update(
                    ((r.request_id, r.instance_uuid), r.id)
                    for r in conn.execute(sa.select(
                        actions.c.id, actions.c.request_id,
                        actions.c.instance_uuid).where(
                        sa.tuple_(actions.c.request_id,
                                  actions.c.instance_uuid).in_(chunk))))
            return found

        ids = find()
        missing = [k for k in keys if k not in ids]
        if missing:
            now = _now()
            conn.execute(_INSERT_ACTION, [
                {'request_id': r, 'instance_uuid': u,
                 'action': keys[r, u][0], 'start_time': now,
                 'host': keys[r, u][1]} for r, u in missing])
            ids = find()
        return ids

    def _write(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(conn, *args)`` in one transaction, retried until done.

        A broken connection is retried with backoff for ``retry_budget``
        seconds (``fn`` must be idempotent); a lost race to create an action
        (unique constraint, servers without BEGIN IMMEDIATE) is retried and
        then finds it.
        """
        def once() -> Any:
            try:
                with self.engine.begin() as conn:
                    return fn(conn, *args)
            except sa_exc.IntegrityError:
                with self.engine.begin() as conn:
                    return fn(conn, *args)

        with self._guard():
            return retry.run(once, budget=self.retry_budget)

    def _check(self, **values: str | None) -> None:
        """Refuse, in one line, what would not fit its column."""
        for key, value in values.items():
            if value is not None and len(value) > WIDTHS[key]:
                raise self._error(
                    f'{key} {validation.echo(value)} is longer than '
                    f'{WIDTHS[key]} characters')

    def action_start(self, request_id: str, instance_uuid: str, action: str,
                     host: str | None = None) -> None:
        self._check(request_id=request_id, instance_uuid=instance_uuid,
                    action=action, host=host)
        self._write(self._action_id, request_id, instance_uuid, action, host)

    def event_start(self, request_id: str, instance_uuid: str, event: str,
                    host: str | None = None,
                    action: str = events.LIVE_MIGRATION) -> None:
        self._check(request_id=request_id, instance_uuid=instance_uuid,
                    event=event, host=host, action=action)
        row = {'event': event, 'start_time': _now(), 'host': host,
               'token': str(uuid.uuid4())}
        self._write(self._insert_event, request_id, instance_uuid, action,
                    row)

    def record(self, request_id: str, instance_uuid: str, event: str,
               result: str, host: str | None = None,
               details: str | None = None, traceback: str | None = None,
               action: str = events.LIVE_MIGRATION) -> None:
        """Record a whole event (start and finish) in one transaction."""
        self._check(request_id=request_id, instance_uuid=instance_uuid,
                    event=event, host=host, action=action, result=result)
        now = _now()
        row = {'event': event, 'start_time': now, 'finish_time': now,
               'host': host, 'result': result,
               'details': _text(details),
               'traceback': _text(traceback),
               'token': str(uuid.uuid4())}
        self._write(self._insert_event, request_id, instance_uuid, action,
                    row)

    def record_many(self, items: Sequence[events.Event]) -> None:
        """Record whole events in one transaction: all of them or none.

        :raises: EventStoreError (nothing of the batch recorded), e.g. for
            a value too long for its column, or a store still failing after
            ``retry_budget``.
        """
        batch = []
        for item in items:
            self._check(request_id=item.request_id,
                        instance_uuid=item.instance_uuid, event=item.event,
                        host=item.host, action=item.action,
                        result=item.result)
            now = _now()
            started = now if item.start_time is None else \
                item.start_time.astimezone(datetime.timezone.utc).replace(
                    tzinfo=None)
            batch.append((item, {
                'event': item.event, 'start_time': started,
                'finish_time': now,
                'host': item.host, 'result': item.result,
                'details': _text(item.details),
                'traceback': _text(item.traceback),
                'token': str(uuid.uuid4())}))

        tries = [0]

        def insert_all(conn: sa.Connection) -> None:
            tries[0] += 1
            rows = batch
            if tries[0] > 1:       # a retry: skip what an earlier try stored
                done = set(conn.execute(
                    sa.select(action_events.c.token).where(
                        action_events.c.token.in_(
                            [row['token'] for _, row in batch]))).scalars())
                rows = [(i, r) for i, r in batch if r['token'] not in done]
            ids = self._action_ids(conn, [
                (i.request_id, i.instance_uuid, i.action, i.host)
                for i, _ in rows])
            if not rows:
                return
            conn.execute(_INSERT_EVENT, [
                dict(row, action_id=ids[item.request_id, item.instance_uuid])
                for item, row in rows])
            for action_id in sorted({
                    ids[item.request_id, item.instance_uuid]
                    for item, row in rows
                    if str(row['result'] or '').lower() ==
                    events.ERROR.lower()}):
                conn.execute(_MARK_ACTION_ERROR, {'action_id': action_id})

        if batch:
            self._write(insert_all)

    def _insert_event(self, conn: sa.Connection, request_id: str,
                      instance_uuid: str, action: str,
                      row: dict[str, Any]) -> None:
        """Insert the event unless a previous attempt did (same token)."""
        if conn.execute(_FIND_TOKEN, {'token': row['token']}).first():
            return
        action_id = self._action_id(conn, request_id, instance_uuid,
                                    action, row['host'])
        conn.execute(_INSERT_EVENT, dict(row, action_id=action_id))
        if (row.get('result') or '').lower() == events.ERROR.lower():
            conn.execute(_MARK_ACTION_ERROR, {'action_id': action_id})

    def event_finish(self, request_id: str, instance_uuid: str, event: str,
                     result: str, details: str | None = None,
                     traceback: str | None = None) -> None:
        """Finish the newest unfinished ``event`` of the action.

        An ``Error`` result also marks the action's message ``Error``, as
        nova does.  Retried after a broken connection, the finish is
        applied once: an attempt whose commit did land is recognised by its
        finish time and result.

        :raises: EventNotFound (an EventStoreError and a KeyError) when no
            such event is unfinished.
        """
        self._check(result=result)
        values = {'finish_time': _now(), 'result': result,
                  'details': _text(details),
                  'traceback': _text(traceback)}
        tried: list[int] = []

        def finish(conn: sa.Connection) -> None:
            for event_id in tried:   # did an earlier attempt commit?
                done = conn.execute(
                    sa.select(action_events.c.finish_time,
                              action_events.c.result)
                    .where(action_events.c.id == event_id)).first()
                if done is not None and tuple(done) == (
                        values['finish_time'], result):
                    return
            row = conn.execute(_FIND_OPEN_EVENT, {
                'request_id': request_id, 'instance_uuid': instance_uuid,
                'event': event}).first()
            if row is None:
                raise exception.EventNotFound(
                    url=self.url, event=event, instance=instance_uuid,
                    request_id=request_id)
            tried.append(row.id)
            conn.execute(_FINISH_EVENT, dict(values, event_id=row.id))
            if result.lower() == events.ERROR.lower():
                conn.execute(_MARK_ACTION_ERROR, {'action_id': row.action_id})

        self._write(finish)

    @contextlib.contextmanager
    def _reader(self) -> Iterator[sa.Connection]:
        with self._guard(), self.engine.connect() as conn:
            yield conn.execution_options(**{_READ_ONLY: True})

    def list_events(self, instance_uuid: str) -> list[events.EventRecord]:
        with self._reader() as conn:
            rows = conn.execute(_LIST_EVENTS,
                                {'instance_uuid': instance_uuid}).all()
        return [_event_record(r) for r in rows]

    def find_events(self, event: str,
                    host: str | None = None) -> list[events.EventRecord]:
        query = _FIND_EVENTS.where(action_events.c.event == event)
        if host is not None:
            query = query.where(action_events.c.host == host)
        with self._reader() as conn:
            rows = conn.execute(query).all()
        return [_event_record(r) for r in rows]

    def list_actions(self, instance_uuid: str) -> list[events.ActionRecord]:
        """Every action of an instance, oldest first."""
        query = (sa.select(actions)
                 .where(actions.c.instance_uuid == instance_uuid)
                 .order_by(actions.c.start_time, actions.c.id))
        with self._reader() as conn:
            rows = conn.execute(query).all()
        return [events.ActionRecord(
            id=r.id, request_id=r.request_id, instance_uuid=r.instance_uuid,
            action=r.action,
            start_time=_aware(r.start_time),  # type: ignore[arg-type]
            finish_time=_aware(r.finish_time), host=r.host,
            message=r.message) for r in rows]

    def close(self) -> None:
        self.engine.dispose()

    def __repr__(self) -> str:
        return f'{type(self).__name__}({self.url!r})'


def _after_fork() -> None:
    """In a forked child, drop the parent's pooled connections unclosed."""
    for store in list(_STORES):
        store.engine.dispose(close=False)


_STORES: weakref.WeakSet[SQLEventStore] = weakref.WeakSet()
os.register_at_fork(after_in_child=_after_fork)
