"""The powervm driver end to end: pypowervm against the NovaLink simulator.

Real pre-checks, the real timeout monitor, pypowervm over HTTP on the
loopback, events in SQLite; where the partition is comes from the
simulator's own model, never from the driver under test.
"""

from __future__ import annotations

import time

from lmcaps import checks
from lmcaps import drivers
from lmcaps import events
from lmcaps import exception
from lmcaps import migrate
from lmcaps import monitor as lmcaps_monitor
from lmcaps import request as lmcaps_request
from lmcaps.drivers import base
from tests.functional.powervm import base as pvm_base

SOURCE_RUNNING = ('source', 'running', 'Not_Migrating')


class TimeoutTest(pvm_base.DriverTestCase):

    def watch(self, lpar: str, body: dict):
        """Pre-check, start and watch one migration under the real monitor."""
        self.driver.connect()
        values = lmcaps_request.validate(body)
        spec = self.spec(lpar)
        pol, _report = migrate.precheck(
            self.conf, checks.PreCheckRunner(self.conf),
            self.driver.host_declaration(), lpar, values, self.store,
            f'req-{lpar}', self.driver.guest_data_gib(spec))
        mon = lmcaps_monitor.TimeoutMonitor.from_conf(self.conf, self.store)
        mon.start()
        self.addCleanup(mon.stop)
        migration = self.driver.start_migration(spec)
        return migration, mon.watch(self.driver, migration, pol,
                                    instance_uuid=lpar,
                                    request_id=f'req-{lpar}')

    def events_of(self, instance: str, name: str):
        return [e for e in self.store.list_events(instance)
                if e.event == name]

    def test_abort_at_the_deadline_leaves_the_lpar_running_on_source(self):
        uuid = self.sim.add_lpar('deadline', duration='inf')
        migration, watch = self.watch(uuid, {'completion_timeout': 2,
                                             'timeout_action': 'abort'})
        outcome = watch.wait(30)
        self.assertIsNotNone(outcome)
        self.assertEqual(('abort', None, base.Phase.CANCELLED),
                         (outcome.action, outcome.action_error,
                          outcome.phase))
        self.assertGreater(outcome.fired_at, outcome.deadline)
        self.assertEqual(SOURCE_RUNNING, self.where(uuid))
        self.assertEqual(
            'cancelled', self.sim.lpar(uuid)['job']['task'])
        [fired] = self.events_of(uuid, events.TIMEOUT_ACTION)
        self.assertEqual(events.SUCCESS, fired.result)
        self.assertEqual(base.GuestHost.SOURCE,
                         self.driver.guest_location(migration).host)

    def test_migration_that_completes_first_is_untouched(self):
        uuid = self.sim.add_lpar('quick', duration=1.0)
        migration, watch = self.watch(uuid, {'completion_timeout': 30,
                                             'timeout_action': 'abort'})
        outcome = watch.wait(30)
        self.assertEqual((base.Phase.COMPLETED, None),
                         (outcome.phase, outcome.action))
        self.assertEqual(('target', 'running', 'Not_Migrating'),
                         self.where(uuid))
        self.assertEqual([], self.events_of(uuid, events.TIMEOUT_ACTION))
        where = self.driver.guest_location(migration)
        self.assertEqual((base.GuestHost.DESTINATION, base.RunState.RUNNING),
                         where.pair)

    def test_force_complete_is_refused_by_the_precheck(self):
        uuid = self.sim.add_lpar('force')
        for mode in ('postcopy', 'pause'):
            err = self.assertRaises(
                exception.MigrationPreCheckFailed, self.watch, uuid,
                {'completion_timeout': 5, 'timeout_action': 'force_complete',
                 'force_complete_mode': mode})
            self.assertIn('force_complete', str(err))
        found = self.events_of(uuid, events.PRECHECK)
        self.assertEqual([events.ERROR] * 2, [e.result for e in found])
        self.assertIn('no post-copy phase', found[0].details)
        self.assertEqual(SOURCE_RUNNING, self.where(uuid))
        self.assertIsNone(self.sim.lpar(uuid)['job'])


class DriverTest(pvm_base.DriverTestCase):

    def test_progress_phases_and_fraction(self):
        uuid = self.sim.add_lpar('phases', duration=3.0, memory_mb=6144)
        self.assertEqual(6.0, self.driver.guest_data_gib(self.spec(uuid)))
        migration = self.driver.start_migration(self.spec(uuid))
        self.assertEqual(6.0, migration.data_gib)
        self.assertTrue(migration.reference.isdigit())
        self.assertEqual(uuid, migration.extra['lpar_uuid'])
        seen = []
        while True:
            progress = self.driver.get_progress(migration)
            seen.append(progress)
            if progress.phase.terminal:
                break
            time.sleep(0.1)
        phases = [p.phase for p in seen]
        self.assertIn(base.Phase.PRECOPY, phases)
        self.assertEqual(base.Phase.COMPLETED, phases[-1])
        fractions = [p.fraction for p in seen
                     if p.phase is base.Phase.PRECOPY]
        self.assertEqual(sorted(fractions), fractions)
        self.assertGreater(fractions[-1], 0.0)

    def test_failed_job_then_recover(self):
        uuid = self.sim.add_lpar('failing', duration='inf')
        migration = self.driver.start_migration(self.spec(uuid))
        time.sleep(0.3)
        self.sim.control('POST', f'lpars/{uuid}/fail',
                         {'message': 'mover service partition lost'})
        end = self.driver.wait(migration, 20)
        self.assertEqual(base.Phase.FAILED, end.phase)
        self.assertIn('mover service partition lost', end.message)
        self.assertEqual(('source', 'migrating running', 'Migration_Failed'),
                         self.where(uuid))
        done = self.driver.recover(migration)
        self.assertIn('MigrateRecover', done)
        self.assertEqual(SOURCE_RUNNING, self.where(uuid))
        self.assertEqual((base.GuestHost.SOURCE, base.RunState.RUNNING),
                         self.driver.guest_location(migration).pair)
        self.assertIsNone(self.driver.recover(migration))  # nothing left
        # usable again: it migrates
        again = self.driver.start_migration(self.spec(uuid))
        self.sim.control('POST', f'lpars/{uuid}/behaviour', {'duration': 0.5})
        self.assertEqual(base.Phase.COMPLETED,
                         self.driver.wait(again, 20).phase)

    def test_abort_returns_once_the_abort_job_is_accepted(self):
        uuid = self.sim.add_lpar('slowstop', duration='inf', cancel_delay=2.0)
        migration = self.driver.start_migration(self.spec(uuid))
        time.sleep(0.3)
        started = time.monotonic()
        self.driver.abort(migration)
        self.assertLess(time.monotonic() - started, 1.0)
        self.assertEqual(base.Phase.CANCELLING,
                         self.driver.get_progress(migration).phase)
        self.assertEqual(base.Phase.CANCELLED,
                         self.driver.wait(migration, 20).phase)
        self.assertEqual(SOURCE_RUNNING, self.where(uuid))

    def test_abort_after_the_end_is_refused(self):
        uuid = self.sim.add_lpar('done', duration=0.5)
        migration = self.driver.start_migration(self.spec(uuid))
        self.assertEqual(base.Phase.COMPLETED,
                         self.driver.wait(migration, 20).phase)
        err = self.assertRaises(exception.OperationRefused,
                                self.driver.abort, migration)
        self.assertIn('not migrating', str(err))
        self.assertEqual(('target', 'running', 'Not_Migrating'),
                         self.where(uuid))

    def test_abort_the_server_cannot_carry_out_is_refused(self):
        uuid = self.sim.add_lpar('unstoppable', duration='inf',
                                 cancellable_until=0.0)
        migration = self.driver.start_migration(self.spec(uuid))
        time.sleep(0.3)
        err = self.assertRaises(exception.OperationRefused,
                                self.driver.abort, migration)
        self.assertIn('can no longer be cancelled', str(err))
        self.assertIsNone(migration.abort_accepted_at)
        self.assertEqual(base.Phase.PRECOPY,
                         self.driver.get_progress(migration).phase)
        self.sim.control('POST', f'lpars/{uuid}/behaviour', {'duration': 0.5})
        self.assertEqual(base.Phase.COMPLETED,
                         self.driver.wait(migration, 20).phase)

    def test_reattach_by_job_id_and_abort(self):
        uuid = self.sim.add_lpar('reattach', duration='inf')
        first = self.driver.start_migration(self.spec(uuid))
        ref = base.MigrationRef.from_json(first.ref('powervm').to_json())
        other = drivers.load('powervm', self.conf)
        self.addCleanup(other.close)
        again = other.reattach(ref)
        self.assertEqual(first.reference, again.reference)
        self.assertIn(other.get_progress(again).phase,
                      (base.Phase.PREPARING, base.Phase.PRECOPY))
        other.abort(again)
        self.assertEqual(base.Phase.CANCELLED, other.wait(again, 20).phase)
        self.assertEqual(SOURCE_RUNNING, self.where(uuid))
        self.assertEqual(base.Phase.FAILED, self.driver.wait(first, 20).phase)

    def test_reattach_to_a_deleted_job_is_gone(self):
        uuid = self.sim.add_lpar('gone', duration=0.5)
        migration = self.driver.start_migration(self.spec(uuid))
        self.driver.wait(migration, 20)
        pvm_base.wait_for(lambda: self.sim.lpar(uuid)['job']['deleted'])
        self.assertRaises(exception.MigrationGone, self.driver.reattach,
                          migration.ref('powervm'))

    def test_session_lost_mid_migration(self):
        uuid = self.sim.add_lpar('relogin', duration='inf')
        migration = self.driver.start_migration(self.spec(uuid))
        time.sleep(0.3)
        self.sim.control('POST', 'sessions/expire')
        self.assertEqual(base.Phase.PRECOPY,
                         self.driver.get_progress(migration).phase)
        self.sim.control('POST', 'sessions/expire')
        self.driver.abort(migration)
        self.assertEqual(base.Phase.CANCELLED,
                         self.driver.wait(migration, 20).phase)

    def test_refused_start_is_a_driver_error(self):
        uuid = self.sim.add_lpar('nowhere')
        err = self.assertRaises(
            exception.DriverError, self.driver.start_migration,
            base.MigrationSpec(uuid, base.Destination('no-such-system')))
        self.assertIn("Managed system 'no-such-system' not found", str(err))
        self.assertEqual(1, len(str(err).splitlines()))
        self.assertEqual(SOURCE_RUNNING, self.where(uuid))

    def test_rest_outage_while_pypowervm_polls_is_not_a_failure(self):
        uuid = self.sim.add_lpar('blip', duration='inf')
        migration = self.driver.start_migration(self.spec(uuid))
        self.sim.control('POST', 'outage', {'seconds': 1.5})
        time.sleep(2.0)     # pypowervm's 1 s poll met the outage and raised
        self.assertIsNotNone(migration.backend.call.verdict())
        self.assertEqual(base.Phase.PRECOPY,
                         self.driver.get_progress(migration).phase)
        self.driver.abort(migration)
        self.assertEqual(base.Phase.CANCELLED,
                         self.driver.wait(migration, 20).phase)
        self.assertEqual(SOURCE_RUNNING, self.where(uuid))
        # nobody else polls it now: the driver deleted the finished job
        self.assertTrue(self.sim.lpar(uuid)['job']['deleted'])

    def test_unknown_lpar_is_one_line(self):
        err = self.assertRaises(exception.DriverError,
                                self.driver.start_migration,
                                self.spec('no-such-lpar'))
        self.assertEqual(1, len(str(err).splitlines()))
        self.assertIn('no-such-lpar', str(err))


class LogonTest(pvm_base.SimTestCase):

    def test_bad_credentials_are_a_one_line_error(self):
        import fixtures
        conf = pvm_base.make_conf(self.sim,
                                  self.useFixture(fixtures.TempDir()).path)
        conf.set_override('password', 'Wrong-Secret-42',
                          group='lmcaps_powervm')
        driver = drivers.load('powervm', conf)
        err = self.assertRaises(exception.DriverError, driver.connect)
        text = str(err)
        self.assertEqual(1, len(text.splitlines()))
        self.assertIn('401', text)
        self.assertIn('username and password', text)
        self.assertNotIn('Wrong-Secret-42', text)
        self.assertNotIn(self.sim.password, text)


class TLSTest(pvm_base.SimTestCase):
    """The driver verifies the REST server's certificate unless told not to."""

    tls = True

    def setUp(self):
        super().setUp()
        import fixtures
        # requests lets these override a Session's verify (see the driver)
        for name in ('REQUESTS_CA_BUNDLE', 'CURL_CA_BUNDLE'):
            self.useFixture(fixtures.EnvironmentVariable(name))

    def driver_with(self, **options):
        import fixtures
        conf = pvm_base.make_conf(self.sim,
                                  self.useFixture(fixtures.TempDir()).path)
        conf.set_override('protocol', 'https', group='lmcaps_powervm')
        for key, value in options.items():
            conf.set_override(key, value, group='lmcaps_powervm')
        driver = drivers.load('powervm', conf)
        self.addCleanup(driver.close)
        return driver

    def test_unknown_certificate_is_refused_by_default(self):
        err = self.assertRaises(exception.DriverError,
                                self.driver_with().connect)
        self.assertEqual(1, len(str(err).splitlines()))
        self.assertIn('SSLError', str(err))

    def test_ca_file_is_trusted(self):
        driver = self.driver_with(ca_file=self.sim.ca_file)
        uuid = self.sim.add_lpar('tls', duration=0.5)
        migration = driver.start_migration(base.MigrationSpec(
            uuid, base.Destination(self.sim.target_name)))
        self.assertEqual(base.Phase.COMPLETED, driver.wait(migration, 20).phase)

    def test_ca_bundle_variable_overrides_ca_file(self):
        import fixtures
        self.useFixture(fixtures.EnvironmentVariable('REQUESTS_CA_BUNDLE',
                                                     self.sim.ca_file))
        driver = self.driver_with(tls_verify=False)
        with self.assertLogs('lmcaps.drivers.powervm', 'WARNING') as logs:
            driver.connect()
        self.assertIn('REQUESTS_CA_BUNDLE', logs.output[0])

    def test_insecure_only_when_asked(self):
        driver = self.driver_with(tls_verify=False)
        driver.connect()
        self.assertIsNone(driver._lpar('no-such-lpar'))
