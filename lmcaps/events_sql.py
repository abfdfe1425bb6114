"""An :class:`~lmcaps.events.EventStore` in a database, through SQLAlchemy.

The tables carry nova's fields (``instance_actions`` and
``instance_actions_events``).  Every call is one short transaction; with
SQLite the database runs in WAL mode, writers take the lock up front
(``BEGIN IMMEDIATE``) and wait for it (busy timeout), so concurrent threads
and processes on one host lose no event.  Point every host at one MySQL or
PostgreSQL URL to share the events across a fleet.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from oslo_config import cfg
from sqlalchemy import event as sa_event
from sqlalchemy import exc as sa_exc
from sqlalchemy import pool as sa_pool

from lmcaps import conf as lmcaps_conf
from lmcaps import events
from lmcaps import exception

#: Seconds a writer waits for another writer's lock before giving up.
BUSY_TIMEOUT = 30.0

metadata = sa.MetaData()

actions = sa.Table(
    'instance_actions', metadata,
    sa.Column('id', sa.Integer, primary_key=True, autoincrement=True),
    sa.Column('request_id', sa.String(255), nullable=False),
    sa.Column('instance_uuid', sa.String(36), nullable=False),
    sa.Column('action', sa.String(255), nullable=False),
    sa.Column('start_time', sa.DateTime, nullable=False),
    sa.Column('finish_time', sa.DateTime),
    sa.Column('host', sa.String(255)),
    sa.Column('message', sa.String(255)),
    # Also serves the lookups by instance (leftmost column): one index less
    # to write per action.
    sa.UniqueConstraint('instance_uuid', 'request_id',
                        name='uniq_instance_actions0instance_uuid0request_id'),
)

action_events = sa.Table(
    'instance_actions_events', metadata,
    sa.Column('id', sa.Integer, primary_key=True, autoincrement=True),
    sa.Column('action_id', sa.Integer,
              sa.ForeignKey('instance_actions.id'), nullable=False),
    sa.Column('event', sa.String(255), nullable=False),
    sa.Column('start_time', sa.DateTime, nullable=False),
    sa.Column('finish_time', sa.DateTime),
    sa.Column('result', sa.String(255)),
    sa.Column('traceback', sa.Text),
    sa.Column('host', sa.String(255)),
    sa.Column('details', sa.Text),
    sa.Index('instance_actions_events_action_id_event_idx',
             'action_id', 'event'),
)

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
    action_events.c.id == sa.bindparam('event_id'))
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


_PASSWORD_RE = re.compile(r'(://[^:/@]*:).*@')
_READ_ONLY = 'lmcaps_read_only'


def mask_url(url: str | sa.engine.URL) -> str:
    """The URL with any password replaced by ``***``."""
    if isinstance(url, sa.engine.URL):
        return url.render_as_string(hide_password=True)
    return _PASSWORD_RE.sub(r'\1***@', str(url))


def _reason(exc: BaseException) -> str:
    """One line saying why, from a DBAPI, SQLAlchemy or OS error."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None:
        exc = exc.orig
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror + (f': {exc.filename}' if exc.filename else '')
    else:
        text = str(exc) or type(exc).__name__
    return ' '.join(text.split())[:300]


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
        or ``mysql+pymysql://user:pw@db/lmcaps``; ``~`` in a SQLite path is
        expanded and the directory created.
    :param busy_timeout: SQLite only: seconds to wait for another writer.
    :raises: EventStoreError naming the (masked) URL and the reason when the
        database cannot be opened, read, written or initialised.
    """

    def __init__(self, url: str, busy_timeout: float = BUSY_TIMEOUT) -> None:
        self.url = mask_url(url)
        try:
            parsed = sa.engine.make_url(url)
        except (sa_exc.ArgumentError, ValueError) as exc:
            raise self._error(f'not a database URL ({_reason(exc)})') from exc
        self.url = mask_url(parsed)
        self._memory = False
        self._lock: threading.Lock | contextlib.nullcontext = \
            contextlib.nullcontext()
        kwargs: dict[str, Any] = {}
        if parsed.get_backend_name() == 'sqlite':
            parsed = self._prepare_sqlite(parsed)
            kwargs['connect_args'] = {'timeout': busy_timeout,
                                      'check_same_thread': False}
            if self._memory:
                kwargs['poolclass'] = sa_pool.StaticPool
                self._lock = threading.Lock()
        else:
            kwargs['pool_pre_ping'] = True
        self.url = mask_url(parsed)
        try:
            self.engine = sa.create_engine(parsed, **kwargs)
        except (sa_exc.SQLAlchemyError, ImportError) as exc:
            raise self._error(f'cannot use this database ({_reason(exc)})'
                              ) from exc
        if parsed.get_backend_name() == 'sqlite':
            self._setup_sqlite(busy_timeout)
        with self._guard():
            self._create_schema()
        _STORES.add(self)

    @classmethod
    def from_conf(cls, conf: cfg.ConfigOpts) -> SQLEventStore:
        """The store at ``[lmcaps] event_connection``."""
        return cls(conf[lmcaps_conf.GROUP].event_connection)

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

    def _setup_sqlite(self, busy_timeout: float) -> None:
        """WAL, busy timeout, foreign keys; writers lock at BEGIN."""
        millis = int(busy_timeout * 1000)
        memory = self._memory

        @sa_event.listens_for(self.engine, 'connect')
        def _connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
            cur = dbapi_conn.cursor()
            try:
                cur.execute(f'PRAGMA busy_timeout = {millis}')
                if not memory:
                    cur.execute('PRAGMA journal_mode = WAL')
                    cur.execute('PRAGMA synchronous = NORMAL')
                cur.execute('PRAGMA foreign_keys = ON')
            finally:
                cur.close()

        @sa_event.listens_for(self.engine, 'begin')
        def _begin(conn: sa.Connection) -> None:
            # Taking the write lock at BEGIN makes a writer wait for another
            # (busy timeout) instead of failing when it upgrades a read lock.
            if conn.get_execution_options().get(_READ_ONLY):
                conn.exec_driver_sql('BEGIN')
            else:
                conn.exec_driver_sql('BEGIN IMMEDIATE')

    def _create_schema(self) -> None:
        """Create the tables unless they exist (once, not per call)."""
        try:
            with self.engine.begin() as conn:
                metadata.create_all(conn, checkfirst=True)
        except sa_exc.OperationalError:
            # Another process created them between our check and create.
            with self.engine.begin() as conn:
                metadata.create_all(conn, checkfirst=True)

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
        return result.inserted_primary_key[0]

    def _write(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(conn, *args)`` in one transaction; retry a lost race once.

        Only servers without BEGIN IMMEDIATE can lose the race to create an
        action (unique constraint); the retry then finds it.
        """
        with self._guard():
            try:
                with self.engine.begin() as conn:
                    return fn(conn, *args)
            except sa_exc.IntegrityError:
                with self.engine.begin() as conn:
                    return fn(conn, *args)

    def action_start(self, request_id: str, instance_uuid: str, action: str,
                     host: str | None = None) -> None:
        self._write(self._action_id, request_id, instance_uuid, action, host)

    def event_start(self, request_id: str, instance_uuid: str, event: str,
                    host: str | None = None,
                    action: str = events.LIVE_MIGRATION) -> None:
        def start(conn: sa.Connection) -> None:
            action_id = self._action_id(conn, request_id, instance_uuid,
                                        action, host)
            conn.execute(_INSERT_EVENT, {
                'action_id': action_id, 'event': event,
                'start_time': _now(), 'host': host})

        self._write(start)

    def event_finish(self, request_id: str, instance_uuid: str, event: str,
                     result: str, details: str | None = None,
                     traceback: str | None = None) -> None:
        """Finish the newest unfinished ``event`` of the action.

        An ``Error`` result also marks the action's message ``Error``, as
        nova does.

        :raises: EventNotFound (an EventStoreError and a KeyError) when no
            such event is unfinished.
        """
        def finish(conn: sa.Connection) -> None:
            row = conn.execute(_FIND_OPEN_EVENT, {
                'request_id': request_id, 'instance_uuid': instance_uuid,
                'event': event}).first()
            if row is None:
                raise exception.EventNotFound(
                    url=self.url, event=event, instance=instance_uuid,
                    request_id=request_id)
            conn.execute(_FINISH_EVENT, {
                'event_id': row.id, 'finish_time': _now(), 'result': result,
                'details': details, 'traceback': traceback})
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
            action=r.action, start_time=_aware(r.start_time),
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
