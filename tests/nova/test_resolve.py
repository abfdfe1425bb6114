"""Resolve once, enforce that: owner metadata, bounds, the carried record.

nova's ComputeManager.check_can_live_migrate_source and nova's libvirt
``_live_migration_monitor`` (fake libvirt) with a real DB; the monitor is
driven by :class:`tests.nova.base.MonitorRun` after the pre-check, as nova
calls them on the source.  The host-wide timeout is 800 s/GiB x 2 GiB =
1600 s, so an action before that is per-instance.
"""

from __future__ import annotations

import json

from nova import exception
from nova import objects

from lmcaps import events as lmcaps_events
from lmcaps.nova import carry
from lmcaps.nova import events as nova_events
from lmcaps.nova import policy as nova_policy
from tests.nova import base

CHECK_EVENT = 'compute_check_can_live_migrate_source'


def running(*seconds: float) -> list[tuple[float, str]]:
    return [(t, 'running') for t in seconds]


class OwnerMetadataTest(base.PreCheckTestCase):
    """``[lmcaps_nova] instance_metadata = True``; bounds 60 to 900 s."""

    def setUp(self) -> None:
        super().setUp()
        self.flags(instance_metadata=True, group='lmcaps_nova')
        self.flags(min_completion_timeout=60, max_completion_timeout=900,
                   group='lmcaps')
        self.addCleanup(carry.forget_all)

    def owner_event(self, inst: objects.Instance) -> objects.InstanceActionEvent:
        return self.events(inst)[nova_events.METADATA]

    def test_one_second_is_clamped_to_the_minimum(self):
        inst = self.make_instance(metadata={'lmcaps:completion_timeout': '1'})
        self.check(inst)               # never refused
        ours = self.events(inst)[lmcaps_events.PRECHECK]
        self.assertEqual('Success', ours.result)
        event = self.owner_event(inst)
        self.assertEqual('Error', event.result)   # nova keeps details then
        self.assertEqual('instance metadata adjusted, the live migration '
                         'goes ahead: lmcaps:completion_timeout',
                         event.details)
        self.assertIn('lmcaps:completion_timeout 1 clamped to 60 ([lmcaps] '
                      'min_completion_timeout)', event.traceback)
        run = base.MonitorRun(self, inst, [
            (0, 'none'), *running(1.5, 2, 60, 61, 62), (63, 'cancelled')])
        run.run()
        self.assertEqual([61], run.times('abort'))    # not at 1.5 s

    def test_never_is_clamped_to_the_maximum(self):
        inst = self.make_instance(metadata={'lmcaps:completion_timeout': '0'})
        self.check(inst)
        self.assertIn('lmcaps:completion_timeout 0 (never) clamped to 900 '
                      '([lmcaps] max_completion_timeout)',
                      self.owner_event(inst).traceback)
        run = base.MonitorRun(self, inst, [
            (0, 'none'), *running(899, 900, 901, 902), (903, 'cancelled')])
        run.run()
        self.assertEqual([901], run.times('abort'))

    def test_never_counts_where_no_maximum_is_set(self):
        self.flags(max_completion_timeout=0, group='lmcaps')
        inst = self.make_instance(metadata={'lmcaps:completion_timeout': '0'})
        self.check(inst)
        self.assertNotIn(nova_events.METADATA, self.events(inst))
        run = base.MonitorRun(self, inst, [
            (0, 'none'), *running(100, 1601, 5000), (5001, 'completed')])
        run.run()
        self.assertEqual([], run.calls)      # 0 = never, host-wide 1600 too

    def test_invalid_values_are_ignored_not_refused(self):
        inst = self.make_instance(metadata={
            'lmcaps:completion_timeout': 'soon',
            'lmcaps:timeout_action': 'explode',
            'lmcaps:bogus': '1',
            'lmcaps:force_complete_mode': 'pause',
            'unrelated': 'kept'})
        self.check(inst)
        event = self.owner_event(inst)
        self.assertEqual(
            'instance metadata adjusted, the live migration goes ahead: '
            'lmcaps:bogus, lmcaps:completion_timeout, lmcaps:timeout_action',
            event.details)
        for text in ("lmcaps:completion_timeout ignored: metadata key "
                     "lmcaps:completion_timeout: 'soon' is not an integer",
                     "lmcaps:bogus ignored: metadata key 'lmcaps:bogus' is "
                     "not an lmcaps key",
                     'lmcaps:timeout_action ignored: metadata keys '
                     'lmcaps:timeout_action:'):
            self.assertIn(text, event.traceback)
        # The valid key still counts.
        self.assertEqual({'force_complete_mode': ('pause', 'metadata')},
                         dict(carry.recall(self.context, inst).picked))

    def test_action_not_allowed_is_ignored(self):
        self.flags(allowed_timeout_actions=['abort'], group='lmcaps')
        self.flags(live_migration_timeout_action='abort', group='libvirt')
        inst = self.make_instance(metadata={
            'lmcaps:completion_timeout': '120',
            'lmcaps:timeout_action': 'force_complete'})
        self.check(inst)
        self.assertIn('lmcaps:timeout_action force_complete ignored: not in '
                      '[lmcaps] allowed_timeout_actions',
                      self.owner_event(inst).traceback)
        run = base.MonitorRun(self, inst, [
            (0, 'none'), *running(121, 122), (123, 'cancelled')])
        run.run()
        self.assertEqual([121], run.times('abort'))   # host-wide action

    def test_values_a_check_refuses_are_dropped(self):
        # Post-copy is not permitted here: the owner's mode is dropped with
        # the rest of the owner's values, the migration goes ahead.
        self.flags(live_migration_permit_post_copy=False, group='libvirt')
        self.drvr._parse_migration_flags()
        inst = self.make_instance(metadata={
            'lmcaps:completion_timeout': '120',
            'lmcaps:timeout_action': 'force_complete',
            'lmcaps:force_complete_mode': 'postcopy'})
        self.check(inst)
        event = self.owner_event(inst)
        self.assertEqual('instance metadata adjusted, the live migration '
                         'goes ahead: lmcaps:*', event.details)
        text = event.traceback
        self.assertIn('instance metadata lmcaps:* ignored, a pre-check '
                      'refuses it here: post_copy: force_complete_mode '
                      'postcopy (from metadata) is not permitted on this '
                      'host: [libvirt] live_migration_permit_post_copy is '
                      'False', text)
        self.assertEqual({}, dict(carry.recall(self.context, inst).picked))

    def test_operator_values_rank_above_and_are_not_clamped(self):
        inst = self.make_instance(
            extra_specs={'lmcaps:completion_timeout': '3600'},
            metadata={'lmcaps:completion_timeout': '1'})
        exc = self.assertRaises(exception.MigrationPreCheckError,
                                self.check, inst)
        self.assertIn('flavor lmcaps:completion_timeout: completion_timeout '
                      '3600 is out of bounds; allowed: 60 to 900 seconds',
                      str(exc))


class ChangedAfterPreCheckTest(base.PreCheckTestCase):
    """The owner changes the metadata after the pre-check passed."""

    def setUp(self) -> None:
        super().setUp()
        self.flags(instance_metadata=True, group='lmcaps_nova')
        self.flags(min_completion_timeout=60, group='lmcaps')
        self.addCleanup(carry.forget_all)
        self.inst = self.make_instance(
            metadata={'lmcaps:completion_timeout': '600'})
        self.check(self.inst)
        self.inst.metadata['lmcaps:completion_timeout'] = '1'
        self.inst.metadata['lmcaps:timeout_action'] = 'force_complete'
        self.inst.save()

    def assert_enforces_the_pre_check(self) -> None:
        run = base.MonitorRun(self, self.inst, [
            (0, 'none'), *running(2, 60, 600, 601, 602), (603, 'cancelled')])
        run.run()
        self.assertEqual([601], run.times('abort'))
        self.assertEqual([], run.times('postcopy'))

    def test_the_monitor_enforces_what_the_pre_check_resolved(self):
        self.assert_enforces_the_pre_check()

    def test_after_a_restart_the_record_comes_from_system_metadata(self):
        carry.forget_all()            # nova-compute restarted in between
        stored = objects.Instance.get_by_uuid(
            self.context, self.inst.uuid,
            expected_attrs=['system_metadata']).system_metadata
        self.assertEqual(
            {'request_id': self.context.request_id,
             'values': {'completion_timeout': [600, 'metadata']}},
            json.loads(stored[carry.SYSMETA_KEY]))
        self.assert_enforces_the_pre_check()

    def test_a_record_of_another_request_is_not_used(self):
        carry.forget_all()
        self.context.request_id = 'req-a-later-migration'
        objects.InstanceAction.action_start(
            self.context, self.inst.uuid, lmcaps_events.LIVE_MIGRATION,
            want_result=False)
        # No pre-check record for this request: resolved again, bounded.
        run = base.MonitorRun(self, self.inst, [
            (0, 'none'), *running(2, 60, 61, 62), (63, 'cancelled')])
        run.run()
        # clamped 1 -> 60: switched to post-copy on the pass at 61 s
        self.assertEqual([61], run.times('postcopy'))


class BoundsWithoutTheCheckTest(base.PreCheckTestCase):
    """``timeout_bounds`` is not enabled: the bounds hold all the same."""

    def setUp(self) -> None:
        super().setUp()
        self.flags(enabled_checks=['driver_support', 'post_copy'],
                   max_completion_timeout=600, group='lmcaps')
        self.flags(instance_metadata=True, group='lmcaps_nova')
        self.addCleanup(carry.forget_all)

    def test_flavor_value_out_of_bounds_is_refused(self):
        inst = self.make_instance(
            extra_specs={'lmcaps:completion_timeout': '3600'})
        exc = self.assertRaises(exception.MigrationPreCheckError,
                                self.check, inst)
        self.assertIn('completion_timeout 3600 is out of bounds', str(exc))
        ours = self.events(inst)[lmcaps_events.PRECHECK]
        self.assertEqual('Error', ours.result)
        self.assertLess(len(ours.details), 255)

    def test_request_value_not_allowed_is_refused(self):
        self.flags(allowed_timeout_actions=['abort'], group='lmcaps')
        inst = self.make_instance()
        from lmcaps.nova import request as nova_request
        nova_request.stash(inst, self.context.request_id,
                           {'timeout_action': 'force_complete'})
        inst.save()
        exc = self.assertRaises(exception.MigrationPreCheckError,
                                self.check, inst)
        self.assertIn('request on_timeout: timeout_action force_complete is '
                      'not allowed; allowed: abort', str(exc))

    def test_owner_value_out_of_bounds_is_clamped(self):
        inst = self.make_instance(
            metadata={'lmcaps:completion_timeout': '3600'})
        self.check(inst)
        self.assertEqual(
            {'completion_timeout': (600, nova_policy.METADATA)},
            dict(carry.recall(self.context, inst).picked))


class CarryWriteTest(base.PreCheckTestCase):
    def stored(self, inst: objects.Instance) -> objects.Instance:
        return objects.Instance.get_by_uuid(
            self.context, inst.uuid, expected_attrs=['system_metadata'])

    def test_pending_changes_of_nova_are_not_saved_by_lmcaps(self):
        self.addCleanup(carry.forget_all)
        inst = self.make_instance(
            extra_specs={'lmcaps:completion_timeout': '600'})
        inst.display_name = 'not saved yet'
        self.check(inst)
        stored = self.stored(inst)
        self.assertIn(carry.SYSMETA_KEY, stored.system_metadata)
        self.assertNotEqual('not saved yet', stored.display_name)

    def test_host_wide_defaults_write_nothing(self):
        inst = self.make_instance()
        self.check(inst)
        self.assertNotIn(carry.SYSMETA_KEY,
                         self.stored(inst).system_metadata)


class CarryRecordTest(base.NovaLmcapsTestCase):
    def test_the_largest_record_fits_in_system_metadata(self):
        res = nova_policy.Resolution(picked={
            'completion_timeout': (2 ** 31 - 1, 'metadata'),
            'timeout_action': ('force_complete', 'metadata'),
            'force_complete_mode': ('postcopy', 'metadata')})
        text = carry.encode('req-' + '0' * 36, res)
        self.assertLessEqual(len(text), 255)
        self.assertEqual(res, carry.decode(text, 'req-' + '0' * 36))
        self.assertIsNone(carry.decode(text, 'req-other'))

    def test_a_malformed_record_is_refused_by_decode(self):
        for text in ('{"request_id": ["x"]}', '[]', 'not json',
                     '{"request_id": "r", "values": {"completion_timeout": '
                     '[-1, "flavor"]}}',
                     '{"request_id": "r", "values": {"completion_timeout": '
                     '[5, "somewhere"]}}'):
            self.assertRaises(Exception, carry.decode, text, 'r')

    def test_a_malformed_record_in_the_instance_counts_as_none(self):
        inst = self.make_instance(
            system_metadata={carry.SYSMETA_KEY: '{"request_id": ["x"]}'})
        self.assertIsNone(carry.recall(self.context, inst))
