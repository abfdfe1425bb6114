"""The xenapi driver end to end: the real XenAPI SDK against the simulator."""

from __future__ import annotations

import time

from oslo_config import cfg

from lmcaps import events
from lmcaps import exception
from lmcaps.conformance import backend as backend_mod
from lmcaps.conformance import harness
from lmcaps.drivers import base
from lmcaps.drivers import xenapi as xenapi_driver
from tests.functional.xenapi import conformance_backend

STUCK = backend_mod.Scenario.STUCK
CONVERGING = backend_mod.Scenario.CONVERGING
ABORT_BODY = {'completion_timeout': 2, 'timeout_action': 'abort'}


class XenAPIDriverTest(harness.Harness):
    driver = 'xenapi'
    backend = conformance_backend.XapiSimBackend

    def control(self):
        return self.env.sim.control.sim

    def test_abort_at_deadline_leaves_vm_on_source_running(self):
        mon = self.monitor()
        instance, migration, watch = self.watched(mon, STUCK, ABORT_BODY)
        outcome = self.wait_outcome(watch, instance, 2)
        self.assertEqual('abort', outcome.action)
        self.assertIs(base.Phase.CANCELLED, outcome.phase)
        self.assertGreaterEqual(outcome.fired_at, outcome.deadline)
        self.assertEqual((base.GuestHost.SOURCE, base.RunState.RUNNING),
                         outcome.location.pair)
        self.assertEqual(outcome.location.pair,
                         self.env.locate(migration).pair)
        self.assertEqual('cancelled', self.env.sim.control.task.get_status(
            self._session_ref(), migration.reference)['Value'])
        [fired] = self.events_of(instance, events.TIMEOUT_ACTION)
        self.assertEqual(events.SUCCESS, fired.result)

    def _session_ref(self):
        return self.subject.session.handle

    def test_completion_before_deadline_untouched(self):
        mon = self.monitor()
        instance, migration, watch = self.watched(
            mon, CONVERGING, {'completion_timeout': 10,
                              'timeout_action': 'abort'})
        outcome = self.wait_outcome(watch, instance, 10)
        self.assertIs(base.Phase.COMPLETED, outcome.phase)
        self.assertIsNone(outcome.action)
        self.assertEqual([], self.events_of(instance, events.TIMEOUT_ACTION))
        self.assertEqual((base.GuestHost.DESTINATION, base.RunState.RUNNING),
                         self.env.locate(migration).pair)

    def test_session_expiry_mid_monitor(self):
        mon = self.monitor()
        instance, migration, watch = self.watched(mon, STUCK, ABORT_BODY)
        time.sleep(0.5)
        logins = self._logins()
        self.assertGreater(self.control().expire_sessions(), 0)
        outcome = self.wait_outcome(watch, instance, 2)
        self.assertIs(base.Phase.CANCELLED, outcome.phase)
        self.assertEqual('abort', outcome.action)
        self.assertGreater(self._logins(), logins)
        self.assertEqual((base.GuestHost.SOURCE, base.RunState.RUNNING),
                         self.env.locate(migration).pair)

    def _logins(self):
        return self.control().calls().get('session.login_with_password', 0)

    def test_cross_pool_migrate_receive_then_migrate_send(self):
        vm = self.env.sim.add_vm('xpool', duration=0.5)
        spec = base.MigrationSpec(instance='xpool', destination=base.Destination(
            'remote', address=self.env.sim.url))
        dest = self.subject.prepare_destination(spec)
        self.assertIn('migrate_receive', dest.data)
        migration = self.subject.start_migration(spec)
        self.assertEqual(1, self.control().calls().get(
            'Async.VM.migrate_send'))
        progress = self.subject.wait(migration, timeout=10, interval=0.05)
        self.assertIs(base.Phase.COMPLETED, progress.phase)
        self.assertEqual({'exists': 'false'}, self.control().vm_state(vm))
        where = self.subject.guest_location(migration)
        self.assertEqual((base.GuestHost.DESTINATION, base.RunState.RUNNING),
                         where.pair)

    def test_bad_credentials_one_line(self):
        conf = cfg.ConfigOpts()
        driver = xenapi_driver.XenAPIDriver(conf)
        conf([], project='lmcaps', default_config_files=[])
        self.env.configure(conf, driver.group)
        conf.set_override('password', 'not-the-password', group=driver.group)
        exc = self.assertRaises(exception.DriverError, driver.connect)
        text = str(exc)
        self.assertIn('SESSION_AUTHENTICATION_FAILED', text)
        self.assertNotIn('\n', text)
        self.assertNotIn('not-the-password', text)
        self.assertNotIn(self.env.sim.password, text)

    def test_force_complete_refused_by_precheck_with_event(self):
        for mode in ('postcopy', 'pause'):
            instance = self.uid(f'fc-{mode}')
            body = {'completion_timeout': 3, 'timeout_action':
                    'force_complete', 'force_complete_mode': mode}
            exc = self.assertRaises(exception.MigrationPreCheckFailed,
                                    self.run_prechecks, instance, body)
            self.assertIn('xenapi', str(exc))
            [event] = self.events_of(instance, events.PRECHECK)
            self.assertEqual(events.ERROR, event.result)
        self.assertEqual({}, {k: v for k, v in self.control().calls().items()
                              if k.startswith('Async.')})

    def test_reattach_by_task_reference(self):
        migration = self.start(STUCK)
        ref = base.MigrationRef.from_json(
            migration.ref(self.driver).to_json())
        other = self.driver_class(self.conf)
        other.connect()
        self.addCleanup(other.close)
        again = other.reattach(ref)
        self.assertEqual(migration.reference, again.reference)
        self.assertTrue(again.reference.startswith('OpaqueRef:'))
        self.assertIn(other.get_progress(again).phase,
                      (base.Phase.PRECOPY, base.Phase.PREPARING))
        other.abort(again)
        progress = other.wait(again, timeout=10, interval=0.05)
        self.assertIs(base.Phase.CANCELLED, progress.phase)
        self.assertEqual(base.GuestHost.SOURCE,
                         other.guest_location(again).host)
        gone = base.MigrationRef.from_json(ref.to_json().replace(
            migration.reference, 'OpaqueRef:00000000-dead'))
        self.assertRaises(exception.MigrationGone, other.reattach, gone)

    def test_task_vanished_location_decides(self):
        migration = self.start(CONVERGING, settle=False)
        session = self.subject.session.handle
        raw = self.env.sim.control
        deadline = time.monotonic() + 10
        while raw.task.get_status(session, migration.reference)[
                'Value'] != 'success':
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.05)
        self.assertEqual('Success', raw.task.destroy(
            session, migration.reference)['Status'])
        progress = self.subject.get_progress(migration)
        self.assertIs(base.Phase.COMPLETED, progress.phase)
        self.assertEqual('task gone', progress.raw_state)

    def test_host_declaration_facts(self):
        decl = self.subject.host_declaration()
        self.assertEqual({'pool_master': 'src', 'xenapi_version': '2.21'},
                         dict(decl.facts))
        self.assertEqual(self.env.sim.url, decl.host)

    def test_one_record_per_task_without_event_feed(self):
        self.subject.feed.batched = False
        migration = self.start(STUCK)
        self.control().reset_calls()
        self.subject.abort(migration)
        progress = self.subject.wait(migration, timeout=10, interval=0.05)
        self.assertIs(base.Phase.CANCELLED, progress.phase)
        calls = self.control().calls()
        self.assertNotIn('event.from', calls)
        self.assertGreater(calls.get('task.get_record', 0), 0)

    def test_event_feed_one_call_for_many(self):
        migrations = [self.start(STUCK) for _ in range(5)]
        time.sleep(self.conf.lmcaps_xenapi.task_poll_interval)
        self.control().reset_calls()
        for m in migrations:
            self.subject.get_progress(m)
        self.assertEqual({'event.from': 1}, self.control().calls())

    def test_abort_refused_once_final_copy_began(self):
        migration = self.start(STUCK)
        self.control().close_cancel_window(migration.reference)
        exc = self.assertRaises(exception.OperationRefused,
                                self.subject.abort, migration)
        self.assertIn("'cancel'", str(exc))
        self.assertIn(self.subject.get_progress(migration).phase,
                      (base.Phase.PRECOPY, base.Phase.PREPARING))

    def test_abort_after_completion_already_completed(self):
        migration = self.start(CONVERGING, settle=False)
        progress = self.subject.wait(migration, timeout=10, interval=0.05)
        self.assertIs(base.Phase.COMPLETED, progress.phase)
        migration.final = None
        exc = self.assertRaises(exception.OperationRefused,
                                self.subject.abort, migration)
        self.assertIn('already completed', str(exc))
