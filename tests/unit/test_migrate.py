"""Tests of one migration end to end (lmcaps.migrate) on the fake driver."""

import time

import ddt

from lmcaps import events
from lmcaps import exception
from lmcaps import migrate
from lmcaps import registry
from lmcaps import validation
from lmcaps.drivers import base
from lmcaps.drivers import fake
from tests.unit import base as test_base


@ddt.ddt
class RunTest(test_base.ConfTestCase):

    def setUp(self):
        super().setUp()
        self.cfg.config(monitor_poll_interval=0.05, group='lmcaps')
        self.driver = fake.FakeDriver(self.conf)
        self.cfg.config(time_scale=20.0, ram_mib=1024, bandwidth_mib=1000.0,
                        group='lmcaps_fake')
        self.store = events.MemoryEventStore()

    def stuck(self):
        self.cfg.config(dirty_rate_mib=2000.0, group='lmcaps_fake')

    def run_one(self, body, **kwargs):
        return migrate.run(self.conf, self.driver,
                           base.MigrationSpec('inst-1', 'dest'), body,
                           self.store, progress_interval=0.05, **kwargs)

    def names(self):
        return [e.event for e in self.store.list_events('inst-1')]

    def test_converges_untouched(self):
        summary = self.run_one({'completion_timeout': 60})
        self.assertEqual(('completed', None, 'destination (running)'),
                         (summary.outcome, summary.action, summary.guest_on))
        self.assertEqual([events.PRECHECK, registry.WATCH, events.OUTCOME],
                         self.names())
        self.assertIn('completed', summary.line())

    @ddt.unpack
    @ddt.data(
        ({'timeout_action': 'abort'}, False, 'aborted', 'abort',
         'source (running)', 3),
        ({'timeout_action': 'force_complete'}, False, 'completed', 'pause',
         'destination (running)', 0),
        ({'timeout_action': 'force_complete'}, True, 'completed', 'postcopy',
         'destination (running)', 0),
    )
    def test_timeout_action(self, body, permit, outcome, action, guest, code):
        self.stuck()
        self.cfg.config(permit_post_copy=permit, group='lmcaps')
        summary = self.run_one(dict(body, completion_timeout=1))
        self.assertEqual((outcome, action, None, guest),
                         (summary.outcome, summary.action,
                          summary.action_error, summary.guest_on))
        self.assertGreater(summary.reaction, 0)
        self.assertEqual(code, migrate.EXIT_CODES[summary.outcome])
        self.assertEqual(1, self.names().count(events.TIMEOUT_ACTION))

    def test_refused_before_start(self):
        self.cfg.config(abort='missing', group='lmcaps_fake')
        self.assertRaises(exception.MigrationPreCheckFailed, self.run_one,
                          {'completion_timeout': 5})
        self.assertEqual([events.PRECHECK], self.names())

    def test_start_failure_is_recorded(self):
        self.stuck()        # the first one still runs when the second starts
        self.driver.start_migration(base.MigrationSpec('inst-1', 'other'))
        self.assertRaises(exception.DriverError, self.run_one, {})
        outcome = self.store.list_events('inst-1')[-1]
        self.assertEqual((events.OUTCOME, events.ERROR),
                         (outcome.event, outcome.result))
        self.assertIn('did not start', outcome.details)

    def test_interrupted_migration_is_aborted(self):
        self.stuck()
        seen = []

        def interrupt(migration, progress, left):
            seen.append(migration)
            raise KeyboardInterrupt

        summary = self.run_one({'completion_timeout': 60},
                               on_progress=interrupt)
        self.assertEqual(('aborted', 'abort', 'SIGINT'),
                         (summary.outcome, summary.action,
                          summary.interrupted))
        self.assertEqual((fake.SOURCE, fake.RUNNING),
                         self.driver.guest_location(seen[0]).pair)
        self.assertEqual(base.Phase.CANCELLED,
                         self.driver.get_progress(seen[0]).phase)
        self.assertIn(events.OUTCOME, self.names())

    def test_interrupted_where_abort_is_missing_goes_on_at_once(self):
        """A driver that cannot abort: the interruption says so at once
        (not after the settle time, not "in post-copy"), and no attempt is
        made."""
        self.stuck()
        self.cfg.config(abort='missing', group='lmcaps_fake')

        def interrupt(migration, progress, left):
            raise migrate.Interrupted('SIGTERM')

        begin = time.monotonic()
        err = self.assertRaises(
            migrate.MigrationContinues, self.run_one,
            {'completion_timeout': 0}, on_progress=interrupt)
        self.assertLess(time.monotonic() - begin, 10)
        self.assertIn('inst-1: interrupted (SIGTERM) and driver fake cannot '
                      'abort here', str(err))
        self.assertNotIn('post-copy', str(err))
        self.assertNotIn(events.TIMEOUT_ACTION, self.names())

    def test_summary_names_the_key_its_events_are_under(self):
        store = events.InstanceKeyed(self.store, 'inst-1')
        summary = migrate.run(self.conf, self.driver,
                              base.MigrationSpec('inst-1', 'dest'),
                              {'completion_timeout': 60}, store,
                              progress_interval=0.05)
        key = validation.instance_key('inst-1')
        self.assertEqual(key, summary.instance_uuid)
        self.assertEqual(key, summary.as_dict()['instance_uuid'])
        self.assertIn(events.OUTCOME,
                      [e.event for e in self.store.list_events(key)])


class ResumeTest(test_base.ConfTestCase):
    """A watch left open by a dead process is taken over by resume()."""

    def setUp(self):
        super().setUp()
        self.cfg.config(monitor_poll_interval=0.02, host='cmp-1',
                        group='lmcaps')
        self.driver = fake.FakeDriver(self.conf)
        self.cfg.config(time_scale=20.0, dirty_rate_mib=4000.0,
                        group='lmcaps_fake')
        self.store = events.MemoryEventStore()

    def orphan(self, timeout):
        """What a killed ``lmcaps migrate`` leaves: a started migration and
        its persisted watch, nobody enforcing it."""
        from lmcaps import monitor
        from lmcaps import policy
        migration = self.driver.start_migration(
            base.MigrationSpec('inst-9', 'dest'))
        pol = policy.resolve(self.conf, 2.0, [('request', {
            'completion_timeout': timeout})],
            declaration=self.driver.host_declaration())
        mon = monitor.TimeoutMonitor(self.store, host='cmp-1')
        mon.watch(self.driver, migration, pol, instance_uuid='inst-9',
                  request_id='req-9', persist=True)
        return migration, mon

    def test_reattached_and_aborted_at_the_original_deadline(self):
        migration, _dead = self.orphan(timeout=1)
        lines = []
        other = fake.FakeDriver(self.conf)      # a new process's driver
        [summary] = migrate.resume(self.conf, other, self.store,
                                   on_line=lines.append)
        self.assertEqual(('aborted', 'abort'), (summary.outcome,
                                                summary.action))
        self.assertGreater(summary.reaction, 0)
        self.assertLess(summary.reaction, 1.0)     # deadline kept
        self.assertIn('re-attached to fake-migration-1', lines[0])
        names = [e.event for e in self.store.list_events('inst-9')]
        self.assertEqual([registry.WATCH, events.TIMEOUT_ACTION,
                          events.OUTCOME], names)
        self.assertEqual([], migrate.resume(self.conf, other, self.store))

    def test_gone_migration_gets_an_outcome_event(self):
        migration, _dead = self.orphan(timeout=60)
        fake._worlds.clear()                    # the backend lost it
        lines, gone = [], []
        self.assertEqual([], migrate.resume(self.conf, fake.FakeDriver(
            self.conf), self.store, on_line=lines.append, gone=gone))
        self.assertIn('no longer exists on the backend', lines[0])
        self.assertEqual(['inst-9'], [name for name, _where in gone])
        # recorded: a later resume finds nothing open
        self.assertEqual([], migrate.resume(self.conf, fake.FakeDriver(
            self.conf), self.store, gone=gone))
        self.assertEqual(1, len(gone))
        [outcome] = [e for e in self.store.list_events('inst-9')
                     if e.event == events.OUTCOME]
        self.assertEqual(events.ERROR, outcome.result)
        self.assertIn('no longer exists on the backend', outcome.details)

    def test_watch_of_a_live_process_is_left_alone(self):
        import json
        import subprocess
        import sys
        _migration, _mon = self.orphan(timeout=60)
        owner = subprocess.Popen([sys.executable, '-c',
                                  'import time; time.sleep(60)'])
        self.addCleanup(owner.kill)
        rec = [e for e in self.store.list_events('inst-9')
               if e.event == registry.WATCH][0]
        data = json.loads(rec.details)
        data['pid'] = owner.pid
        for ev in self.store._events:       # as the live process wrote it
            if ev['id'] == rec.id:
                ev['details'] = json.dumps(data)
        self.assertEqual([], registry.open_watches(self.store, 'cmp-1'))
        self.assertEqual([], migrate.resume(self.conf, fake.FakeDriver(
            self.conf), self.store))
        self.assertEqual([], [e for e in self.store.list_events('inst-9')
                              if e.event == events.OUTCOME])
        owner.kill()
        owner.wait()
        self.assertEqual(1, len(registry.open_watches(self.store, 'cmp-1')))
