"""Tests of the simulated (fake) driver."""

import dataclasses
import threading

import ddt
from oslo_config import cfg

from lmcaps import capabilities as caps
from lmcaps import drivers
from lmcaps import exception
from lmcaps.drivers import base
from lmcaps.drivers import fake
from tests.unit import base as test_base

MIB = fake.MIB
P = base.Phase
POSTCOPY = caps.ForceCompleteMode.POSTCOPY
PAUSE = caps.ForceCompleteMode.PAUSE


def act(driver, migration, name):
    """Call the operation ``name`` (an Operation value) on ``migration``."""
    if name == 'abort':
        return driver.abort(migration)
    mode = {'force_complete_pause': PAUSE,
            'force_complete_postcopy': POSTCOPY}[name]
    return driver.force_complete(migration, mode)


class ManualClock:
    """A monotonic clock that moves only when told."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeDriverTestCase(test_base.ConfTestCase):

    def setUp(self):
        super().setUp()
        self.clock = ManualClock()
        self.driver = fake.FakeDriver(self.conf, clock=self.clock)

    def set(self, **values):
        self.cfg.config(group='lmcaps_fake', **values)

    def start(self, instance='vm-1', postcopy=False, **spec):
        if postcopy:
            spec['prepare_for'] = base.PREPARE_POSTCOPY
        return self.driver.start_migration(
            base.MigrationSpec(instance=instance, destination='dst', **spec))

    def where(self, migration):
        """The observed location as plain strings."""
        loc = self.driver.guest_location(migration)
        return (loc.host.value, loc.state.value)

    def phase_at(self, migration, seconds):
        self.clock.now = migration.started_at + seconds
        return self.driver.get_progress(migration).phase


@ddt.ddt
class DeclarationTest(FakeDriverTestCase):

    def test_loads_by_entry_point_with_its_options(self):
        driver = drivers.load('fake', cfg.ConfigOpts())
        self.assertIsInstance(driver, fake.FakeDriver)
        self.assertEqual(2048, driver.options.ram_mib)

    def test_one_option_per_operation_and_defaults_complete(self):
        names = {opt.name for opt in fake.FakeDriver.list_opts()}
        self.assertTrue({op.value for op in caps.Operation} <= names)
        decl = self.driver.host_declaration()
        self.assertEqual({caps.Support.COMPLETE},
                         {decl.support(op) for op in caps.Operation})
        self.assertEqual(decl.capabilities,
                         fake.FakeDriver.declare().capabilities)

    @ddt.data(*caps.Operation)
    def test_partial_documents_its_condition(self, op):
        self.set(**{op.value: 'partial'})
        cap = self.driver.host_declaration()[op]
        self.assertIs(caps.Support.PARTIAL, cap.support)
        self.assertEqual(fake.CONDITIONS[op], cap.condition)
        self.assertTrue(cap.condition)

    @ddt.unpack
    @ddt.data(('missing', 'abort'), ('unknown', 'abort'),
              ('missing', 'force_complete_pause'),
              ('unknown', 'force_complete_postcopy'))
    def test_unusable_operation_raises_and_changes_nothing(self, level, op):
        self.set(**{op: level})
        self.set(dirty_rate_mib=5000.0)
        if op == 'force_complete_postcopy':
            self.assertRaises(exception.UnsupportedOperation, self.start,
                              postcopy=True)
        migration = self.start(postcopy=op != 'force_complete_postcopy')
        self.assertRaises(exception.UnsupportedOperation, act, self.driver,
                          migration, op)
        self.assertIs(P.PRECOPY, self.phase_at(migration, 60))
        self.assertEqual(('source', 'running'),
                         self.where(migration))

    def test_facts_name_the_simulation(self):
        self.set(dirty_rate_mib=12.5)
        decl = self.driver.host_declaration()
        self.assertEqual('12.5', decl.facts['dirty_rate_mib'])
        self.assertEqual(self.conf.lmcaps.host, decl.host)


@ddt.ddt
class PreCopyTest(FakeDriverTestCase):

    @ddt.unpack
    @ddt.data(
        # ram, bandwidth, dirty, downtime: seconds to complete (None: never)
        (2048, 1000.0, 0.0, 30.0, 2.048),
        # 2048 + 1024 + ... + 32 passes, then a 16 MiB final copy.
        (2048, 1000.0, 500.0, 30.0, 4.080),
        (2048, 1000.0, 1000.0, 30.0, None),
        (2048, 1000.0, 4000.0, 30.0, None),
        (20, 1000.0, 4000.0, 30.0, 0.040),   # all RAM fits the downtime
        (2048, 1000.0, 500.0, 0.0, 4.096),   # no downtime: 1-byte floor
    )
    def test_convergence(self, ram, bandwidth, dirty, downtime, done_at):
        self.set(ram_mib=ram, bandwidth_mib=bandwidth, dirty_rate_mib=dirty,
                 downtime_mib=downtime)
        migration = self.start()
        if done_at is None:
            self.assertIs(P.PRECOPY, self.phase_at(migration, 10.0 ** 6))
            self.assertGreater(self.driver.get_progress(migration).iteration,
                               1000)
            return
        self.assertIs(P.PRECOPY, self.phase_at(migration, done_at - 0.001))
        self.assertIs(P.COMPLETED, self.phase_at(migration, done_at + 0.001))
        self.assertEqual(('destination', 'running'),
                         self.where(migration))

    def test_progress_counts_passes_and_bytes(self):
        self.set(dirty_rate_mib=500.0)
        migration = self.start()
        self.clock.now = migration.started_at + 2.5
        progress = self.driver.get_progress(migration)
        self.assertEqual(2, progress.iteration)
        self.assertEqual(2048 * MIB, progress.data_total)
        self.assertEqual(2500 * MIB, progress.data_processed)
        self.assertEqual(572 * MIB, progress.data_remaining)
        self.assertEqual(500 * MIB, progress.memory_dirty_rate)
        self.assertEqual(1000 * MIB, progress.transfer_rate)

    def test_final_copy_pauses_the_guest(self):
        self.set(dirty_rate_mib=500.0)
        migration = self.start()
        self.assertIs(P.PRECOPY, self.phase_at(migration, 4.070))
        self.assertEqual(('source', 'paused'),
                         self.where(migration))
        self.assertEqual(0, self.driver.get_progress(
            migration).memory_dirty_rate)

    def test_time_scale_runs_simulated_time_faster(self):
        self.set(time_scale=10.0)
        migration = self.start()
        self.assertIs(P.PRECOPY, self.phase_at(migration, 0.2))
        self.assertIs(P.COMPLETED, self.phase_at(migration, 0.21))

    def test_spec_bandwidth_caps_the_link(self):
        migration = self.start(bandwidth_mib=100)
        self.assertIs(P.PRECOPY, self.phase_at(migration, 20.0))
        self.assertIs(P.COMPLETED, self.phase_at(migration, 20.5))

    def test_data_gib_counts_ram_with_nova_floor(self):
        self.set(ram_mib=8192)
        self.assertEqual(8.0, self.driver.guest_data_gib(
            base.MigrationSpec('vm-1', 'dst')))
        self.assertEqual(8.0, self.start().data_gib)
        self.set(ram_mib=512)
        self.assertEqual(2.0, self.start('vm-2').data_gib)

    def test_instance_cannot_migrate_twice_at_once(self):
        migration = self.start()
        self.assertRaises(exception.DriverError, self.start)
        self.driver.abort(migration)
        self.assertIsNot(migration.id, self.start().id)

    def test_second_client_reattaches_by_reference(self):
        other = fake.FakeDriver(self.conf, clock=self.clock)
        migration = other.start_migration(base.MigrationSpec('x', 'y'))
        again = self.driver.reattach(migration.ref('fake'))
        self.assertEqual(migration.reference, again.reference)
        self.assertEqual(other.get_progress(migration),
                         self.driver.get_progress(again))
        self.driver.abort(again)
        self.assertIs(P.CANCELLED, other.get_progress(migration).phase)

    def test_unknown_reference_is_gone(self):
        migration = self.start()
        ref = dataclasses.replace(migration.ref('fake'), reference='nope')
        err = self.assertRaises(exception.MigrationGone,
                                self.driver.reattach, ref)
        self.assertIn('no longer exists on the backend', str(err))
        lost = dataclasses.replace(migration, reference='nope')
        self.assertRaises(exception.MigrationNotFound,
                          self.driver.get_progress, lost)


@ddt.ddt
class ActionTest(FakeDriverTestCase):

    def setUp(self):
        super().setUp()
        self.set(dirty_rate_mib=2000.0)    # never converges by itself

    def test_abort_cancels_and_guest_stays_on_source(self):
        migration = self.start()
        self.clock.advance(5)
        self.driver.abort(migration)
        self.assertIs(P.CANCELLED, self.phase_at(migration, 100))
        self.assertEqual(('source', 'running'),
                         self.where(migration))
        self.assertRaises(exception.OperationRefused,
                          self.driver.abort, migration)

    def test_postcopy_needs_a_postcopy_start(self):
        migration = self.start(postcopy=False)
        exc = self.assertRaises(exception.OperationRefused,
                                self.driver.force_complete, migration,
                                POSTCOPY)
        self.assertIn('postcopy=True', str(exc))
        self.assertIs(P.PRECOPY, self.driver.get_progress(migration).phase)

    def test_postcopy_moves_guest_then_completes(self):
        self.set(postcopy_bandwidth_mib=500.0)
        migration = self.start(postcopy=True)
        self.clock.advance(3)
        self.driver.force_complete(migration, POSTCOPY)
        self.assertEqual(('destination', 'running'),
                         self.where(migration))
        progress = self.driver.get_progress(migration)
        self.assertIs(P.POSTCOPY, progress.phase)
        self.assertEqual(2048 * MIB, progress.data_remaining)
        self.assertIs(P.POSTCOPY, self.phase_at(migration, 3 + 4.09))
        self.assertIs(P.COMPLETED, self.phase_at(migration, 3 + 4.1))

    @ddt.data('abort', 'force_complete_postcopy', 'force_complete_pause')
    def test_refused_in_postcopy(self, name):
        migration = self.start(postcopy=True)
        self.driver.force_complete(migration, POSTCOPY)
        self.assertRaises(exception.OperationRefused, act, self.driver,
                          migration, name)
        self.assertIs(P.POSTCOPY, self.driver.get_progress(migration).phase)

    def test_abort_in_postcopy_message(self):
        migration = self.start(postcopy=True)
        self.driver.force_complete(migration, POSTCOPY)
        exc = self.assertRaises(exception.OperationRefused,
                                self.driver.abort, migration)
        self.assertIn('cannot abort migration in post-copy mode', str(exc))

    def test_pause_stops_dirtying_then_completes(self):
        migration = self.start()
        self.clock.advance(1.0)     # 1000 MiB sent, 2000 MiB dirtied
        self.driver.force_complete(migration, PAUSE)
        progress = self.driver.get_progress(migration)
        self.assertIs(P.PAUSED, progress.phase)
        self.assertEqual(0, progress.memory_dirty_rate)
        self.assertEqual(2048 * MIB, progress.data_remaining)
        self.assertEqual(('source', 'paused'),
                         self.where(migration))
        self.assertIs(P.PAUSED, self.phase_at(migration, 1 + 2.047))
        self.assertIs(P.COMPLETED, self.phase_at(migration, 1 + 2.049))
        self.assertEqual(('destination', 'running'),
                         self.where(migration))

    @ddt.data('abort', 'force_complete_postcopy', 'force_complete_pause')
    def test_refused_once_ended(self, name):
        self.set(dirty_rate_mib=0.0)
        migration = self.start(postcopy=True)
        self.assertIs(P.COMPLETED, self.phase_at(migration, 60))
        exc = self.assertRaises(exception.OperationRefused, act, self.driver,
                                migration, name)
        self.assertIn('already completed', str(exc))
        self.assertEqual(('destination', 'running'),
                         self.where(migration))

    def test_pause_twice_is_refused(self):
        migration = self.start()
        self.driver.force_complete(migration, PAUSE)
        self.assertRaises(exception.OperationRefused,
                          self.driver.force_complete, migration, PAUSE)

    def test_pause_failure_then_resume_source_once(self):
        migration = self.start()
        self.driver.force_complete(migration, PAUSE)
        self.driver.fail_migration(migration, 'link down')
        progress = self.driver.get_progress(migration)
        self.assertIs(P.FAILED, progress.phase)
        self.assertEqual('link down', progress.message)
        self.assertEqual(('source', 'paused'),
                         self.where(migration))
        self.driver.resume_source(migration)
        self.assertEqual(('source', 'running'),
                         self.where(migration))
        self.assertRaises(exception.OperationRefused,
                          self.driver.resume_source, migration)

    def test_abort_while_paused_keeps_guest_paused(self):
        migration = self.start()
        self.driver.force_complete(migration, PAUSE)
        self.driver.abort(migration)
        self.assertEqual(('source', 'paused'),
                         self.where(migration))
        self.driver.resume_source(migration)
        self.assertEqual(('source', 'running'),
                         self.where(migration))

    def test_resume_source_refused_while_running(self):
        migration = self.start()
        self.assertRaises(exception.OperationRefused,
                          self.driver.resume_source, migration)

    @ddt.unpack
    @ddt.data((None, ('source', 'running')),
              (PAUSE, ('source', 'paused')),
              (POSTCOPY, ('destination', 'paused')))
    def test_fail_migration_leaves_guest_where_it_was(self, mode, where):
        migration = self.start(postcopy=True)
        if mode is not None:
            self.driver.force_complete(migration, mode)
        self.driver.fail_migration(migration)
        self.assertIs(P.FAILED, self.driver.get_progress(migration).phase)
        self.assertEqual(where, self.where(migration))
        self.assertRaises(exception.OperationRefused,
                          self.driver.fail_migration, migration)

    def test_concurrent_callers_see_consistent_state(self):
        self.set(dirty_rate_mib=0.0, time_scale=1000.0)
        self.driver = fake.FakeDriver(self.conf)    # the real clock
        migrations = [self.start(f'vm-{i}') for i in range(8)]
        errors = []

        def poll(migration):
            try:
                self.assertIs(P.COMPLETED, self.driver.wait(
                    migration, timeout=5, interval=0.001).phase)
            except Exception as exc:  # reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=poll, args=(m,))
                   for m in migrations]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual([], errors)
