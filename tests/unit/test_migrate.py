"""Tests of one migration end to end (lmcaps.migrate) on the fake driver."""

import ddt

from lmcaps import events
from lmcaps import exception
from lmcaps import migrate
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
        self.assertEqual([events.PRECHECK, events.OUTCOME], self.names())
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

        self.assertRaises(KeyboardInterrupt, self.run_one,
                          {'completion_timeout': 60}, on_progress=interrupt)
        self.assertEqual((fake.SOURCE, fake.RUNNING),
                         self.driver.guest_location(seen[0]).pair)
        self.assertEqual(base.Phase.CANCELLED,
                         self.driver.get_progress(seen[0]).phase)
        self.assertIn(events.OUTCOME, self.names())
