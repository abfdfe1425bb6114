"""lmcaps in nova's VMware driver: nova 34's VMwareVCDriver on vcsim.

The pre-check runs through nova's ComputeManager; the deadline through
``VMwareVCDriver.live_migration`` (nova's vmops, vm_util.relocate_vm and
oslo.vmware's task wait, unchanged), as ``ComputeManager._do_live_migration``
calls it.  Where the VM is, how many CancelTask calls a task got and how it
ended are read from vcsim's model (its control endpoint), not from lmcaps.
"""

from __future__ import annotations

import functools
from unittest import mock

from nova.compute import manager as compute_manager
from nova.compute import vm_states
from nova import exception
from nova import objects

from lmcaps import events as lmcaps_events
from lmcaps.nova import hooks
from tests.nova import vmware_base

CHECK_EVENT = 'compute_check_can_live_migrate_source'


class VMwarePreCheckTest(vmware_base.VMwareNovaTestCase):
    """nova's ComputeManager.check_can_live_migrate_source on VMware."""

    def setUp(self) -> None:
        super().setUp()
        self.compute = compute_manager.ComputeManager()
        self.compute.driver = self.drvr

    def check(self, instance: objects.Instance) -> objects.LiveMigrateData:
        return self.compute.check_can_live_migrate_source(
            self.context, instance, self.migrate_data())

    def test_force_complete_request_is_refused_early(self):
        inst = self.make_instance(extra_specs={
            'lmcaps:completion_timeout': '600',
            'lmcaps:timeout_action': 'force_complete'})
        exc = self.assertRaises(exception.MigrationPreCheckError,
                                self.check, inst)
        self.assertIn('timeout_action force_complete (from flavor): '
                      'force_complete is impossible', str(exc))
        self.assertIn('vSphere has no call that switches to post-copy during '
                      'a vMotion', str(exc))
        self.assertIn('vSphere has no call that pauses the guest', str(exc))
        inst = objects.Instance.get_by_uuid(self.context, inst.uuid)
        self.assertEqual(vm_states.ACTIVE, inst.vm_state)
        events = self.events(inst)
        [nova_event] = events[CHECK_EVENT]
        self.assertEqual('Error', nova_event.result)
        [ours] = events[lmcaps_events.PRECHECK]
        self.assertEqual(('Error', 'source-host'), (ours.result, ours.host))
        self.assertIn('force_complete_postcopy is missing for driver vmware '
                      'on host source-host (vSphere has no call that '
                      'switches to post-copy during a vMotion)',
                      ours.traceback)
        self.assertEqual('refused by 1 of 3 lmcaps pre-checks: '
                         'driver_support', ours.details)

    def test_abort_request_passes_and_is_recorded(self):
        inst = self.make_instance(extra_specs={
            'lmcaps:completion_timeout': '600',
            'lmcaps:timeout_action': 'abort'})
        result = self.check(inst)
        self.assertIsInstance(result, objects.VMwareLiveMigrateData)
        events = self.events(inst)
        self.assertEqual('Success', events[CHECK_EVENT][0].result)
        self.assertEqual('Success',
                         events[lmcaps_events.PRECHECK][0].result)

    def test_nova_refusal_comes_first(self):
        # nova's own check (an unknown destination cluster) still refuses.
        inst = self.make_instance(extra_specs={
            'lmcaps:timeout_action': 'force_complete',
            'lmcaps:completion_timeout': '600'})
        data = objects.VMwareLiveMigrateData(cluster_name='no-such-cluster',
                                             datastore_regex='.*')
        exc = self.assertRaises(
            exception.MigrationPreCheckError,
            self.compute.check_can_live_migrate_source, self.context, inst,
            data)
        self.assertIn('Cannot find destination cluster no-such-cluster',
                      str(exc))
        self.assertNotIn(lmcaps_events.PRECHECK, self.events(inst))


class VMwareDeadlineTest(vmware_base.VMwareNovaTestCase):
    """The per-instance deadline on nova's RelocateVM_Task."""

    def migrate(self, inst: objects.Instance) -> tuple[mock.Mock, mock.Mock,
                                                       object]:
        post, recover = mock.Mock(name='post'), mock.Mock(name='recover')
        result = self.drvr.live_migration(
            self.context, inst, 'dest-host', post, recover, False,
            self.migrate_data())
        return post, recover, result

    def task(self) -> dict:
        [task] = self.sim.inventory()['relocate_tasks']
        return {'ref': task, **self.sim.task(task)}

    def test_abort_at_the_deadline_cancels_once_and_rolls_back(self):
        inst = self.make_instance(extra_specs={
            'lmcaps:completion_timeout': '1',
            'lmcaps:timeout_action': 'abort'})
        vm, source, dest = self.place(inst)
        self.sim.next_relocation(vm, 30.0)
        post, recover, result = self.migrate(inst)
        self.assertIsNone(result)      # no failure for nova's manager
        task = self.task()
        self.assertEqual((1, True, 'error'),
                         (task['cancel_calls'], task['cancelled'],
                          task['state']))
        self.assertEqual(source, self.sim.vm(vm)['host'])
        post.assert_not_called()
        recover.assert_called_once_with(
            self.context, inst, 'dest-host', mock.ANY,
            migration_status='cancelled')
        events = self.events(inst)
        [action] = events[lmcaps_events.TIMEOUT_ACTION]
        self.assertEqual('Error', action.result)   # it missed its deadline
        self.assertEqual('source-host', action.host)
        self.assertIn('action: abort; attempt: 1; result: effective',
                      action.details)
        self.assertIn('completion_timeout: 1 s', action.details)
        self.assertIn('completion_timeout=flavor', action.details)
        [outcome] = events[lmcaps_events.OUTCOME]
        self.assertEqual('Error', outcome.result)
        self.assertIn('phase: cancelled', outcome.details)
        self.assertIn(f'guest: source (running): {source}', outcome.details)

    def test_nova_rollback_leaves_the_instance_active_on_the_source(self):
        # recover_method is the compute manager's own rollback, on the DB;
        # only its calls to other services (neutron, placement, the
        # destination compute) are stubbed.
        inst = self.make_instance(extra_specs={
            'lmcaps:completion_timeout': '1'})
        vm, source, dest = self.place(inst)
        self.sim.next_relocation(vm, 30.0)
        compute = compute_manager.ComputeManager()
        compute.driver = self.drvr
        compute.network_api = mock.Mock()
        compute.compute_rpcapi = mock.Mock()
        self.stub_out('nova.compute.manager.ComputeManager.'
                      '_revert_allocation', lambda *args, **kwargs: None)
        migration = objects.Migration(
            context=self.context, instance_uuid=inst.uuid,
            source_compute='source-host', dest_compute='dest-host',
            migration_type='live-migration', status='running')
        migration.create()
        data = self.migrate_data()
        data.migration = migration
        post = mock.Mock()
        # As ComputeManager._do_live_migration passes it.
        rollback = functools.partial(compute._rollback_live_migration,
                                     source_bdms=objects.BlockDeviceMappingList())
        result = self.drvr.live_migration(
            self.context, inst, 'dest-host', post, rollback, False, data)
        self.assertIsNone(result)
        post.assert_not_called()
        inst = objects.Instance.get_by_uuid(self.context, inst.uuid)
        self.assertEqual((vm_states.ACTIVE, None, 'source-host'),
                         (inst.vm_state, inst.task_state, inst.host))
        self.assertEqual('cancelled', objects.Migration.get_by_id(
            self.context, migration.id).status)
        self.assertEqual(source, self.sim.vm(vm)['host'])
        self.assertEqual(1, self.task()['cancel_calls'])

    def test_relocation_within_the_deadline_is_untouched(self):
        inst = self.make_instance(extra_specs={
            'lmcaps:completion_timeout': '60'})
        vm, source, dest = self.place(inst)
        self.sim.next_relocation(vm, 0.5)
        post, recover, result = self.migrate(inst)
        task = self.task()
        self.assertEqual((0, 'success'),
                         (task['cancel_calls'], task['state']))
        self.assertEqual(dest, self.sim.vm(vm)['host'])
        post.assert_called_once()
        recover.assert_not_called()
        events = self.events(inst)
        self.assertNotIn(lmcaps_events.TIMEOUT_ACTION, events)
        [outcome] = events[lmcaps_events.OUTCOME]
        self.assertEqual('Success', outcome.result)

    def test_not_cancelable_is_never_cancelled_and_recorded(self):
        inst = self.make_instance(extra_specs={
            'lmcaps:completion_timeout': '1'})
        vm, source, dest = self.place(inst)
        self.sim.next_relocation(vm, 2.5, cancelable=False)
        post, recover, result = self.migrate(inst)
        self.assertEqual(0, self.task()['cancel_calls'])
        self.assertEqual(dest, self.sim.vm(vm)['host'])
        post.assert_called_once()
        recover.assert_not_called()
        # nova keeps one row per event name: one line per attempt in its
        # traceback text; refused while running, then the task completed.
        [action] = self.events(inst)[lmcaps_events.TIMEOUT_ACTION]
        self.assertEqual('Error', action.result)
        lines = action.traceback.splitlines()
        refused = [line for line in lines if 'result: refused' in line]
        self.assertGreaterEqual(len(refused), 1)
        for number, line in enumerate(refused, 1):
            self.assertIn(f'action: abort; attempt: {number}; result: '
                          f'refused', line)
            self.assertIn('vCenter reports TaskInfo.cancelable = false',
                          line)
        self.assertIn('attempt: 1; result: refused', action.details)
        [outcome] = self.events(inst)[lmcaps_events.OUTCOME]
        self.assertEqual('Success', outcome.result)   # completed

    def test_cancel_racing_completion_is_completion(self):
        # vCenter accepts the cancel but the relocation completes anyway.
        inst = self.make_instance(extra_specs={
            'lmcaps:completion_timeout': '1'})
        vm, source, dest = self.place(inst)
        self.sim.next_relocation(vm, 30.0, complete_on_cancel=True)
        post, recover, result = self.migrate(inst)
        task = self.task()
        self.assertEqual((1, 'success'), (task['cancel_calls'],
                                          task['state']))
        self.assertEqual(dest, self.sim.vm(vm)['host'])
        post.assert_called_once()
        recover.assert_not_called()
        events = self.events(inst)
        [outcome] = events[lmcaps_events.OUTCOME]
        self.assertEqual('Success', outcome.result)   # completed
        [action] = events[lmcaps_events.TIMEOUT_ACTION]
        self.assertIn('action: abort', action.details)

    def test_a_failure_of_its_own_is_nova_failure_path(self):
        # Not cancelled by lmcaps: nova's rollback as 'failed', and the
        # error reaches the compute manager, exactly as without lmcaps.
        inst = self.make_instance(extra_specs={
            'lmcaps:completion_timeout': '60'})
        vm, source, dest = self.place(inst)
        self.sim.next_relocation(vm, 30.0)
        real = hooks.vmware.Relocation._watch

        def watch_then_fail(reloc, task, *args):
            real(reloc, task, *args)
            self.sim.fail(task.value)

        self.stub_out('lmcaps.nova.vmware.Relocation._watch', watch_then_fail)
        post, recover = mock.Mock(), mock.Mock()
        self.assertRaises(Exception, self.drvr.live_migration, self.context,
                          inst, 'dest-host', post, recover, False,
                          self.migrate_data())
        recover.assert_called_once_with(self.context, inst, 'dest-host',
                                        mock.ANY)
        self.assertEqual(source, self.sim.vm(vm)['host'])
        self.assertEqual(0, self.task()['cancel_calls'])

    def test_no_timeout_is_nova_alone(self):
        # No per-instance values; [lmcaps_nova] vmware_completion_timeout_
        # per_gib is 0: nothing is watched, nothing recorded.
        inst = self.make_instance()
        vm, source, dest = self.place(inst)
        self.sim.next_relocation(vm, 0.3)
        with mock.patch.object(hooks.vmware, 'monitor') as monitor:
            post, recover, result = self.migrate(inst)
        monitor.assert_not_called()
        post.assert_called_once()
        self.assertEqual(dest, self.sim.vm(vm)['host'])
        self.assertEqual({}, {k: v for k, v in self.events(inst).items()
                              if k.startswith('lmcaps_')})

    def test_host_wide_vmware_timeout(self):
        # 1 s/GiB x 2 GiB of RAM: cancelled after 2 s, from config.
        self.flags(vmware_completion_timeout_per_gib=1, group='lmcaps_nova')
        inst = self.make_instance()
        vm, source, dest = self.place(inst)
        self.sim.next_relocation(vm, 30.0)
        post, recover, result = self.migrate(inst)
        self.assertEqual(1, self.task()['cancel_calls'])
        self.assertEqual(source, self.sim.vm(vm)['host'])
        recover.assert_called_once_with(
            self.context, inst, 'dest-host', mock.ANY,
            migration_status='cancelled')
        [action] = self.events(inst)[lmcaps_events.TIMEOUT_ACTION]
        self.assertIn('completion_timeout: 2 s', action.details)
        self.assertIn('completion_timeout=config', action.details)
