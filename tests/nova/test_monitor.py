"""The per-instance timeout inside nova's real libvirt monitor.

nova 34's ``_live_migration_monitor`` runs on nova's fake libvirt; the
per-instance values come from the flavor or the request carrier, the
host-wide ones from ``[libvirt]``.  The host-wide timeout is 800 s/GiB x
2 GiB = 1600 s everywhere, so any action before that is per-instance.
"""

from __future__ import annotations

from lmcaps import events as lmcaps_events
from lmcaps.nova import hooks
from lmcaps.nova import request as nova_request
from tests.nova import base

FLAVOR_POSTCOPY = {'lmcaps:completion_timeout': '30',
                   'lmcaps:timeout_action': 'force_complete',
                   'lmcaps:force_complete_mode': 'postcopy'}


def running(*seconds: float) -> list[tuple[float, str]]:
    return [(t, 'running') for t in seconds]


class PerInstanceForceCompleteTest(base.NovaLmcapsTestCase):
    """Post-copy permitted, host-wide action abort after 1600 s."""

    def test_switches_to_post_copy_at_the_per_instance_deadline(self):
        inst = self.make_instance(extra_specs=FLAVOR_POSTCOPY)
        run = base.MonitorRun(self, inst, [
            (0, 'none'), *running(10, 29, 30, 31, 32, 33, 40, 2000),
            (2001, 'completed')])
        run.run()
        # 30 s exactly is not past the deadline; 31 s is.  nova's clock is
        # mocked here, so nova's pass (the fallback observer) acts: at
        # once, through the guest, not queued for nova's next pass.
        self.assertEqual([31], run.times('postcopy'))
        self.assertEqual([], run.times('abort'))
        self.assertEqual([], run.times('pause'))
        self.assertEqual('running (post-copy)', run.migration.status)
        run.post_method.assert_called_once()
        run.recover_method.assert_not_called()
        event = self.events(inst)[lmcaps_events.TIMEOUT_ACTION]
        self.assertEqual('Error', event.result)    # missed its deadline
        self.assertEqual('source-host', event.host)
        self.assertIn('completion_timeout 30s (flavor)', event.details)
        self.assertIn('force_complete_mode postcopy (flavor)', event.details)

    def test_a_refused_switch_is_retried_with_backoff_then_escalates(self):
        # libvirt refuses the switch: retried after the backoff (0.5 s,
        # doubling), not on every pass; after 3 attempts it escalates to
        # pause.
        inst = self.make_instance(extra_specs=FLAVOR_POSTCOPY)
        run = base.MonitorRun(self, inst, [
            (0, 'none'), *running(31, 31.4, 32, 32.5, 33, 34, 35, 36),
            (37, 'completed')], postcopy_error=True)
        run.run()
        self.assertEqual([31, 32, 33], run.times('postcopy'))
        self.assertEqual([35], run.times('pause'))
        self.assertEqual('running', run.migration.status)
        # one event (nova keeps one per name and action) with every attempt
        text = self.events(inst)[lmcaps_events.TIMEOUT_ACTION].details
        self.assertIn('attempt 1: postcopy at 31s refused (post-copy '
                      'refused), next at 31.5s', text)
        self.assertIn('attempt 2: postcopy at 32s refused', text)

    def test_effective_switch_is_recorded_once(self):
        inst = self.make_instance(extra_specs=FLAVOR_POSTCOPY)
        run = base.MonitorRun(self, inst, [
            (0, 'none'), *running(31, 32, 33, 34, 40), (41, 'completed')])
        run.run()
        self.assertEqual([31], run.times('postcopy'))
        details = [e.details for e in self.all_events(inst)
                   if e.event == lmcaps_events.TIMEOUT_ACTION]
        self.assertEqual(1, len(details), details)
        self.assertIn('attempt 1: postcopy at 31s effective', details[0])
        self.assertNotIn('attempt 2', details[0])

    def test_without_lmcaps_nova_repeats_the_action_every_pass(self):
        # The defect the latch removes, on the same script (host-wide
        # values: lmcaps disabled ignores the flavor).
        hooks.disable()
        self.flags(live_migration_completion_timeout=15,
                   live_migration_timeout_action='force_complete',
                   group='libvirt')
        inst = self.make_instance(extra_specs=FLAVOR_POSTCOPY)
        run = base.MonitorRun(self, inst, [
            (0, 'none'), *running(31, 32, 33, 34), (35, 'completed')],
            postcopy_error=True)
        run.run()
        self.assertEqual([32, 33, 34], run.times('postcopy'))

    def test_never_after_post_copy(self):
        inst = self.make_instance(extra_specs=FLAVOR_POSTCOPY)
        run = base.MonitorRun(self, inst, [
            (0, 'none'), *running(31, 40, 50), (51, 'completed')])
        run.migration.status = 'running (post-copy)'
        run.run()
        self.assertEqual([], run.calls)
        self.assertNotIn(lmcaps_events.TIMEOUT_ACTION, self.events(inst))

    def test_pause_mode_pauses_although_post_copy_is_enabled(self):
        inst = self.make_instance(extra_specs={
            **FLAVOR_POSTCOPY, 'lmcaps:force_complete_mode': 'pause'})
        run = base.MonitorRun(self, inst, [
            (0, 'none'), *running(31, 32, 33), (34, 'failed')])
        resumed = []
        self.stub_out('nova.virt.libvirt.guest.Guest.resume',
                      lambda guest: resumed.append(run.clock))
        self.stub_out('nova.virt.libvirt.guest.Guest.get_power_state',
                      lambda guest, host: 3)   # power_state.PAUSED
        run.run()
        self.assertEqual([31], run.times('pause'))
        self.assertEqual([], run.times('postcopy'))
        self.assertEqual([34], resumed)   # nova's recover task on failure
        run.recover_method.assert_called_once()


class PerInstanceAbortTest(base.NovaLmcapsTestCase):
    """Host-wide action force_complete; the instance asks for abort."""

    LIBVIRT_FLAGS = dict(base.NovaLmcapsTestCase.LIBVIRT_FLAGS,
                         live_migration_timeout_action='force_complete')

    def test_aborts_once_at_the_per_instance_deadline(self):
        inst = self.make_instance(extra_specs={
            'lmcaps:completion_timeout': '20',
            'lmcaps:timeout_action': 'abort'})
        run = base.MonitorRun(self, inst, [
            (0, 'none'), *running(20, 21, 22, 23, 24), (25, 'cancelled')])
        run.run()
        self.assertEqual([21], run.times('abort'))
        self.assertEqual([], run.times('postcopy'))
        run.recover_method.assert_called_once_with(
            self.context, inst, 'dest-host',
            run.recover_method.call_args[0][3], migration_status='cancelled')
        event = self.events(inst)[lmcaps_events.TIMEOUT_ACTION]
        self.assertIn('completion_timeout 20s (flavor)', event.details or '')

    def test_request_beats_flavor_and_a_stale_request_is_ignored(self):
        inst = self.make_instance(extra_specs={
            'lmcaps:completion_timeout': '20',
            'lmcaps:timeout_action': 'abort'})
        nova_request.stash(inst, self.context.request_id, {
            'completion_timeout': 50, 'timeout_action': 'abort'})
        run = base.MonitorRun(self, inst, [
            (0, 'none'), *running(21, 50, 51), (52, 'cancelled')])
        run.run()
        self.assertEqual([51], run.times('abort'))

        nova_request.stash(inst, 'req-another-migration', {
            'completion_timeout': 50})
        run = base.MonitorRun(self, inst, [
            (0, 'none'), *running(21, 22), (23, 'cancelled')])
        run.run()
        self.assertEqual([21], run.times('abort'))


class HostWideDefaultsTest(base.NovaLmcapsTestCase):
    """No per-instance values: nova's own timeout and action, once."""

    LIBVIRT_FLAGS = dict(base.NovaLmcapsTestCase.LIBVIRT_FLAGS,
                         live_migration_completion_timeout=10)

    def test_config_deadline_and_action(self):
        inst = self.make_instance()
        run = base.MonitorRun(self, inst, [
            (0, 'none'), *running(19, 20, 21, 22, 23), (24, 'cancelled')])
        run.run()
        self.assertEqual([21], run.times('abort'))    # 10 s/GiB x 2 GiB
        event = self.events(inst)[lmcaps_events.TIMEOUT_ACTION]
        self.assertIn('(config)', event.details or '')

    def test_per_instance_zero_means_never(self):
        inst = self.make_instance(extra_specs={
            'lmcaps:completion_timeout': '0'})
        run = base.MonitorRun(self, inst, [
            (0, 'none'), *running(21, 100, 5000), (5001, 'completed')])
        run.run()
        self.assertEqual([], run.calls)
        run.post_method.assert_called_once()
