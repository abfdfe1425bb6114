"""Per-instance timeouts on vCenter (vcsim), end to end.

``lmcaps.migrate.run`` with the real pre-checks, the real timeout monitor,
the vmware driver over oslo.vmware, events in SQLite; where the VM ends up
is asked of vcsim's own model.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time

import fixtures
from oslo_config import cfg
import testtools

from lmcaps import conf as lmcaps_conf
from lmcaps import drivers
from lmcaps import events
from lmcaps import events_sql
from lmcaps import exception
from lmcaps import migrate
from lmcaps import monitor
from lmcaps import policy
from lmcaps import registry
from lmcaps.drivers import base
from tests import backend as test_backend
from tests.functional.vmware import vcsim

ROOT = vcsim.ROOT


class _Base(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.useFixture(fixtures.FakeLogger(level=logging.INFO))
        ok, reason = vcsim.available()
        test_backend.require(self, ok, f'vcsim: {reason}')
        self.sim = self.useFixture(vcsim.Vcsim(relocate_time=1.0))
        self.state = self.useFixture(fixtures.TempDir()).path
        self.conf = cfg.ConfigOpts()
        lmcaps_conf.register_opts(self.conf)
        self.conf([], project='lmcaps-functional', default_config_files=[])
        self.conf.set_override('state_path', self.state, group='lmcaps')
        self.conf.set_override('driver', 'vmware', group='lmcaps')
        self.conf.set_override('monitor_poll_interval', 0.1, group='lmcaps')
        self.conf.set_override('driver_call_timeout', 10.0, group='lmcaps')
        drivers.driver_class('vmware')(self.conf)
        self.sim.configure(self.conf)
        self.driver = drivers.load('vmware', self.conf)
        self.addCleanup(self.driver.close)
        self.store = events_sql.SQLEventStore.from_conf(self.conf)
        self.addCleanup(self.store.close)

    def spec(self, duration, **relocation):
        vm, src, dest = self.sim.pick()
        self.sim.next_relocation(vm, duration, **relocation)
        return vm, src, dest, base.MigrationSpec(
            instance=vm, destination=base.Destination(host=dest,
                                                      address=dest))

    def events_named(self, instance, event):
        return [e for e in self.store.list_events(instance)
                if e.event == event]

    def task_of(self, vm):
        [task] = [t for t in self.sim.inventory()['relocate_tasks']]
        return task


class TimeoutTest(_Base):

    def test_abort_at_deadline_once_vm_stays_on_source(self):
        vm, src, _dest, spec = self.spec(0)
        summary = migrate.run(self.conf, self.driver, spec,
                              {'completion_timeout': 2,
                               'timeout_action': 'abort'}, self.store)
        self.assertEqual(('aborted', 'abort', None),
                         (summary.outcome, summary.action,
                          summary.action_error))
        self.assertGreater(summary.reaction, 0.0)
        self.assertEqual('source (running)', summary.guest_on.split(':')[0])
        seen = self.sim.vm(vm)
        self.assertEqual((src, 'poweredOn'),
                         (seen['host'], seen['power_state']))
        task = self.sim.task(self.task_of(vm))
        self.assertEqual((1, 'error', True), (task['cancel_calls'],
                                              task['state'],
                                              task['cancelled']))
        [fired] = self.events_named(vm, events.TIMEOUT_ACTION)
        self.assertEqual(events.SUCCESS, fired.result)
        self.assertIn('abort', fired.details)
        [outcome] = self.events_named(vm, events.OUTCOME)
        self.assertIn('cancelled', outcome.details)
        self.assertIn('source (running)', outcome.details)
        [pre] = self.events_named(vm, events.PRECHECK)
        self.assertEqual(events.SUCCESS, pre.result)

    def test_relocation_before_deadline_untouched(self):
        vm, _src, dest, spec = self.spec(0.8)
        summary = migrate.run(self.conf, self.driver, spec,
                              {'completion_timeout': 10,
                               'timeout_action': 'abort'}, self.store)
        self.assertEqual(('completed', None), (summary.outcome,
                                               summary.action))
        self.assertEqual(dest, self.sim.vm(vm)['host'])
        self.assertEqual(0, self.sim.task(self.task_of(vm))['cancel_calls'])
        self.assertEqual([], self.events_named(vm, events.TIMEOUT_ACTION))

    def test_cancel_racing_completion_is_completed(self):
        vm, _src, dest, spec = self.spec(0, complete_on_cancel=True)
        summary = migrate.run(self.conf, self.driver, spec,
                              {'completion_timeout': 2,
                               'timeout_action': 'abort'}, self.store)
        self.assertEqual(('completed', 'abort', None),
                         (summary.outcome, summary.action,
                          summary.action_error))
        self.assertEqual(dest, self.sim.vm(vm)['host'])
        self.assertTrue(summary.guest_on.startswith('destination (running)'))

    def test_force_complete_refused_before_any_task(self):
        vm, src, _dest, spec = self.spec(0)
        exc = self.assertRaises(
            exception.MigrationPreCheckFailed, migrate.run, self.conf,
            self.driver, spec, {'completion_timeout': 2,
                                'timeout_action': 'force_complete'},
            self.store)
        self.assertIn('vSphere has no call', str(exc))
        self.assertEqual([], self.sim.inventory()['relocate_tasks'])
        self.assertEqual(src, self.sim.vm(vm)['host'])
        [pre] = self.events_named(vm, events.PRECHECK)
        self.assertEqual(events.ERROR, pre.result)
        self.assertIn('vSphere has no call', pre.details)

    def test_vcenter_killed_mid_migration(self):
        vm, _src, _dest, spec = self.spec(0)
        self.driver.connect()
        pol = policy.resolve(self.conf, 2.0, [(policy.REQUEST, {
            'completion_timeout': 1, 'timeout_action': 'abort'})],
            declaration=self.driver.host_declaration())
        migration = self.driver.start_migration(spec)
        mon = monitor.TimeoutMonitor.from_conf(self.conf, self.store)
        mon.start()
        watch = mon.watch(self.driver, migration, pol, instance_uuid=vm,
                          request_id='req-lost')
        time.sleep(0.3)
        self.sim.kill()
        deadline = time.monotonic() + 15
        while not [e for e in self.events_named(vm, events.TIMEOUT_ACTION)
                   if e.result is not None]:      # recorded and finished
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.1)
        [blind] = self.events_named(vm, events.TIMEOUT_ACTION)
        self.assertEqual(events.ERROR, blind.result)
        self.assertIn('vCenter unreachable', blind.details)
        mon.stop()                           # the process goes on
        outcome = watch.wait(1)
        self.assertIsNone(outcome.action)
        self.assertFalse(outcome.ended)     # "lmcaps watch" may take over
        self.assertEqual(base.GuestHost.UNKNOWN, outcome.location.host)
        self.assertEqual(base.RunState.UNKNOWN, outcome.location.state)
        [ended] = self.events_named(vm, registry.UNENFORCED)
        self.assertIn('guest: unknown', ended.details)
        self.assertIn('vCenter unreachable', ended.details)

    def test_reattach_in_a_new_process_aborts_at_the_original_deadline(self):
        vm, src, _dest, spec = self.spec(0)
        spec = base.MigrationSpec(instance=spec.instance,
                                  destination=spec.destination,
                                  completion_timeout=3)
        migration = self.driver.start_migration(spec)
        started = time.monotonic()
        ref = migration.ref('vmware').to_json()
        self.driver.close()                  # this process lets go
        settings = {'lmcaps': {'state_path': self.state,
                               'monitor_poll_interval': 0.1},
                    'lmcaps_vmware': {k: getattr(self.conf.lmcaps_vmware, k)
                                      for k in ('host_ip', 'host_port',
                                                'host_scheme',
                                                'host_username',
                                                'host_password',
                                                'wsdl_location',
                                                'task_poll_interval',
                                                'api_retry_count')}}
        child = subprocess.run(
            [sys.executable, '-m', 'tests.functional.vmware.reattach_child',
             json.dumps(settings), ref], cwd=ROOT, capture_output=True,
            text=True, timeout=90, env=dict(os.environ))
        self.assertEqual(0, child.returncode, child.stderr[-2000:])
        result = json.loads(child.stdout.strip().splitlines()[-1])
        self.assertEqual(('cancelled', 'abort', None),
                         (result['phase'], result['action'],
                          result['action_error']))
        self.assertGreaterEqual(result['late'], 0.0)
        self.assertLess(time.monotonic() - started, 30)
        self.assertEqual(('source', 'running'),
                         (result['location']['host'],
                          result['location']['state']))
        self.assertEqual(src, self.sim.vm(vm)['host'])
        self.assertEqual(1, self.sim.task(migration.reference)['cancel_calls'])
