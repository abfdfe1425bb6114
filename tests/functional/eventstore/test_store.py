"""The event store against SQLite and a real PostgreSQL server.

One test class, :class:`_StoreOnServerTests`, run once per database URL by
the two small subclasses at the end (SQLite file; PostgreSQL 15 cluster on
loopback, see tests/postgres.py).  With ``CI=true`` a missing PostgreSQL
fails the run.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import queue as queue_mod
import threading
import time

import fixtures
import sqlalchemy as sa
from oslotest import base as test_base

from lmcaps import db
from lmcaps import events
from lmcaps import events_sql
from lmcaps import exception
from lmcaps import masking
from lmcaps import validation
from lmcaps.cmd import main as cli_main
from tests import backend as test_backend
from tests import postgres
from tests.functional.eventstore import main_schema
from tests.functional.eventstore import workers
from tests.unit import test_events_sql

INSTANCE = workers.INSTANCE
PROCESSES = 4
THREADS = 4
RECORDS = 10
FIRST_STARTS = 12


def _collect(q: multiprocessing.Queue, count: int, timeout: float) -> list:
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < count:
        try:
            out.append(q.get(timeout=max(0.1, deadline - time.monotonic())))
        except queue_mod.Empty:
            break
    return out


class _StoreOnServerTests(test_events_sql._StoreContract):
    """The store contract and the fleet properties, on ``new_url()``."""

    def new_url(self) -> str:
        raise NotImplementedError

    def make_store(self) -> events.EventStore:
        return events_sql.SQLEventStore(self.new_url())

    # -- widths and text ---------------------------------------------------

    def test_everything_validation_allows_is_stored(self) -> None:
        name = 'web-frontend-production-eu-west-1-0042' * 6
        key = validation.instance_key(name[:validation.NAME_MAX])
        req = validation.request_id('r' * validation.REQUEST_ID_MAX)
        host = validation.name('h' * validation.NAME_MAX, 'host')
        details = 'NUL \x00 bidi \u202e bell \x07 ' + 'x' * (1 << 20)
        self.store.record(req, key, events.OUTCOME, events.ERROR, host=host,
                          details=details, traceback='tb\x00')
        [ev] = self.store.list_events(key)
        self.assertEqual((req, host), (ev.request_id, ev.host))
        self.assertTrue(ev.details.startswith(
            'NUL \\x00 bidi \\u202e bell \\x07 '))
        self.assertEqual(len(details) + 11, len(ev.details))
        self.assertEqual('tb\\x00', ev.traceback)

    def test_too_long_is_one_clear_error_on_every_database(self) -> None:
        exc = self.assertRaises(exception.EventStoreError, self.store.record,
                                'r' * 256, INSTANCE, 'ev', events.SUCCESS)
        self.assertIn('request_id', str(exc))
        self.assertIn('longer than 255', str(exc))
        self.assertLess(len(str(exc)), 400)
        self.assertEqual([], self.store.list_events(INSTANCE))

    # -- schema --------------------------------------------------------------

    def test_new_database_is_at_the_newest_revision(self) -> None:
        with self.store.engine.connect() as conn:
            self.assertEqual(db.head(), db.current(conn))
        self.assertEqual('0002', db.head())

    def test_upgrade_from_the_unversioned_schema(self) -> None:
        url = self.new_url()
        engine = sa.create_engine(url)
        self.addCleanup(engine.dispose)
        with engine.begin() as conn:
            main_schema.metadata.create_all(conn)
            action_id = conn.execute(main_schema.actions.insert().values(
                request_id='req-old', instance_uuid=INSTANCE,
                action=events.LIVE_MIGRATION,
                start_time=events_sql._now())).inserted_primary_key[0]
            conn.execute(main_schema.action_events.insert().values(
                action_id=action_id, event='old', result=events.SUCCESS,
                start_time=events_sql._now(), finish_time=events_sql._now()))
        store = events_sql.SQLEventStore(url)
        self.addCleanup(store.close)
        with store.engine.connect() as conn:
            self.assertEqual(db.head(), db.current(conn))
        store.record('req-new', INSTANCE, 'new', events.SUCCESS)
        self.assertEqual(['old', 'new'],
                         [e.event for e in store.list_events(INSTANCE)])

    def test_concurrent_first_starts_all_succeed(self) -> None:
        url = self.new_url()
        ctx = multiprocessing.get_context('spawn')
        barrier = ctx.Barrier(FIRST_STARTS)
        q = ctx.Queue()
        procs = [ctx.Process(target=workers.first_start,
                             args=(url, barrier, w, q))
                 for w in range(FIRST_STARTS)]
        for p in procs:
            p.start()
        results = _collect(q, FIRST_STARTS, 180)
        for p in procs:
            p.join(30)
        self.assertEqual(['ok'] * FIRST_STARTS, results)
        store = events_sql.SQLEventStore(url)
        self.addCleanup(store.close)
        self.assertEqual(FIRST_STARTS, len(store.list_events(INSTANCE)))

    def test_db_upgrade_command(self) -> None:
        url = self.new_url()
        path = os.path.join(self.useFixture(fixtures.TempDir()).path,
                            'lmcaps.conf')
        with open(path, 'w') as f:
            f.write(f'[lmcaps]\nevent_connection = {url}\n')

        def lmcaps(*argv: str) -> tuple[int, str]:
            out, err = io.StringIO(), io.StringIO()
            with fixtures.MonkeyPatch('sys.stdout', out), \
                    fixtures.MonkeyPatch('sys.stderr', err):
                code = cli_main.main(['--config-file', path, *argv,
                                      '-f', 'value'])
            return code, out.getvalue() + err.getvalue()

        self.assertEqual((0, f'{masking.mask_url(url)}\n(none)\n'
                             f'{db.head()}\n'), lmcaps('db', 'version'))
        self.assertEqual((0, f'{masking.mask_url(url)}\n(none)\n'
                             f'{db.head()}\n'), lmcaps('db', 'upgrade'))
        self.assertEqual((0, f'{masking.mask_url(url)}\n{db.head()}\n'
                             f'{db.head()}\n'), lmcaps('db', 'upgrade'))

    # -- concurrency ---------------------------------------------------------

    def test_processes_and_threads_lose_no_event(self) -> None:
        url = self.new_url()
        events_sql.SQLEventStore(url).close()
        ctx = multiprocessing.get_context('spawn')
        q = ctx.Queue()
        procs = [ctx.Process(target=workers.write_events,
                             args=(url, w, THREADS, RECORDS, q))
                 for w in range(PROCESSES)]
        for p in procs:
            p.start()
        results = _collect(q, PROCESSES, 180)
        for p in procs:
            p.join(30)
        self.assertEqual([(THREADS * RECORDS, [])] * PROCESSES, results)
        store = events_sql.SQLEventStore(url)
        self.addCleanup(store.close)
        evs = store.list_events(INSTANCE)
        self.assertEqual(PROCESSES * THREADS * RECORDS,
                         len({e.event for e in evs}))
        self.assertEqual(len(evs), len({e.event for e in evs}))
        self.assertEqual({events.SUCCESS}, {e.result for e in evs})


class SQLiteStoreTest(_StoreOnServerTests, test_base.BaseTestCase):
    def new_url(self) -> str:
        path = self.useFixture(fixtures.TempDir()).path
        return f'sqlite:///{path}/ev-{self.getUniqueInteger()}.sqlite'


class PostgreSQLStoreTest(_StoreOnServerTests, test_base.BaseTestCase):
    def setUp(self) -> None:
        ok, reason = postgres.available()
        test_backend.require(self, ok, f'PostgreSQL: {reason}')
        self.cluster = postgres.shared()
        super().setUp()

    def new_url(self) -> str:
        name = self.cluster.new_database()
        self.addCleanup(self.cluster.drop_database, name)
        return self.cluster.url(name)

    def test_connections_killed_mid_write_leave_no_half_event(self) -> None:
        """pg_terminate_backend every 20 ms while 8 threads write events."""
        name = self.cluster.new_database()
        self.addCleanup(self.cluster.drop_database, name)
        url = self.cluster.url(name)
        events_sql.SQLEventStore(url).close()
        stop = threading.Event()
        killed = [0]

        def killer() -> None:
            while not stop.is_set():
                killed[0] += self.cluster.terminate_backends(name)
                time.sleep(0.02)

        thread = threading.Thread(target=killer)
        thread.start()
        try:
            done, errors = workers.write_events(url, 0, 8, 25)
        finally:
            stop.set()
            thread.join()
        self.assertGreater(killed[0], 0)   # connections really were killed
        self.assertEqual((200, []), (done, errors))
        store = events_sql.SQLEventStore(url)
        self.addCleanup(store.close)
        evs = store.list_events(INSTANCE)
        self.assertEqual(200, len(evs))          # none lost, none twice
        self.assertEqual(200, len({e.event for e in evs}))
        self.assertEqual([], [e.event for e in evs if e.finish_time is None])

    def test_server_down_is_one_line_after_the_retry_budget(self) -> None:
        name = self.cluster.new_database()
        self.addCleanup(self.cluster.drop_database, name)
        store = events_sql.SQLEventStore(self.cluster.url(name),
                                         retry_budget=1.0)
        self.addCleanup(store.close)
        self.cluster.drop_database(name)
        exc = self.assertRaises(exception.EventStoreError, store.record,
                                'r', INSTANCE, 'ev', events.SUCCESS)
        self.assertIn(name, str(exc))
        self.assertNotIn('\n', str(exc))
