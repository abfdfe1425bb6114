"""Tests of the SQL event store: nova's semantics, concurrency, errors."""

from __future__ import annotations

import multiprocessing
import os
import threading
import uuid
from typing import Any

import ddt
import fixtures
import sqlalchemy as sa
from oslo_config import cfg
from oslo_config import fixture as cfg_fixture
from oslotest import base as test_base

from lmcaps import conf as lmcaps_conf
from lmcaps import events
from lmcaps import events_sql
from lmcaps import exception

INSTANCE = '8a1f3a2e-4d5c-4b7a-9e0f-1a2b3c4d5e6f'
NOBODY = 65534


class _StoreContract:
    """The EventStore contract, run on each store by a small subclass."""

    def make_store(self) -> events.EventStore:
        raise NotImplementedError

    def setUp(self) -> None:
        super().setUp()
        self.store = self.make_store()
        self.addCleanup(self.store.close)

    def test_record_creates_action_and_finished_event(self) -> None:
        self.store.record('req-1', INSTANCE, 'ev', events.SUCCESS,
                          host='h1', details='fine')
        [ev] = self.store.list_events(INSTANCE)
        self.assertEqual(('req-1', INSTANCE, events.LIVE_MIGRATION, 'ev',
                          events.SUCCESS, 'h1', 'fine'),
                         (ev.request_id, ev.instance_uuid, ev.action,
                          ev.event, ev.result, ev.host, ev.details))
        self.assertIsNotNone(ev.finish_time)
        self.assertLessEqual(ev.start_time, ev.finish_time)
        self.assertIsNotNone(ev.start_time.tzinfo)

    def test_finish_takes_newest_unfinished_of_that_name(self) -> None:
        self.store.event_start('req-1', INSTANCE, 'ev')
        self.store.event_start('req-1', INSTANCE, 'other')
        self.store.event_start('req-1', INSTANCE, 'ev')
        self.store.event_finish('req-1', INSTANCE, 'ev', events.ERROR,
                                details='why', traceback='tb')
        evs = self.store.list_events(INSTANCE)
        self.assertEqual(['ev', 'other', 'ev'], [e.event for e in evs])
        self.assertEqual([None, None, events.ERROR],
                         [e.result for e in evs])
        self.assertEqual(('why', 'tb'), (evs[2].details, evs[2].traceback))
        self.store.event_finish('req-1', INSTANCE, 'ev', events.SUCCESS)
        self.assertEqual(events.SUCCESS,
                         self.store.list_events(INSTANCE)[0].result)

    def test_finish_is_scoped_to_request_and_instance(self) -> None:
        self.store.event_start('req-1', INSTANCE, 'ev')
        self.store.event_start('req-2', INSTANCE, 'ev')
        self.store.event_start('req-1', 'other-instance', 'ev')
        self.store.event_finish('req-1', INSTANCE, 'ev', events.SUCCESS)
        results = {e.request_id: e.result
                   for e in self.store.list_events(INSTANCE)}
        self.assertEqual({'req-1': events.SUCCESS, 'req-2': None}, results)
        self.assertIsNone(self.store.list_events('other-instance')[0].result)

    def test_finish_without_start_raises(self) -> None:
        self.store.record('req-1', INSTANCE, 'ev', events.SUCCESS)
        self.assertRaises(KeyError, self.store.event_finish,
                          'req-1', INSTANCE, 'ev', events.SUCCESS)

    def test_one_action_per_request_and_instance(self) -> None:
        self.store.action_start('req-1', INSTANCE, events.LIVE_MIGRATION)
        self.store.record('req-1', INSTANCE, 'a', events.SUCCESS)
        self.store.record('req-1', INSTANCE, 'b', events.SUCCESS)
        self.store.record('req-2', INSTANCE, 'a', events.SUCCESS)
        evs = self.store.list_events(INSTANCE)
        self.assertEqual(evs[0].action_id, evs[1].action_id)
        self.assertNotEqual(evs[0].action_id, evs[2].action_id)

    def test_reporter_records_error_with_traceback(self) -> None:
        def fail() -> None:
            with events.reporter(self.store, 'req-1', INSTANCE, 'ev'):
                raise ValueError('boom')

        self.assertRaises(ValueError, fail)
        [ev] = self.store.list_events(INSTANCE)
        self.assertEqual((events.ERROR, 'boom'), (ev.result, ev.details))
        self.assertIn('ValueError: boom', ev.traceback)

    def test_unknown_instance_lists_nothing(self) -> None:
        self.assertEqual([], self.store.list_events('nobody'))

    def test_record_many_records_each_in_order(self) -> None:
        self.store.record_many([
            events.Event('req-1', INSTANCE, f'ev-{i}', events.SUCCESS,
                         host='h1', details=str(i)) for i in range(5)]
            + [events.Event('req-2', INSTANCE, 'bad', events.ERROR)])
        got = self.store.list_events(INSTANCE)
        self.assertEqual([f'ev-{i}' for i in range(5)] + ['bad'],
                         [e.event for e in got])
        self.assertEqual([str(i) for i in range(5)] + [None],
                         [e.details for e in got])
        self.assertEqual({'req-1', 'req-2'}, {e.request_id for e in got})
        self.assertTrue(all(e.finish_time for e in got))


class MemoryStoreContractTest(_StoreContract, test_base.BaseTestCase):
    def make_store(self) -> events.EventStore:
        return events.MemoryEventStore()


class SQLiteMemoryStoreContractTest(_StoreContract, test_base.BaseTestCase):
    def make_store(self) -> events.EventStore:
        return events_sql.SQLEventStore('sqlite://')


class SQLiteFileStoreContractTest(_StoreContract, test_base.BaseTestCase):
    def make_store(self) -> events.EventStore:
        return events_sql.SQLEventStore(
            f'sqlite:///{self.useFixture(fixtures.TempDir()).path}/ev.sqlite')

    def test_record_many_is_all_or_none(self) -> None:
        long = 'x' * (events_sql.WIDTHS['event'] + 1)
        self.assertRaises(exception.EventStoreError, self.store.record_many, [
            events.Event('req-1', INSTANCE, 'fits', events.SUCCESS),
            events.Event('req-1', INSTANCE, long, events.SUCCESS)])
        self.assertEqual([], self.store.list_events(INSTANCE))


# -- concurrency ---------------------------------------------------------

PROCESSES = 4
THREADS = 4
RECORDS = 25


def _writer(url: str, worker: int, threads: int, records: int) -> None:
    """A process: ``threads`` threads each record ``records`` events."""
    store = events_sql.SQLEventStore(url)
    errors: list[BaseException] = []

    def run(thread: int) -> None:
        try:
            for i in range(records):
                # Half the events share one action across every writer, so
                # processes also race to create the same action.
                req = 'req-shared' if i % 2 else f'req-{worker}-{thread}-{i}'
                store.event_start(req, INSTANCE, f'ev-{worker}-{thread}-{i}',
                                  host=f'host-{worker}')
                store.event_finish(req, INSTANCE, f'ev-{worker}-{thread}-{i}',
                                   events.SUCCESS, details=str(i))
        except BaseException as exc:  # reported through the exit code
            errors.append(exc)

    workers = [threading.Thread(target=run, args=(t,))
               for t in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    store.close()
    if errors:
        raise SystemExit(f'{len(errors)} writer(s) failed: {errors[0]!r}')


def _create_and_record(url: str, barrier: Any, worker: int) -> None:
    """A process: open a store on a new file at the same time as others."""
    barrier.wait(60)
    store = events_sql.SQLEventStore(url)
    store.record(f'req-{worker}', INSTANCE, 'ev', events.SUCCESS)
    store.close()


class ConcurrencyTest(test_base.BaseTestCase):
    """Several processes with several threads each write at once."""

    def test_processes_create_the_database_at_once(self) -> None:
        url = f'sqlite:///{self.useFixture(fixtures.TempDir()).path}/new.db'
        ctx = multiprocessing.get_context('spawn')
        barrier = ctx.Barrier(PROCESSES)
        procs = [ctx.Process(target=_create_and_record,
                             args=(url, barrier, w))
                 for w in range(PROCESSES)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
        self.assertEqual([0] * PROCESSES, [p.exitcode for p in procs])
        store = events_sql.SQLEventStore(url)
        self.addCleanup(store.close)
        self.assertEqual({f'req-{w}' for w in range(PROCESSES)},
                         {e.request_id for e in store.list_events(INSTANCE)})

    def test_no_event_lost(self) -> None:
        path = self.useFixture(fixtures.TempDir()).path
        url = f'sqlite:///{path}/ev.sqlite'
        ctx = multiprocessing.get_context('spawn')
        procs = [ctx.Process(target=_writer,
                             args=(url, w, THREADS, RECORDS))
                 for w in range(PROCESSES)]
        for p in procs:
            p.start()
        # This process writes at the same time, with threads of its own.
        _writer(url, PROCESSES, THREADS, RECORDS)
        for p in procs:
            p.join(120)
        self.assertEqual([0] * PROCESSES, [p.exitcode for p in procs])

        store = events_sql.SQLEventStore(url)
        self.addCleanup(store.close)
        evs = store.list_events(INSTANCE)
        expected = (PROCESSES + 1) * THREADS * RECORDS
        self.assertEqual(expected, len(evs))
        self.assertEqual(expected, len({e.event for e in evs}))
        self.assertEqual({events.SUCCESS}, {e.result for e in evs})
        self.assertTrue(all(e.finish_time for e in evs))
        shared = {e.action_id for e in evs if e.request_id == 'req-shared'}
        self.assertEqual(1, len(shared))
        own_actions = (PROCESSES + 1) * THREADS * ((RECORDS + 1) // 2)
        self.assertEqual(own_actions + 1, len(store.list_actions(INSTANCE)))

    def test_sqlite_runs_in_wal_mode_with_busy_timeout(self) -> None:
        path = self.useFixture(fixtures.TempDir()).path
        store = events_sql.SQLEventStore(f'sqlite:///{path}/ev.sqlite',
                                         busy_timeout=7)
        self.addCleanup(store.close)
        with store.engine.connect() as conn:
            self.assertEqual(
                'wal', conn.exec_driver_sql('PRAGMA journal_mode').scalar())
            self.assertEqual(
                7000, conn.exec_driver_sql('PRAGMA busy_timeout').scalar())


# -- errors ------------------------------------------------------------

def _open_as_nobody(url: str, queue: multiprocessing.Queue) -> None:
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    try:
        store = events_sql.SQLEventStore(url)
        store.record('r', INSTANCE, 'ev', events.SUCCESS)
        queue.put('opened')
    except exception.EventStoreError as exc:
        queue.put(f'EventStoreError: {exc}')
    except BaseException as exc:
        queue.put(f'{type(exc).__name__}: {exc}')


@ddt.ddt
class ErrorTest(test_base.BaseTestCase):
    """Every unusable store is one EventStoreError naming URL and reason."""

    def setUp(self) -> None:
        super().setUp()
        # Outside the nested (0700) test tempdir, so that an unprivileged
        # user can reach it.
        self.dir = self.useFixture(fixtures.TempDir(
            rootdir=os.environ.get('TMPDIR') or '/tmp')).path

    def assertStoreError(self, url: str, *fragments: str) -> str:
        exc = self.assertRaises(exception.EventStoreError,
                                events_sql.SQLEventStore, url)
        msg = str(exc)
        self.assertNotIn('\n', msg)
        for fragment in fragments:
            self.assertIn(fragment, msg)
        return msg

    def test_finish_without_start_is_event_not_found(self) -> None:
        store = events_sql.SQLEventStore('sqlite://')
        self.addCleanup(store.close)
        exc = self.assertRaises(exception.EventNotFound, store.event_finish,
                                'req-1', INSTANCE, 'ev', events.SUCCESS)
        self.assertIsInstance(exc, exception.EventStoreError)
        self.assertIsInstance(exc, KeyError)
        # The message itself, not KeyError's quoted repr of it.
        self.assertEqual(f'Event store {store.url} has no unfinished event '
                         f'ev for instance {INSTANCE}, request req-1',
                         str(exc))

    @ddt.data(
        ('not a url', 'not a database URL'),
        ('nosuchdialect://u:pw@host/db', 'cannot use this database'),
        ('mysql+nosuchdriver://u:pw@host/db', 'cannot use this database'),
    )
    @ddt.unpack
    def test_unusable_url(self, url: str, reason: str) -> None:
        msg = self.assertStoreError(url, reason)
        self.assertNotIn('pw', msg)
        self.assertIn(url.replace(':pw@', ':***@') if '://' in url
                      else '***', msg)

    def test_password_masked_when_url_does_not_parse(self) -> None:
        self.assertEqual('x://***@h/db',
                         events_sql.mask_url('x://u:se:cr@t@h/db'))
        self.assertEqual('x://h/db', events_sql.mask_url('x://h/db'))

    def test_corrupt_file(self) -> None:
        path = os.path.join(self.dir, 'ev.sqlite')
        with open(path, 'wb') as f:
            f.write(b'this is not sqlite' * 100)
        self.assertStoreError(f'sqlite:///{path}', path,
                              'file is not a database')

    def test_path_is_a_directory(self) -> None:
        self.assertStoreError(f'sqlite:///{self.dir}', self.dir,
                              'is a directory')

    def test_directory_cannot_be_created(self) -> None:
        blocker = os.path.join(self.dir, 'file')
        open(blocker, 'w').close()
        self.assertStoreError(f'sqlite:///{blocker}/sub/ev.sqlite',
                              'cannot create directory', 'Not a directory')

    def test_directory_is_created(self) -> None:
        path = os.path.join(self.dir, 'a', 'b', 'ev.sqlite')
        store = events_sql.SQLEventStore(f'sqlite:///{path}')
        self.addCleanup(store.close)
        self.assertTrue(os.path.isfile(path))

    def _as_unprivileged(self, url: str) -> str:
        """Open ``url`` as an unprivileged user; root runs it as nobody."""
        if os.geteuid() != 0:
            try:
                events_sql.SQLEventStore(url).record(
                    'r', INSTANCE, 'ev', events.SUCCESS)
                return 'opened'
            except exception.EventStoreError as exc:
                return f'EventStoreError: {exc}'
        os.chmod(self.dir, 0o755)
        ctx = multiprocessing.get_context('fork')
        queue = ctx.Queue()
        proc = ctx.Process(target=_open_as_nobody, args=(url, queue))
        proc.start()
        answer = queue.get(timeout=60)
        proc.join(60)
        return answer

    def test_unwritable_directory(self) -> None:
        sub = os.path.join(self.dir, 'ro')
        os.mkdir(sub)
        os.chmod(sub, 0o555)
        answer = self._as_unprivileged(f'sqlite:///{sub}/ev.sqlite')
        self.assertEqual(f'EventStoreError: Event store sqlite:///{sub}/'
                         f'ev.sqlite is unusable: directory {sub} is not '
                         f'writable', answer)

    def test_unreadable_file(self) -> None:
        sub = os.path.join(self.dir, 'rw')
        os.mkdir(sub)
        os.chmod(sub, 0o777)
        path = os.path.join(sub, 'ev.sqlite')
        events_sql.SQLEventStore(f'sqlite:///{path}').close()
        os.chmod(path, 0o200)
        answer = self._as_unprivileged(f'sqlite:///{path}')
        self.assertEqual(f'EventStoreError: Event store sqlite:///{path} is '
                         f'unusable: file {path} is not readable and '
                         f'writable', answer)

    def test_write_failure_after_open_is_store_error(self) -> None:
        store = events_sql.SQLEventStore('sqlite://')
        self.addCleanup(store.close)
        with store.engine.begin() as conn:
            conn.execute(sa.text('DROP TABLE instance_actions_events'))
        exc = self.assertRaises(exception.EventStoreError, store.event_start,
                                'r', INSTANCE, 'ev')
        self.assertIn('no such table', str(exc))
        self.assertIn('sqlite://', str(exc))


class FromConfTest(test_base.BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.conf = cfg.ConfigOpts()
        lmcaps_conf.register_opts(self.conf)
        self.fixture = self.useFixture(cfg_fixture.Config(self.conf))
        self.conf([], default_config_files=[])

    def test_default_url_is_a_file_under_state_path(self) -> None:
        state = os.path.join(self.useFixture(fixtures.TempDir()).path, 'state')
        self.fixture.config(group='lmcaps', state_path=state)
        store = events_sql.SQLEventStore.from_conf(self.conf)
        self.addCleanup(store.close)
        store.record('r', INSTANCE, 'ev', events.SUCCESS)
        self.assertTrue(os.path.isfile(
            os.path.join(state, 'lmcaps-events.sqlite')))

    def test_tilde_is_expanded(self) -> None:
        home = self.useFixture(fixtures.TempDir()).path
        self.useFixture(fixtures.EnvironmentVariable('HOME', home))
        self.fixture.config(group='lmcaps', state_path='~/st')
        store = events_sql.SQLEventStore.from_conf(self.conf)
        self.addCleanup(store.close)
        self.assertTrue(os.path.isfile(
            os.path.join(home, 'st', 'lmcaps-events.sqlite')))
        self.assertIn(home, store.url)

    def test_connection_option_is_used(self) -> None:
        path = os.path.join(self.useFixture(fixtures.TempDir()).path, 'x.db')
        self.fixture.config(group='lmcaps',
                            event_connection=f'sqlite:///{path}')
        store = events_sql.SQLEventStore.from_conf(self.conf)
        self.addCleanup(store.close)
        store.record(str(uuid.uuid4()), INSTANCE, 'ev', events.SUCCESS)
        other = events_sql.SQLEventStore(f'sqlite:///{path}')
        self.addCleanup(other.close)
        self.assertEqual(1, len(other.list_events(INSTANCE)))
