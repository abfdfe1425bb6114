"""The vmware driver over oslo.vmware against vcsim (tools/vcsim)."""

from __future__ import annotations

import logging
import time

from oslo_config import cfg
import fixtures
import testtools

from lmcaps import capabilities as caps
from lmcaps import conf as lmcaps_conf
from lmcaps import drivers
from lmcaps import exception
from lmcaps.drivers import base
from tests import backend as test_backend
from tests.functional.vmware import tls
from tests.functional.vmware import vcsim

SOURCE, DESTINATION = base.GuestHost.SOURCE, base.GuestHost.DESTINATION
RUNNING = base.RunState.RUNNING


def make_conf(sim: vcsim.Vcsim | None = None) -> cfg.ConfigOpts:
    conf = cfg.ConfigOpts()
    lmcaps_conf.register_opts(conf)
    conf([], project='lmcaps-functional', default_config_files=[])
    conf.set_override('driver_call_timeout', 10.0, group='lmcaps')
    drivers.driver_class('vmware')(conf)   # registers [lmcaps_vmware]
    if sim is not None:
        sim.configure(conf)
    return conf


class DriverTestCase(testtools.TestCase):

    relocate_time = 1.0
    cancelable = True

    def setUp(self):
        super().setUp()
        self.useFixture(fixtures.FakeLogger(level=logging.INFO))
        ok, reason = vcsim.available()
        test_backend.require(self, ok, f'vcsim: {reason}')
        self.sim = self.useFixture(vcsim.Vcsim(
            relocate_time=self.relocate_time, cancelable=self.cancelable))
        self.conf = make_conf(self.sim)
        self.driver = self.new_driver()

    def new_driver(self):
        driver = drivers.load('vmware', self.conf)
        self.addCleanup(driver.close)
        return driver

    def start(self, duration=None, **relocation):
        vm, src, dest = self.sim.pick()
        if duration is not None or relocation:
            self.sim.next_relocation(vm, duration if duration is not None
                                     else self.relocate_time, **relocation)
        spec = base.MigrationSpec(instance=vm, destination=base.Destination(
            host=dest, address=dest))
        return self.driver.start_migration(spec), vm, src, dest

    def wait(self, migration, timeout=15.0, driver=None):
        progress = (driver or self.driver).wait(migration, timeout, 0.05)
        self.assertTrue(progress.phase.terminal, progress)
        return progress


class TestDriver(DriverTestCase):

    def test_relocation_completes_on_the_destination(self):
        migration, vm, src, dest = self.start()
        self.assertRegex(migration.reference, r'^task-\d+$')
        first = self.driver.get_progress(migration)
        self.assertIn(first.phase, (base.Phase.PREPARING, base.Phase.PRECOPY))
        self.assertEqual(base.Phase.COMPLETED, self.wait(migration).phase)
        where = self.driver.guest_location(migration)
        self.assertEqual((DESTINATION, RUNNING), where.pair)
        self.assertEqual(dest, self.sim.vm(vm)['host'])
        self.assertEqual(0, self.sim.task(migration.reference)['cancel_calls'])

    def test_progress_fraction_advances(self):
        migration, *_ = self.start(duration=2.0)
        fractions = []
        while True:
            p = self.driver.get_progress(migration)
            if p.phase.terminal:
                break
            if p.fraction is not None:
                fractions.append(p.fraction)
            time.sleep(0.1)
        self.assertGreater(len(set(fractions)), 3)
        self.assertEqual(sorted(fractions), fractions)
        self.assertTrue(all(0 <= f < 1 for f in fractions))

    def test_abort_keeps_the_vm_on_the_source_running(self):
        migration, vm, src, _dest = self.start(duration=0)
        time.sleep(0.3)
        self.driver.abort(migration)
        self.driver.abort(migration)       # a second abort sends nothing
        self.assertEqual(base.Phase.CANCELLED, self.wait(migration).phase)
        self.assertEqual((SOURCE, RUNNING),
                         self.driver.guest_location(migration).pair)
        self.assertEqual({'host': src, 'power_state': 'poweredOn'},
                         {k: v for k, v in self.sim.vm(vm).items()
                          if k in ('host', 'power_state')})
        task = self.sim.task(migration.reference)
        self.assertEqual((1, 'error', True),
                         (task['cancel_calls'], task['state'],
                          task['cancelled']))

    def test_abort_racing_completion_is_completed(self):
        migration, vm, _src, dest = self.start(duration=0,
                                               complete_on_cancel=True)
        self.driver.abort(migration)
        self.assertEqual(base.Phase.COMPLETED, self.wait(migration).phase)
        self.assertEqual(dest, self.sim.vm(vm)['host'])
        self.assertEqual(DESTINATION,
                         self.driver.guest_location(migration).host)

    def test_abort_after_completion_sends_no_cancel(self):
        migration, *_ = self.start(duration=0.2)
        self.assertEqual(base.Phase.COMPLETED, self.wait(migration).phase)
        self.driver.abort(migration)       # "already completed": no error
        self.assertEqual(0, self.sim.task(migration.reference)['cancel_calls'])

    def test_force_complete_is_unsupported_before_the_backend(self):
        migration, *_ = self.start(duration=0)
        self.addCleanup(self.driver.abort, migration)
        for mode in caps.ForceCompleteMode:
            self.assertRaises(exception.UnsupportedOperation,
                              self.driver.force_complete, migration, mode)
        self.assertEqual(base.Phase.PRECOPY,
                         self.driver.get_progress(migration).phase)

    def test_failed_relocation(self):
        migration, vm, src, _dest = self.start(duration=0)
        self.sim.fail(migration.reference)
        progress = self.wait(migration)
        self.assertEqual(base.Phase.FAILED, progress.phase)
        self.assertTrue(progress.message)
        self.assertEqual(src, self.sim.vm(vm)['host'])

    def test_reattach_by_moref_in_a_new_driver(self):
        migration, vm, src, _dest = self.start(duration=0)
        text = migration.ref('vmware').to_json()
        other = self.new_driver()
        again = other.reattach(base.MigrationRef.from_json(text))
        self.assertEqual(migration.reference, again.reference)
        self.assertEqual(base.Phase.PRECOPY, other.get_progress(again).phase)
        other.abort(again)
        self.assertEqual(base.Phase.CANCELLED,
                         self.wait(again, driver=other).phase)
        self.assertEqual(src, self.sim.vm(vm)['host'])

    def test_reattach_to_a_task_vcenter_does_not_have(self):
        migration, *_ = self.start(duration=0)
        self.addCleanup(self.driver.abort, migration)
        ref = base.MigrationRef(driver='vmware', reference='task-999999',
                                spec=migration.spec, started_at=time.time(),
                                extra=dict(migration.extra))
        self.assertRaises(exception.MigrationGone, self.driver.reattach, ref)

    def test_unknown_destination_refused_before_a_task(self):
        vm, _src, _dest = self.sim.pick()
        spec = base.MigrationSpec(instance=vm, destination='no-such-host')
        exc = self.assertRaises(exception.DriverError,
                                self.driver.start_migration, spec)
        self.assertIn("no HostSystem 'no-such-host'", str(exc))
        self.assertEqual([], self.sim.inventory()['relocate_tasks'])

    def test_by_vm_and_host_names(self):
        inv = self.sim.inventory()
        vm = next(v for v in inv['vms'] if '_C0_' in v['name'])
        dest = next(h for h in inv['hosts']
                    if '_C0_' in h['name'] and h['ref'] != vm['host'])
        self.sim.next_relocation(vm['ref'], 0.3)
        migration = self.driver.start_migration(base.MigrationSpec(
            instance=vm['name'], destination=dest['name']))
        self.assertEqual(base.Phase.COMPLETED, self.wait(migration).phase)
        self.assertEqual(dest['ref'], self.sim.vm(vm['ref'])['host'])

    def test_session_lost_logs_in_again(self):
        migration, vm, src, _dest = self.start(duration=0)
        self.driver.get_progress(migration)
        self.assertGreaterEqual(self.sim.terminate_sessions(), 1)
        self.assertEqual(base.Phase.PRECOPY,
                         self.driver.get_progress(migration).phase)
        self.driver.abort(migration)
        self.assertEqual(base.Phase.CANCELLED, self.wait(migration).phase)
        self.assertEqual(src, self.sim.vm(vm)['host'])

    def test_vcenter_lost_location_unknown(self):
        migration, *_ = self.start(duration=0)
        self.sim.kill()
        exc = self.assertRaises(exception.DriverError,
                                self.driver.get_progress, migration)
        self.assertIn('unreachable', str(exc))
        self.assertEqual(1, len(str(exc).splitlines()))
        where = self.driver.guest_location(migration)
        self.assertEqual(base.GuestHost.UNKNOWN, where.host)
        self.assertEqual(base.RunState.UNKNOWN, where.state)


class TestNotCancelable(DriverTestCase):

    cancelable = False

    def test_abort_refused_when_not_cancelable(self):
        migration, vm, _src, dest = self.start(duration=1.0)
        exc = self.assertRaises(exception.OperationRefused,
                                self.driver.abort, migration)
        self.assertIn('cancelable', str(exc))
        self.assertEqual(0, self.sim.task(migration.reference)['cancel_calls'])
        self.assertEqual(base.Phase.COMPLETED, self.wait(migration).phase)
        self.assertEqual(dest, self.sim.vm(vm)['host'])


class TestLogin(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.useFixture(fixtures.FakeLogger(level=logging.INFO))
        ok, reason = vcsim.available()
        test_backend.require(self, ok, f'vcsim: {reason}')
        self.sim = self.useFixture(vcsim.Vcsim())

    def test_bad_password_is_one_line_without_the_password(self):
        conf = make_conf(self.sim)
        conf.set_override('host_password', 'Wrong-Pass-77',
                          group='lmcaps_vmware')
        driver = drivers.load('vmware', conf)
        exc = self.assertRaises(exception.DriverError, driver.connect)
        text = str(exc)
        self.assertIn('authentication failed', text)
        self.assertIn('InvalidLogin', text)
        self.assertEqual(1, len(text.splitlines()))
        self.assertNotIn('Wrong-Pass-77', text)
        self.assertIsNone(exc.__cause__)

    def test_unreachable_vcenter_is_reported_not_retried_forever(self):
        conf = make_conf(self.sim)
        conf.set_override('api_retry_count', 1, group='lmcaps_vmware')
        self.sim.stop()
        driver = drivers.load('vmware', conf)
        began = time.monotonic()
        exc = self.assertRaises(exception.DriverError, driver.connect)
        # bounded, not fast: oslo.vmware waits between its retries and
        # parses the WSDL each time (slow on a loaded machine)
        self.assertLess(time.monotonic() - began, 60)
        self.assertIn('vCenter unreachable', str(exc))
        self.assertEqual(1, len(str(exc).splitlines()))

    def test_tls_verified_by_default(self):
        proxy = self.useFixture(tls.TLSProxy((self.sim.host, self.sim.port)))
        conf = make_conf(self.sim)
        conf.set_override('host_scheme', 'https', group='lmcaps_vmware')
        conf.set_override('host_port', proxy.port, group='lmcaps_vmware')
        self.assertFalse(conf.lmcaps_vmware.insecure)
        driver = drivers.load('vmware', conf)
        exc = self.assertRaises(exception.DriverError, driver.connect)
        self.assertIn('TLS certificate verification failed', str(exc))
        self.assertEqual(1, len(str(exc).splitlines()))

        conf.set_override('ca_file', str(proxy.ca), group='lmcaps_vmware')
        driver = drivers.load('vmware', conf)
        self.addCleanup(driver.close)
        driver.connect()
        vm, _src, _dest = self.sim.pick()
        migration_spec = base.MigrationSpec(instance=vm, destination='x')
        self.assertGreaterEqual(driver.guest_data_gib(migration_spec), 2.0)

    def test_insecure_only_when_set(self):
        proxy = self.useFixture(tls.TLSProxy((self.sim.host, self.sim.port)))
        conf = make_conf(self.sim)
        conf.set_override('host_scheme', 'https', group='lmcaps_vmware')
        conf.set_override('host_port', proxy.port, group='lmcaps_vmware')
        conf.set_override('insecure', True, group='lmcaps_vmware')
        driver = drivers.load('vmware', conf)
        self.addCleanup(driver.close)
        driver.connect()
