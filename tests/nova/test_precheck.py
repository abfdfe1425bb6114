"""lmcaps's pre-checks in nova's source pre-check, through the compute manager.

nova's ComputeManager and LibvirtDriver (fake libvirt) with a real DB, so the
instance-action events are nova's own rows.  nova's storage checks, which
need files and domains, are stubbed; nothing of lmcaps is.
"""

from __future__ import annotations

from unittest import mock

from nova.compute import vm_states
from nova.conductor import manager as conductor_manager
from nova import exception
from nova import objects

from lmcaps import checks as lmcaps_checks
from lmcaps import events as lmcaps_events
from lmcaps.nova import request as nova_request
from tests.nova import base

CHECK_EVENT = 'compute_check_can_live_migrate_source'
POSTCOPY = {'lmcaps:completion_timeout': '60',
            'lmcaps:timeout_action': 'force_complete',
            'lmcaps:force_complete_mode': 'postcopy'}


class SourcePreCheckTest(base.PreCheckTestCase):
    """Post-copy is not permitted on this source ([libvirt] default)."""

    LIBVIRT_FLAGS = dict(base.NovaLmcapsTestCase.LIBVIRT_FLAGS,
                         live_migration_permit_post_copy=False)

    def test_unsupported_request_is_refused_and_recorded(self):
        inst = self.make_instance(extra_specs=POSTCOPY)
        exc = self.assertRaises(exception.MigrationPreCheckError,
                                self.check, inst)
        self.assertIn('post_copy: force_complete_mode postcopy (from flavor) '
                      'is not permitted', str(exc))
        self.assertEqual(vm_states.ACTIVE, self.reloaded(inst).vm_state)
        events = self.events(inst)
        nova_event = events[CHECK_EVENT]
        self.assertEqual('Error', nova_event.result)
        # Inside nova the option that counts is nova's.
        self.assertIn('[libvirt] live_migration_permit_post_copy is False',
                      nova_event.details)
        self.assertNotIn('[lmcaps] permit_post_copy', nova_event.details)
        self.assertTrue(nova_event.details.startswith(
            'Migration pre-check error: refused by 1 of 3 lmcaps pre-checks: '
            'post_copy. '), nova_event.details)
        ours = events[lmcaps_events.PRECHECK]
        self.assertEqual('Error', ours.result)
        self.assertEqual('source-host', ours.host)
        # details: the one-line summary; the full reasons in the traceback
        self.assertEqual('refused by 1 of 3 lmcaps pre-checks: post_copy',
                         ours.details)
        self.assertIn('post_copy: force_complete_mode postcopy (from flavor) '
                      'is not permitted on this host: [libvirt] '
                      'live_migration_permit_post_copy is False',
                      ours.traceback)
        self.assertIn('effective policy: completion_timeout 60s (flavor); '
                      'timeout_action force_complete (flavor); '
                      'force_complete_mode postcopy (flavor)', ours.traceback)

    def test_conductor_keeps_the_instance_active(self):
        # nova's conductor error handling around a task whose destination
        # check reaches this source pre-check (as the RPC chain does).
        inst = self.make_instance(extra_specs=POSTCOPY)
        task = mock.Mock()
        task.execute.side_effect = lambda: self.check(inst)
        conductor = conductor_manager.ComputeTaskManager()
        with mock.patch.object(conductor, '_build_live_migrate_task',
                               return_value=task):
            self.assertRaises(exception.MigrationPreCheckError,
                              conductor._live_migrate, self.context, inst,
                              {'host': 'dest-host'}, False, False, None)
        inst = self.reloaded(inst)
        self.assertEqual(vm_states.ACTIVE, inst.vm_state)
        self.assertIsNone(inst.task_state)
        migration = objects.MigrationList.get_by_filters(
            self.context, {'instance_uuid': inst.uuid})[0]
        self.assertEqual('error', migration.status)

    def test_supported_request_passes_and_is_recorded(self):
        inst = self.make_instance(extra_specs=dict(
            POSTCOPY, **{'lmcaps:force_complete_mode': 'pause'}))
        result = self.check(inst)
        self.assertIsInstance(result, objects.LibvirtLiveMigrateData)
        events = self.events(inst)
        self.assertEqual('Success', events[CHECK_EVENT].result)
        self.assertEqual('Success', events[lmcaps_events.PRECHECK].result)

    def test_host_wide_defaults_add_no_event(self):
        inst = self.make_instance()
        evaluate = self.spy_evaluate()
        self.check(inst)
        self.assertEqual({CHECK_EVENT}, set(self.events(inst)))
        self.assertEqual(1, len(evaluate))

    def test_host_wide_defaults_refused_with_one_evaluation(self):
        # nova's own options imply post-copy, which this host does not permit.
        self.flags(live_migration_timeout_action='force_complete',
                   group='libvirt')
        self.flags(force_complete_mode='postcopy', group='lmcaps')
        inst = self.make_instance()
        evaluate = self.spy_evaluate()
        exc = self.assertRaises(exception.MigrationPreCheckError,
                                self.check, inst)
        self.assertIn('post_copy: force_complete_mode postcopy (from config)',
                      str(exc))
        self.assertEqual(1, len(evaluate))
        [ours] = self.named(inst, lmcaps_events.PRECHECK)
        self.assertEqual('Error', ours.result)
        self.assertEqual('refused by 1 of 3 lmcaps pre-checks: post_copy',
                         ours.details)
        self.assertIn('post_copy: force_complete_mode postcopy',
                      ours.traceback)

    def test_per_instance_values_evaluated_once(self):
        inst = self.make_instance(extra_specs=POSTCOPY)
        evaluate = self.spy_evaluate()
        exc = self.assertRaises(exception.MigrationPreCheckError,
                                self.check, inst)
        self.assertIn('post_copy: force_complete_mode postcopy (from flavor)',
                      str(exc))
        self.assertEqual(1, len(evaluate))
        self.assertEqual(1, len(self.named(inst, lmcaps_events.PRECHECK)))

    def test_bad_flavor_value_stored_without_validation_is_refused(self):
        # Extra specs set below microversion 2.86 are not validated by nova.
        inst = self.make_instance(extra_specs={
            'lmcaps:completion_timeout': 'soon'})
        exc = self.assertRaises(exception.MigrationPreCheckError,
                                self.check, inst)
        self.assertIn("flavor key lmcaps:completion_timeout: 'soon' is not "
                      "an integer", str(exc))
        self.assertEqual('Error',
                         self.events(inst)[lmcaps_events.PRECHECK].result)
        self.assertEqual(vm_states.ACTIVE, self.reloaded(inst).vm_state)

    def test_operator_bounds_apply_to_flavor_values(self):
        self.flags(max_completion_timeout=600, group='lmcaps')
        inst = self.make_instance(extra_specs={
            'lmcaps:completion_timeout': '3600'})
        exc = self.assertRaises(exception.MigrationPreCheckError,
                                self.check, inst)
        self.assertIn('completion_timeout 3600 is out of bounds', str(exc))

    def test_request_carrier_names_the_request(self):
        inst = self.make_instance()
        nova_request.stash(inst, self.context.request_id, {
            'completion_timeout': 120, 'timeout_action': 'force_complete',
            'force_complete_mode': 'postcopy'})
        inst.save()
        exc = self.assertRaises(exception.MigrationPreCheckError,
                                self.check, inst)
        self.assertIn('(from request)', str(exc))

    def test_malformed_carrier_is_a_precheck_error_not_error_state(self):
        inst = self.make_instance()
        inst.system_metadata[nova_request.SYSMETA_KEY] = (
            '{"request_id": ["x"], "values": {}}')
        inst.save()
        exc = self.assertRaises(exception.MigrationPreCheckError,
                                self.check, inst)
        self.assertIn('malformed', str(exc))
        self.assertEqual(vm_states.ACTIVE, self.reloaded(inst).vm_state)

    def test_unexpected_failure_reading_layers_is_a_precheck_error(self):
        inst = self.make_instance()
        with mock.patch('lmcaps.nova.policy.resolve_instance',
                        side_effect=RuntimeError('boom')):
            exc = self.assertRaises(exception.MigrationPreCheckError,
                                    self.check, inst)
        self.assertIn('lmcaps pre-check error: RuntimeError: boom', str(exc))
        self.assertEqual(vm_states.ACTIVE, self.reloaded(inst).vm_state)

    def test_instance_metadata_is_off_by_default(self):
        inst = self.make_instance(metadata={
            'lmcaps:completion_timeout': 'soon'})
        self.check(inst)     # ignored: [lmcaps_nova] instance_metadata off
        self.assertEqual({CHECK_EVENT}, set(self.events(inst)))

    def test_lmcaps_failure_still_keeps_the_instance_active(self):
        self.flags(enabled_checks=['no_such_check'], group='lmcaps')
        inst = self.make_instance()
        exc = self.assertRaises(exception.MigrationPreCheckError,
                                self.check, inst)
        self.assertIn('lmcaps pre-check error: CheckNotFound', str(exc))
        self.assertEqual(vm_states.ACTIVE, self.reloaded(inst).vm_state)
        [ours] = self.named(inst, lmcaps_events.PRECHECK)
        self.assertEqual(('Error', 'source-host'), (ours.result, ours.host))
        self.assertIn("lmcaps pre-check error: CheckNotFound: Unknown "
                      "pre-check 'no_such_check'", ours.details)
        self.assertIn('Traceback (most recent call last)', ours.traceback)

    def test_lmcaps_crash_in_the_checks_is_recorded_once(self):
        inst = self.make_instance()
        with mock.patch.object(lmcaps_checks.PreCheckRunner, 'evaluate',
                               side_effect=RuntimeError('checks broke')):
            exc = self.assertRaises(exception.MigrationPreCheckError,
                                    self.check, inst)
        self.assertIn('lmcaps pre-check error: RuntimeError: checks broke',
                      str(exc))
        [ours] = self.named(inst, lmcaps_events.PRECHECK)
        self.assertEqual(('Error', 'checks broke'),
                         (ours.result, ours.details))
        self.assertEqual(vm_states.ACTIVE, self.reloaded(inst).vm_state)
