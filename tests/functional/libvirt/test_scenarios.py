"""Per-instance timeouts and actions on real libvirtd + QEMU, end to end.

Each test boots a guest that dirties memory on the pair's source daemon and
live-migrates it with ``lmcaps.migrate.run``: real pre-checks, the real
timeout monitor, the libvirt driver over libvirt-python, events in SQLite.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import subprocess
import sys
import time

import fixtures

import libvirt
import testtools

from lmcaps import capabilities as caps
from lmcaps import drivers
from lmcaps import events
from lmcaps import events_sql
from lmcaps import exception
from lmcaps import migrate
from lmcaps import monitor
from lmcaps import policy
from lmcaps import registry
from lmcaps.drivers import base
from lmcaps.drivers import fake
from tests.functional.libvirt import pair as pair_mod

_COUNTER = itertools.count(1)
RUNNING, PAUSED = libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_PAUSED


class _Base(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.pair = pair_mod.shared_pair(self)

    def guest(self, dirty_mib: int = 4) -> str:
        name = f'func-{os.getpid()}-{next(_COUNTER)}'
        self.pair.define_guest(name, dirty_mib=dirty_mib)
        self.addCleanup(self._destroy, self.pair, name)
        return name

    @staticmethod
    def _destroy(pair, name):
        if pair.base is not None:      # stopped pairs took their guests along
            pair.destroy_guest(name)

    def setup_driver(self, **lmcaps_opts):
        self.conf = pair_mod.make_conf(
            self.pair, self.useFixture(fixtures.TempDir()).path,
            **lmcaps_opts)
        self.driver = drivers.load('libvirt', self.conf)
        self.addCleanup(self.driver.close)
        self.store = events_sql.SQLEventStore.from_conf(self.conf)
        self.addCleanup(self.store.close)

    def run_migration(self, name, body, bandwidth=pair_mod.STUCK_BANDWIDTH):
        self.phases = []

        def seen(_migration, progress, _left):
            self.phases.append(progress.phase)
        return migrate.run(self.conf, self.driver,
                           pair_mod.spec(self.pair, name, bandwidth), body,
                           self.store, on_progress=seen,
                           progress_interval=0.2)

    def uuid(self, name):
        """Events are recorded under the domain's UUID."""
        for side in ('src', 'dst'):
            try:
                dom = self.pair._lookup(side, name)
            except libvirt.libvirtError:    # that daemon was killed
                continue
            if dom is not None:
                return dom.UUIDString()
        return name     # watched under its name by the test itself

    def events_named(self, name, event):
        return [e for e in self.store.list_events(self.uuid(name))
                if e.event == event]

    def when_sending(self, migration):
        """Wait until QEMU sends data: control calls are refused before."""
        deadline = time.monotonic() + 30
        while not (self.driver.get_progress(migration).data_total or 0):
            self.assertLess(time.monotonic(), deadline, 'never started')
            time.sleep(0.05)


class TimeoutActionTest(_Base):

    def test_abort_at_deadline_once_guest_stays_on_source(self):
        self.setup_driver()
        name = self.guest()
        summary = self.run_migration(name, {'completion_timeout': 3,
                                            'timeout_action': 'abort'})
        self.assertEqual(('aborted', 'abort', None),
                         (summary.outcome, summary.action,
                          summary.action_error))
        self.assertGreater(summary.reaction, 0.0)     # after, never before
        self.assertEqual('src', self.pair.where(name))
        self.assertEqual(RUNNING, self.pair.states(name)['src'][0])
        self.assertIsNone(self.pair.states(name)['dst'])
        [fired] = self.events_named(name, events.TIMEOUT_ACTION)
        self.assertEqual(events.SUCCESS, fired.result)
        self.assertIn('abort', fired.details)
        [outcome] = self.events_named(name, events.OUTCOME)
        self.assertIn('cancelled', outcome.details)
        [pre] = self.events_named(name, events.PRECHECK)
        self.assertEqual(events.SUCCESS, pre.result)

    def test_force_complete_postcopy_at_deadline(self):
        self.setup_driver(permit_post_copy=True)
        name = self.guest()
        summary = self.run_migration(name, {
            'completion_timeout': 3, 'timeout_action': 'force_complete',
            'force_complete_mode': 'postcopy'})
        self.assertEqual(('completed', 'postcopy', None),
                         (summary.outcome, summary.action,
                          summary.action_error))
        self.assertIn(base.Phase.POSTCOPY, self.phases)
        self.assertEqual('dst', self.pair.where(name))
        self.assertEqual(RUNNING, self.pair.states(name)['dst'][0])
        # no second action during post-copy
        self.assertEqual(1, len(self.events_named(name,
                                                  events.TIMEOUT_ACTION)))

    def test_force_complete_by_pause_when_post_copy_not_permitted(self):
        self.setup_driver(permit_post_copy=False)
        name = self.guest()
        summary = self.run_migration(name, {
            'completion_timeout': 3, 'timeout_action': 'force_complete'})
        self.assertEqual(('completed', 'pause', None),
                         (summary.outcome, summary.action,
                          summary.action_error))
        self.assertIn(base.Phase.PAUSED, self.phases)
        self.assertEqual('dst', self.pair.where(name))
        self.assertEqual(RUNNING, self.pair.states(name)['dst'][0])
        self.assertEqual(1, len(self.events_named(name,
                                                  events.TIMEOUT_ACTION)))

    def test_destination_dies_in_post_copy_reported_as_observed(self):
        """After our switch to post-copy the destination QEMU dies: the
        guest is paused on the source with post-copy failed, and the
        outcome says so (asked of libvirt, not inferred from the phase)."""
        self.setup_driver(permit_post_copy=True)
        name = self.guest()
        killed = []
        errors = []

        def kill_destination(_migration, progress, _left):
            self.phases.append(progress.phase)
            if progress.phase is base.Phase.POSTCOPY and not killed:
                try:
                    self.pair.conn('dst').lookupByName(name).destroy()
                except Exception as exc:   # the display swallows it: keep it
                    errors.append(repr(exc))
                    raise
                killed.append(time.monotonic())

        self.phases = []
        summary = migrate.run(
            self.conf, self.driver, pair_mod.spec(self.pair, name),
            {'completion_timeout': 3, 'timeout_action': 'force_complete',
             'force_complete_mode': 'postcopy'}, self.store,
            on_progress=kill_destination, progress_interval=0.1)
        self.assertTrue(killed, f'destination not killed: {errors}; '
                                f'phases {self.phases}')
        self.assertEqual(('failed', 'postcopy'),
                         (summary.outcome, summary.action))
        src = self.pair.states(name)['src']
        self.assertEqual(PAUSED, src[0], 'libvirt: source not paused')
        self.assertTrue(summary.guest_on.startswith('source (paused)'),
                        summary.guest_on)
        self.assertIn('post-copy failed', summary.guest_on)
        [outcome] = self.events_named(name, events.OUTCOME)
        self.assertIn('guest: source (paused)', outcome.details)

    def test_post_copy_refused_before_the_migration_starts(self):
        self.setup_driver(permit_post_copy=False)
        name = self.guest()
        dom = self.pair.conn('src').lookupByName(name)
        err = self.assertRaises(
            exception.MigrationPreCheckFailed, self.run_migration, name,
            {'completion_timeout': 3, 'timeout_action': 'force_complete',
             'force_complete_mode': 'postcopy'})
        self.assertIn('permit_post_copy', str(err))
        [pre] = self.events_named(name, events.PRECHECK)
        self.assertEqual(events.ERROR, pre.result)
        self.assertIn('permit_post_copy', pre.details)
        self.assertEqual(libvirt.VIR_DOMAIN_JOB_NONE, dom.jobStats()['type'])
        self.assertEqual(RUNNING, dom.state()[0])
        self.assertIsNone(self.pair.states(name)['dst'])
        self.assertEqual([], self.events_named(name, events.TIMEOUT_ACTION))

    def test_converging_migration_is_never_touched(self):
        self.setup_driver()
        name = self.guest(dirty_mib=1)
        summary = self.run_migration(name, {'completion_timeout': 60,
                                            'timeout_action': 'abort'},
                                     bandwidth=None)
        self.assertEqual(('completed', None), (summary.outcome,
                                               summary.action))
        self.assertLess(summary.elapsed, 60)
        self.assertEqual('dst', self.pair.where(name))
        self.assertEqual([], self.events_named(name, events.TIMEOUT_ACTION))


class SourceDaemonKilledTest(_Base):
    """Runs on a pair of its own: it kills the source libvirtd."""

    def test_monitor_records_failure_and_survives(self):
        self.setup_driver()
        name = self.guest()
        # after the guest's own cleanup is registered, so it runs first:
        # the daemon is gone, stopping the pair kills the QEMU by PID.
        self.addCleanup(pair_mod.restart_pair)
        pol = policy.resolve(self.conf, 2, [('request', {
            'completion_timeout': 60, 'timeout_action': 'abort'})])
        migration = self.driver.start_migration(
            pair_mod.spec(self.pair, name))
        mon = monitor.TimeoutMonitor.from_conf(self.conf, self.store)
        mon.start()
        self.addCleanup(mon.stop)
        watch = mon.watch(self.driver, migration, pol, instance_uuid=name,
                          request_id='req-kill')
        deadline = time.monotonic() + 30
        while not (self.driver.get_progress(migration).data_total or 0):
            self.assertLess(time.monotonic(), deadline, 'never started')
            time.sleep(0.1)
        os.kill(self.pair.daemon_pid('src'), 9)
        outcome = watch.wait(60)
        self.assertIsNotNone(outcome, 'the monitor never concluded')
        self.assertEqual(base.Phase.FAILED, outcome.phase)
        self.assertIsNone(outcome.action)
        [rec] = self.events_named(name, events.OUTCOME)
        self.assertEqual(events.ERROR, rec.result)
        self.assertIn('failed', rec.details)
        # the process and the monitor survive: another migration is served
        fdrv = fake.FakeDriver(self.conf)
        fmig = fdrv.start_migration(base.MigrationSpec('other', 'dest'))  # noqa
        fpol = policy.resolve(self.conf, 2, [('request', {
            'completion_timeout': 0})])
        fwatch = mon.watch(fdrv, fmig, fpol, instance_uuid='other',
                           request_id='req-other')
        self.assertEqual(base.Phase.COMPLETED, fwatch.wait(30).phase)


class CommandLineTest(_Base):
    """``lmcaps migrate`` as an operator runs it, in a subprocess."""

    def lmcaps(self, conf_file, *args):
        return subprocess.run(
            [sys.executable, '-m', 'lmcaps', '--config-file', conf_file,
             *args], capture_output=True, text=True, timeout=120)

    def test_migrate_abort_then_events(self):
        name = self.guest()
        state = self.useFixture(fixtures.TempDir()).path
        conf_file = os.path.join(state, 'lmcaps.conf')
        with open(conf_file, 'w') as f:
            f.write(f'[lmcaps]\nstate_path = {state}\ndriver = libvirt\n'
                    f'monitor_poll_interval = 0.2\n'
                    f'[lmcaps_libvirt]\nconnection_uri = {self.pair.src_uri}\n')
        proc = self.lmcaps(conf_file, 'migrate', name, '--dest',
                           self.pair.dst_uri, '--migrate-uri',
                           self.pair.dst_migrate_uri, '--bandwidth', '1',
                           '--completion-timeout', '3', '--timeout-action',
                           'abort', '-f', 'json')
        self.assertEqual(3, proc.returncode, proc.stderr)
        summary = json.loads(proc.stdout)
        self.assertEqual(('aborted', 'abort', 'source (running)'),
                         (summary['outcome'], summary['action'],
                          summary['guest_on']))
        self.assertIn(f'{name}: aborted', proc.stderr.splitlines()[-1])
        self.assertEqual('src', self.pair.where(name))
        self.assertEqual(self.uuid(name), summary['instance_uuid'])
        proc = self.lmcaps(conf_file, 'events', summary['instance_uuid'],
                           '-f', 'json')
        self.assertEqual(0, proc.returncode, proc.stderr)
        names = [e['Event'] for e in json.loads(proc.stdout)]
        self.assertEqual(1, names.count(events.PRECHECK))
        self.assertEqual(1, names.count(events.TIMEOUT_ACTION))
        self.assertEqual(1, names.count(events.OUTCOME))
        self.assertEqual(1, names.count(registry.WATCH))

    def test_migrate_bad_request_is_one_line(self):
        name = self.guest()
        state = self.useFixture(fixtures.TempDir()).path
        conf_file = os.path.join(state, 'lmcaps.conf')
        with open(conf_file, 'w') as f:
            f.write(f'[lmcaps]\nstate_path = {state}\n'
                    f'[lmcaps_libvirt]\nconnection_uri = {self.pair.src_uri}\n')
        proc = self.lmcaps(conf_file, 'migrate', name, '--dest',
                           self.pair.dst_uri, '--timeout-action', 'pause')
        self.assertEqual(2, proc.returncode)
        self.assertEqual(1, len(proc.stderr.strip().splitlines()),
                         proc.stderr)
        self.assertIn('abort, force_complete', proc.stderr)
        self.assertEqual(RUNNING, self.pair.states(name)['src'][0])


class PostCopyRefusalTest(_Base):

    def test_abort_and_pause_in_post_copy_are_refused_cleanly(self):
        self.setup_driver(permit_post_copy=True)
        name = self.guest()
        migration = self.driver.start_migration(dataclasses.replace(
            pair_mod.spec(self.pair, name),
            prepare_for=base.PREPARE_POSTCOPY))
        self.when_sending(migration)
        self.driver.force_complete(migration,
                                   caps.ForceCompleteMode.POSTCOPY)
        deadline = time.monotonic() + 30
        while self.driver.get_progress(migration).phase is not \
                base.Phase.POSTCOPY:
            self.assertLess(time.monotonic(), deadline, 'no post-copy seen')
            time.sleep(0.05)
        err = self.assertRaises(exception.OperationRefused,
                                self.driver.abort, migration)
        self.assertIn('post-copy', str(err))
        for mode in caps.ForceCompleteMode:
            err = self.assertRaises(exception.OperationRefused,
                                    self.driver.force_complete, migration,
                                    mode)
            self.assertIn('already in post-copy', str(err))
        self.assertEqual(base.Phase.COMPLETED,
                         self.driver.wait(migration, timeout=60).phase)
        self.assertEqual('dst', self.pair.where(name))
        self.assertEqual(RUNNING, self.pair.states(name)['dst'][0])

    def test_post_copy_without_the_flag_is_refused(self):
        self.setup_driver(permit_post_copy=True)
        name = self.guest()
        migration = self.driver.start_migration(pair_mod.spec(self.pair,
                                                              name))
        self.when_sending(migration)
        err = self.assertRaises(exception.OperationRefused,
                                self.driver.force_complete, migration,
                                caps.ForceCompleteMode.POSTCOPY)
        self.assertIn('VIR_MIGRATE_POSTCOPY', str(err))
        self.assertIn(self.driver.get_progress(migration).phase,
                      (base.Phase.PREPARING, base.Phase.PRECOPY))
        self.driver.abort(migration)
        self.assertEqual(base.Phase.CANCELLED,
                         self.driver.wait(migration, timeout=60).phase)
        self.assertEqual('src', self.pair.where(name))
