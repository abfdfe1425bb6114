"""The hyperv driver through pywinrm against the WS-Management simulator."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
import uuid

import fixtures
from oslo_config import cfg
import testtools

from lmcaps import conf as lmcaps_conf
from lmcaps import events
from lmcaps import exception
from lmcaps import monitor as lmcaps_monitor
from lmcaps import precheck
from lmcaps.drivers import base
from lmcaps.drivers import hyperv
from tests.functional.hyperv import conformance_backend as cb
from tests.functional.hyperv.sim import fixture

INJECTION = "a'; Remove-VM -Name * #"
SUBSHELL = 'db-$(Stop-Computer -Force)'
GROUP = 'lmcaps_hyperv'


class ScenarioTest(testtools.TestCase):

    def setUp(self) -> None:
        super().setUp()
        fixture.require_client(self)
        self.sim = fixture.shared()
        self.conf = cfg.ConfigOpts()
        lmcaps_conf.register_opts(self.conf)
        self.conf([], project='lmcaps-test', default_config_files=[])
        self.driver = self._driver()
        self.store = events.MemoryEventStore()

    def _driver(self, **overrides: object) -> hyperv.HyperVDriver:
        driver = hyperv.HyperVDriver(self.conf)
        cb.driver_config(self.sim, self.conf)
        for key, value in overrides.items():
            self.conf.set_override(key, value, group=GROUP)
        self.addCleanup(driver.close)
        return driver

    def vm(self, name: str | None = None, **behaviour: object) -> str:
        name = name or f'scn-{uuid.uuid4().hex[:8]}'
        self.sim.add_vm(name, **behaviour)
        return name

    def guid(self, migration: base.Migration) -> str:
        return migration.extra['vm']

    def where(self, migration: base.Migration) -> tuple[str, int]:
        vm = self.sim.vm(self.guid(migration))
        return vm['host'], vm['enabled_state']

    def watch(self, migration: base.Migration, body: dict
              ) -> lmcaps_monitor.Outcome:
        instance = str(uuid.uuid4())
        pol = precheck.run(self.conf, self.store, 'req-1', instance,
                           precheck.request_layers(body), driver=self.driver,
                           data_gib=migration.data_gib).policy
        mon = lmcaps_monitor.TimeoutMonitor(self.store, host='hv-src',
                                            poll_interval=0.05, workers=2)
        mon.start()
        self.addCleanup(mon.stop)
        watch = mon.watch(self.driver, migration, pol,
                          instance_uuid=instance, request_id='req-1')
        outcome = watch.wait(30)
        self.assertIsNotNone(outcome, 'the monitor did not see the end')
        self.instance = instance
        return outcome

    # -- the timeout action ---------------------------------------------

    def test_abort_at_the_deadline_returns_the_vm_running_on_source(self):
        migration = self.driver.start_migration(cb.spec(self.vm(
            migration_seconds=math.inf)))
        outcome = self.watch(migration, {'completion_timeout': 1,
                                         'timeout_action': 'abort'})
        self.assertEqual(('abort', None), (outcome.action,
                                           outcome.action_error))
        self.assertEqual(base.Phase.CANCELLED, outcome.phase)
        self.assertGreater(outcome.fired_at, outcome.deadline)
        self.assertEqual(('hv-src', 2), self.where(migration))
        self.assertEqual((base.GuestHost.SOURCE, base.RunState.RUNNING),
                         self.driver.guest_location(migration).pair)
        [fired] = [e for e in self.store.list_events(self.instance)
                   if e.event == events.TIMEOUT_ACTION]
        self.assertEqual(events.SUCCESS, fired.result)
        job = self.sim.job(migration.reference.rsplit('"', 2)[-2])
        self.assertEqual((9, 5), (job['job_state'], job['requested']))

    def test_completion_before_the_deadline_is_untouched(self):
        migration = self.driver.start_migration(cb.spec(self.vm(
            migration_seconds=0.5)))
        outcome = self.watch(migration, {'completion_timeout': 10,
                                         'timeout_action': 'abort'})
        self.assertEqual((base.Phase.COMPLETED, None),
                         (outcome.phase, outcome.action))
        self.assertEqual(('hv-dst', 2), self.where(migration))
        job = self.sim.job(migration.reference.rsplit('"', 2)[-2])
        self.assertIsNone(job['requested'])

    def test_force_complete_refused_by_the_precheck_with_an_event(self):
        for mode in ('postcopy', 'pause'):
            instance = str(uuid.uuid4())
            body = {'completion_timeout': 5, 'timeout_action':
                    'force_complete', 'force_complete_mode': mode}
            self.conf.set_override('permit_post_copy', True,
                                   group=lmcaps_conf.GROUP)
            exc = self.assertRaises(
                exception.MigrationPreCheckFailed, precheck.run, self.conf,
                self.store, 'req-fc', instance, precheck.request_layers(body),
                driver=self.driver)
            self.assertIn('hyperv', str(exc))
            [event] = self.store.list_events(instance)
            self.assertEqual((events.PRECHECK, events.ERROR),
                             (event.event, event.result))
            self.assertIn(f'force_complete_{mode}', event.details)

    def test_data_size_is_the_vm_memory(self):
        name = self.vm(memory_mib=8192, migration_seconds=0.3)
        self.assertEqual(8.0, self.driver.guest_data_gib(cb.spec(name)))
        migration = self.driver.start_migration(cb.spec(name))
        self.assertEqual(8.0, migration.data_gib)
        self.assertEqual(2.0, self.driver.guest_data_gib(cb.spec(self.vm(
            memory_mib=512))))

    # -- names are data -----------------------------------------------------

    def test_injection_names_are_migrated_as_plain_names(self):
        decoy = self.vm('a')
        for name in (INJECTION, SUBSHELL):
            self.vm(name, migration_seconds=0.3)
            migration = self.driver.start_migration(cb.spec(name))
            end = self.driver.wait(migration, timeout=10, interval=0.05)
            self.assertEqual(base.Phase.COMPLETED, end.phase)
            self.assertEqual('hv-dst', self.sim.vm(self.guid(migration))[
                'host'])
            self.assertEqual(name, self.sim.vm(self.guid(migration))[
                'element_name'])
        self.assertEqual('hv-src', self.sim.vm(
            [vm['name'] for vm in self.sim.control('describe')['vms']
             if vm['element_name'] == decoy][0])['host'])

    def test_names_the_source_lacks_or_cannot_hold_are_refused(self):
        for name in ("nobody'", 'tab\there'):
            exc = self.assertRaises(exception.DriverError,
                                    self.driver.start_migration,
                                    cb.spec(name))
            self.assertNotIn('\n', str(exc))
        twin = f'twin-{uuid.uuid4().hex[:6]}'
        self.vm(twin)
        self.vm(twin)
        exc = self.assertRaises(exception.DriverError,
                                self.driver.start_migration, cb.spec(twin))
        self.assertIn('2 VMs', str(exc))

    # -- errors -------------------------------------------------------------

    def test_wrong_credentials_give_one_line_without_the_password(self):
        self.conf.set_override('password', 'not-the-password-42', GROUP)
        exc = self.assertRaises(exception.DriverError,
                                self.driver.start_migration,
                                cb.spec(self.vm()))
        text = str(exc)
        self.assertIn('rejected the credentials (HTTP 401)', text)
        self.assertNotIn('\n', text)
        self.assertNotIn('not-the-password-42', text)
        self.assertNotIn(self.sim.password, text)

    def test_basic_over_http_refused_unless_allowed(self):
        self.conf.set_override('allow_unencrypted_basic', False, GROUP)
        exc = self.assertRaises(exception.DriverError, self.driver.connect)
        self.assertIn('refusing Basic authentication over plain http',
                      str(exc))
        self.assertEqual(0, len(self.driver._clients))

    def test_destination_unknown_to_hyper_v(self):
        name = self.vm()
        exc = self.assertRaises(exception.DriverError,
                                self.driver.start_migration,
                                cb.spec(name, destination='hv-nowhere'))
        self.assertIn('32777 (System is not available)', str(exc))

    # -- abort, refusal, re-attach --------------------------------------------

    def test_abort_refused_once_not_cancellable(self):
        migration = self.driver.start_migration(cb.spec(self.vm(
            migration_seconds=math.inf, cancellable_until=0.0)))
        exc = self.assertRaises(exception.OperationRefused,
                                self.driver.abort, migration)
        self.assertIn('Cancellable = False', str(exc))
        self.assertFalse(self.driver.get_progress(migration).phase.terminal)
        self.assertEqual(('hv-src', 2), self.where(migration))

    def test_reattach_by_job_path_and_abort(self):
        migration = self.driver.start_migration(cb.spec(self.vm(
            migration_seconds=math.inf)))
        self.assertRegex(migration.reference,
                         r'^\\\\127\.0\.0\.1\\root\\virtualization\\v2:'
                         r'Msvm_MigrationJob\.InstanceID="[0-9A-F-]{36}"$')
        saved = migration.ref('hyperv').to_json()
        other = hyperv.HyperVDriver(self.conf)
        self.addCleanup(other.close)
        again = other.reattach(base.MigrationRef.from_json(saved))
        self.assertEqual(migration.reference, again.reference)
        self.assertIn(other.get_progress(again).phase,
                      (base.Phase.PREPARING, base.Phase.PRECOPY))
        other.abort(again)
        end = other.wait(again, timeout=10, interval=0.05)
        self.assertEqual(base.Phase.CANCELLED, end.phase)
        self.assertEqual(base.GuestHost.SOURCE,
                         other.guest_location(again).host)

    def test_reattach_to_a_removed_job_is_gone(self):
        migration = self.driver.start_migration(cb.spec(self.vm(
            migration_seconds=0.2)))
        self.driver.wait(migration, timeout=10, interval=0.05)
        self.sim.control('set_time_before_removal', seconds=0.0)
        self.addCleanup(self.sim.control, 'set_time_before_removal',
                        seconds=300.0)
        time.sleep(0.05)
        ref = base.MigrationRef.from_json(migration.ref('hyperv').to_json())
        self.assertRaises(exception.MigrationGone, self.driver.reattach, ref)


class NTLMScenarioTest(ScenarioTest):
    """The default transport: NTLM, messages encrypted over http."""

    def _driver(self, **overrides: object) -> hyperv.HyperVDriver:
        driver = hyperv.HyperVDriver(self.conf)
        cb.driver_config(self.sim, self.conf, transport='ntlm')
        for key, value in overrides.items():
            self.conf.set_override(key, value, group=GROUP)
        self.addCleanup(driver.close)
        return driver

    def test_basic_over_http_refused_unless_allowed(self):
        self.assertFalse(self.conf[GROUP].allow_unencrypted_basic)
        self.driver.connect()     # NTLM over http is fine: sealed

    def test_lost_session_logs_in_again(self):
        migration = self.driver.start_migration(cb.spec(self.vm(
            migration_seconds=math.inf)))
        self.assertIn(self.driver.get_progress(migration).phase,
                      (base.Phase.PREPARING, base.Phase.PRECOPY))
        self.sim.control('restart_service')
        self.assertIn(self.driver.get_progress(migration).phase,
                      (base.Phase.PREPARING, base.Phase.PRECOPY))
        self.sim.control('restart_service')
        self.driver.abort(migration)
        end = self.driver.wait(migration, timeout=10, interval=0.05)
        self.assertEqual(base.Phase.CANCELLED, end.phase)
        self.assertEqual((base.GuestHost.SOURCE, base.RunState.RUNNING),
                         self.driver.guest_location(migration).pair)


class TLSTest(testtools.TestCase):
    """Basic over https: the certificate is verified unless told not to."""

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.sim = None

    def setUp(self) -> None:
        super().setUp()
        fixture.require_client(self)
        if TLSTest.sim is None:
            TLSTest.sim = fixture.Simulator(tls=True).start()
        self.conf = cfg.ConfigOpts()
        lmcaps_conf.register_opts(self.conf)
        self.conf([], project='lmcaps-test', default_config_files=[])

    @classmethod
    def tearDownClass(cls) -> None:
        if cls.sim is not None:
            cls.sim.stop()
            cls.sim = None
        super().tearDownClass()

    def _driver(self, **overrides: object) -> hyperv.HyperVDriver:
        driver = hyperv.HyperVDriver(self.conf)
        cb.driver_config(self.sim, self.conf)
        self.conf.set_override('allow_unencrypted_basic', False, GROUP)
        for key, value in overrides.items():
            self.conf.set_override(key, value, group=GROUP)
        self.addCleanup(driver.close)
        return driver

    def test_verified_with_the_ca_bundle(self):
        driver = self._driver(ca_trust_path=self.sim.ca_path)
        name = f'tls-{uuid.uuid4().hex[:6]}'
        self.sim.add_vm(name, migration_seconds=0.3)
        migration = driver.start_migration(cb.spec(name))
        self.assertEqual(base.Phase.COMPLETED, driver.wait(
            migration, timeout=10, interval=0.05).phase)
        self.assertEqual(base.GuestHost.DESTINATION,
                         driver.guest_location(migration).host)

    def test_unknown_ca_is_refused_in_one_line(self):
        driver = self._driver()
        name = f'tls-{uuid.uuid4().hex[:6]}'
        guid = self.sim.add_vm(name)
        exc = self.assertRaises(exception.DriverError,
                                driver.start_migration, cb.spec(name))
        self.assertIn('TLS verification failed', str(exc))
        self.assertNotIn('\n', str(exc))
        self.assertEqual(('hv-src', False), (self.sim.vm(guid)['host'],
                                             self.sim.vm(guid)['migrating']))

    def test_verification_off_only_when_set(self):
        driver = self._driver(server_cert_validation=False)
        name = f'tls-{uuid.uuid4().hex[:6]}'
        self.sim.add_vm(name, migration_seconds=0.3)
        migration = driver.start_migration(cb.spec(name))
        self.assertEqual(base.Phase.COMPLETED, driver.wait(
            migration, timeout=10, interval=0.05).phase)


class CommandLineTest(testtools.TestCase):
    """``lmcaps migrate`` with the hyperv driver, as an operator runs it."""

    def setUp(self) -> None:
        super().setUp()
        fixture.require_client(self)
        self.sim = fixture.shared()
        self.dir = self.useFixture(fixtures.TempDir()).path

    def migrate(self, name: str, password: str, *args: str
                ) -> subprocess.CompletedProcess:
        conf = os.path.join(self.dir, 'lmcaps.conf')
        with open(conf, 'w') as out:
            out.write(f'[lmcaps]\ndriver = hyperv\nstate_path = {self.dir}\n'
                      f'[lmcaps_hyperv]\n'
                      f'endpoint = {self.sim.endpoint("hv-src")}\n'
                      f'destination_endpoint = '
                      f'{self.sim.endpoint("hv-dst")}\n'
                      f'transport = basic\nallow_unencrypted_basic = true\n'
                      f'username = {self.sim.username}\n'
                      f'password = {password}\n')
        return subprocess.run(
            [sys.executable, '-m', 'lmcaps', '--config-file', conf,
             'migrate', name, '--dest', 'hv-dst', *args],
            capture_output=True, text=True, timeout=60, cwd=fixture.ROOT)

    def test_abort_at_the_deadline(self):
        name = f"cli-{uuid.uuid4().hex[:6]}'; Remove-VM -Name * #"
        guid = self.sim.add_vm(name, migration_seconds=math.inf)
        done = self.migrate(name, self.sim.password, '--completion-timeout',
                            '1', '--timeout-action', 'abort')
        self.assertEqual(3, done.returncode, done.stderr)   # 3 = aborted
        self.assertIn('source (running)', done.stdout)
        self.assertEqual(('hv-src', 2), (self.sim.vm(guid)['host'],
                                         self.sim.vm(guid)['enabled_state']))

    def test_wrong_password_is_one_line(self):
        name = f'cli-{uuid.uuid4().hex[:6]}'
        self.sim.add_vm(name)
        done = self.migrate(name, 'Wr0ng-Secret')
        self.assertEqual(1, done.returncode)
        self.assertEqual(1, len(done.stderr.strip().splitlines()),
                         done.stderr)
        self.assertIn('rejected the credentials (HTTP 401)', done.stderr)
        self.assertNotIn('Wr0ng-Secret', done.stderr + done.stdout)
