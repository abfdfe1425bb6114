"""The driver API v2 base class: contracts enforced for every driver."""

from __future__ import annotations

import threading
import time

import ddt

from lmcaps import capabilities as caps
from lmcaps import events
from lmcaps import exception
from lmcaps import monitor
from lmcaps import policy
from lmcaps.drivers import base
from tests.unit import base as test_base

P = base.Phase
SRC = base.GuestLocation(base.GuestHost.SOURCE, base.RunState.RUNNING)


class TaskDriver(base.LiveMigrationDriver):
    """A task backend in a few lines: progress and location are scripted."""

    name = 'task'

    def __init__(self, conf, progress=None, where=SRC, abort_takes=0.0,
                 abort_ends=P.FAILED):
        super().__init__(conf)
        self.progress = progress or base.Progress(P.PRECOPY, fraction=0.5)
        self.where = where
        self.abort_takes = abort_takes
        self.abort_ends = abort_ends
        self.release = threading.Event()

    @classmethod
    def declare(cls):
        return caps.Declaration(cls.name, 'Task', {
            caps.Operation.ABORT: caps.complete('task cancel'),
            caps.Operation.FORCE_COMPLETE_POSTCOPY: caps.missing('none'),
            caps.Operation.FORCE_COMPLETE_PAUSE: caps.missing('none'),
            caps.Operation.PER_INSTANCE_TIMEOUT: caps.complete('monitor')})

    def _start(self, spec):
        return base.Migration(spec=spec, data_gib=2.0, reference='task-1')

    def _progress(self, migration):
        return self.progress

    def _locate(self, migration):
        return self.where

    def _abort(self, migration):
        if self.abort_takes:
            self.release.wait(self.abort_takes)
        self.progress = base.Progress(self.abort_ends)


@ddt.ddt
class BaseContractTest(test_base.ConfTestCase):

    def setUp(self):
        super().setUp()
        self.spec = base.MigrationSpec('vm-1', base.Destination('host-2'))

    @ddt.data(base.Progress('precopy'), base.Progress(P.PRECOPY, fraction=1.5),
              base.Progress(P.PRECOPY, fraction=-0.1),
              base.Progress(P.PRECOPY, data_total=-1), 'not a progress')
    def test_malformed_progress_is_a_driver_error(self, bad):
        driver = TaskDriver(self.conf, progress=bad)
        migration = driver.start_migration(self.spec)
        err = self.assertRaises(exception.DriverError, driver.get_progress,
                                migration)
        self.assertIn("Driver 'task'", str(err))

    def test_monitor_survives_a_malformed_progress(self):
        driver = TaskDriver(self.conf, progress=base.Progress(
            P.PRECOPY, fraction=7.0))
        store = events.MemoryEventStore()
        with monitor.TimeoutMonitor(store, poll_interval=0.01) as mon:
            watch = mon.watch(driver, driver.start_migration(self.spec),
                              policy.resolve(self.conf, 2.0),
                              instance_uuid='vm-1', request_id='r')
            time.sleep(0.1)
            self.assertFalse(watch.done)
            driver.progress = base.Progress(P.COMPLETED, fraction=1.0)
            self.assertIs(P.COMPLETED, watch.wait(5).phase)

    def test_failure_after_our_accepted_abort_on_the_source_is_cancelled(
            self):
        driver = TaskDriver(self.conf)
        migration = driver.start_migration(self.spec)
        driver.abort(migration)
        self.assertIsNotNone(migration.abort_accepted_at)
        self.assertIs(P.CANCELLED, driver.get_progress(migration).phase)

    def test_failure_without_our_abort_stays_failed(self):
        driver = TaskDriver(self.conf, progress=base.Progress(P.FAILED))
        self.assertIs(P.FAILED, driver.get_progress(
            driver.start_migration(self.spec)).phase)

    def test_failure_after_abort_elsewhere_stays_failed(self):
        driver = TaskDriver(self.conf, where=base.GuestLocation.unknown())
        migration = driver.start_migration(self.spec)
        driver.abort(migration)
        self.assertIs(P.FAILED, driver.get_progress(migration).phase)

    def test_terminal_progress_is_sticky(self):
        driver = TaskDriver(self.conf, progress=base.Progress(P.COMPLETED))
        migration = driver.start_migration(self.spec)
        driver.get_progress(migration)
        driver.progress = base.Progress(P.PRECOPY)
        self.assertIs(P.COMPLETED, driver.get_progress(migration).phase)

    def test_abort_is_bounded_by_the_call_timeout(self):
        self.cfg.config(driver_call_timeout=0.2, group='lmcaps')
        driver = TaskDriver(self.conf, abort_takes=30)
        self.addCleanup(driver.release.set)
        migration = driver.start_migration(self.spec)
        started = time.monotonic()
        err = self.assertRaises(exception.DriverCallTimeout, driver.abort,
                                migration)
        self.assertLess(time.monotonic() - started, 2.0)
        self.assertIn('driver_call_timeout', str(err))
        self.assertIsNone(migration.abort_accepted_at)

    def test_location_never_raises(self):
        driver = TaskDriver(self.conf)
        driver._locate = lambda m: 1 / 0
        where = driver.guest_location(driver.start_migration(self.spec))
        self.assertIs(base.GuestHost.UNKNOWN, where.host)
        self.assertIn('ZeroDivisionError', where.detail)
        self.assertEqual('unknown: ZeroDivisionError: division by zero',
                         str(where))

    def test_start_prepared_for_a_missing_operation_is_refused(self):
        driver = TaskDriver(self.conf)
        spec = base.MigrationSpec('vm-1', 'h', prepare_for=base.PREPARE_POSTCOPY)
        self.assertRaises(exception.UnsupportedOperation,
                          driver.start_migration, spec)

    def test_reference_round_trip_and_reattach_default(self):
        driver = TaskDriver(self.conf)
        migration = driver.start_migration(base.MigrationSpec(
            'vm-1', base.Destination('h2', 'moref-9', {'pool': 'rp-1'}),
            prepare_for=frozenset({caps.Operation.ABORT})))
        ref = base.MigrationRef.from_json(migration.ref('task').to_json())
        self.assertEqual(migration.ref('task'), ref)
        self.assertEqual({'pool': 'rp-1'}, dict(ref.spec.destination.data))
        self.assertRaises(exception.UnsupportedOperation, driver.reattach,
                          ref)
        self.assertRaises(ValueError, base.MigrationRef.from_json, '{"x": 1}')
        self.assertRaises(ValueError, base.MigrationRef.from_json, 'nope')

    def test_blocking_call_verdict(self):
        class Aborted(Exception):
            pass

        def classify(exc):
            return P.CANCELLED if isinstance(exc, Aborted) else P.FAILED

        gate = threading.Event()

        def call():
            gate.wait(5)
            raise Aborted('cancelled by the client')

        blocking = base.BlockingCall(call, classify).start()
        self.assertIsNone(blocking.verdict())
        self.assertIsNone(blocking.progress())
        gate.set()
        verdict = blocking.verdict(wait=5)
        self.assertEqual((P.CANCELLED, 'cancelled by the client'),
                         (verdict.phase, verdict.message))
        self.assertIs(P.COMPLETED, base.BlockingCall(lambda: None).start()
                      .verdict(wait=5).phase)
