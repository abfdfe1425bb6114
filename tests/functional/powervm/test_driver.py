"""The powervm driver end to end: pypowervm against the NovaLink simulator.

Real pre-checks, the real timeout monitor, pypowervm over HTTP on the
loopback, events in SQLite; where the partition is comes from the
simulator's own model, never from the driver under test.
"""

from __future__ import annotations

import threading
import time

from lmcaps import drivers
from lmcaps import events
from lmcaps import exception
from lmcaps import migrate
from lmcaps.drivers import base
from tests.functional.powervm import base as pvm_base

SOURCE_RUNNING = ('source', 'running', 'Not_Migrating')


class ScenarioTest(pvm_base.DriverTestCase):
    """``lmcaps.migrate.run``: pre-checks, the TimeoutMonitor, events."""

    def run_migration(self, lpar: str, body: dict) -> migrate.Summary:
        return migrate.run(self.conf, self.driver, self.spec(lpar), body,
                           self.store, request_id=f'req-{lpar}')

    def events_of(self, instance: str, name: str):
        return [e for e in self.store.list_events(instance)
                if e.event == name]

    def test_abort_at_the_deadline_leaves_the_lpar_running_on_source(self):
        uuid = self.sim.add_lpar('deadline', duration='inf')
        summary = self.run_migration(uuid, {'completion_timeout': 2,
                                            'timeout_action': 'abort'})
        self.assertEqual(('aborted', 'abort', None),
                         (summary.outcome, summary.action,
                          summary.action_error))
        self.assertGreater(summary.reaction, 0.0)     # after, never before
        self.assertEqual(SOURCE_RUNNING, self.where(uuid))
        self.assertEqual('cancelled', self.sim.lpar(uuid)['job']['task'])
        self.assertTrue(summary.guest_on.startswith('source (running)'))
        [fired] = self.events_of(uuid, events.TIMEOUT_ACTION)
        self.assertEqual(events.SUCCESS, fired.result)
        [outcome] = self.events_of(uuid, events.OUTCOME)
        self.assertIn('cancelled', outcome.details)
        [pre] = self.events_of(uuid, events.PRECHECK)
        self.assertEqual(events.SUCCESS, pre.result)

    def test_migration_that_completes_first_is_untouched(self):
        uuid = self.sim.add_lpar('quick', duration=1.0)
        summary = self.run_migration(uuid, {'completion_timeout': 30,
                                            'timeout_action': 'abort'})
        self.assertEqual(('completed', None), (summary.outcome,
                                               summary.action))
        self.assertEqual(('target', 'running', 'Not_Migrating'),
                         self.where(uuid))
        self.assertTrue(summary.guest_on.startswith('destination (running)'))
        self.assertEqual([], self.events_of(uuid, events.TIMEOUT_ACTION))

    def test_failed_job_is_recovered_and_the_outcome_says_so(self):
        uuid = self.sim.add_lpar('failing', duration='inf')
        box = {}
        thread = threading.Thread(target=lambda: box.update(
            summary=self.run_migration(uuid, {'completion_timeout': 60})))
        thread.start()
        pvm_base.wait_for(lambda: self.sim.lpar(uuid)['migration_state'] ==
                          'Migration_In_Progress')
        self.sim.control('POST', f'lpars/{uuid}/fail',
                         {'message': 'mover service partition lost'})
        thread.join(30)
        summary = box['summary']
        self.assertEqual('failed', summary.outcome)
        self.assertIn('mover service partition lost', summary.message)
        self.assertIn('MigrateRecover (Force=true)', summary.message)
        self.assertEqual(SOURCE_RUNNING, self.where(uuid))
        self.assertTrue(summary.guest_on.startswith('source (running)'))
        [outcome] = self.events_of(uuid, events.OUTCOME)
        self.assertEqual(events.ERROR, outcome.result)
        self.assertIn('recovered', outcome.details)
        self.assertIn('Not_Migrating, running', outcome.details)

    def test_force_complete_is_refused_by_the_precheck(self):
        uuid = self.sim.add_lpar('force')
        for mode in ('postcopy', 'pause'):
            err = self.assertRaises(
                exception.MigrationPreCheckFailed, self.run_migration, uuid,
                {'completion_timeout': 5, 'timeout_action': 'force_complete',
                 'force_complete_mode': mode})
            self.assertIn('force_complete', str(err))
        found = self.events_of(uuid, events.PRECHECK)
        self.assertEqual([events.ERROR] * 2, [e.result for e in found])
        self.assertIn('no post-copy phase', found[0].details)
        self.assertIn('no pause', found[1].details)
        self.assertEqual(SOURCE_RUNNING, self.where(uuid))
        self.assertIsNone(self.sim.lpar(uuid)['job'])

    def test_start_refused_records_where_the_lpar_is(self):
        uuid = self.sim.add_lpar('stays')
        spec = base.MigrationSpec(uuid, base.Destination('no-such-system'))
        self.assertRaises(exception.DriverError, migrate.run, self.conf,
                          self.driver, spec, {}, self.store,
                          request_id='req-x')
        [outcome] = self.events_of(uuid, events.OUTCOME)
        self.assertIn('source (running)', outcome.details)


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
        # None is "not known" (the LPAR's counters not read or not set
        # yet); the known fractions only grow
        fractions = [p.fraction for p in seen
                     if p.phase is base.Phase.PRECOPY and
                     p.fraction is not None]
        self.assertTrue(fractions, seen)
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
