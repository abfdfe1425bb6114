"""Nothing lmcaps does puts an instance into ERROR: every exception path.

Each place lmcaps code can raise in the source pre-check
(``ComputeManager.check_can_live_migrate_source`` with the hooks) ends as
``MigrationPreCheckError`` — the one error for which nova's conductor keeps
the instance ACTIVE (``test_precheck`` runs the conductor) — or, for
lmcaps's own failures with ``[lmcaps_nova] precheck_fail_open``, as a
logged pass with an Error event.  Each place it can raise at the start of
the monitor leaves the migration to nova's host-wide values.
"""

from __future__ import annotations

from unittest import mock

import ddt
import nova.conf
from nova import exception
from nova import objects
from nova.tests.fixtures import libvirt as fakelibvirt

from lmcaps import checks as lmcaps_checks
from lmcaps import events as lmcaps_events
from lmcaps.checks import base as checks_base
from lmcaps.nova import carry
from lmcaps.nova import events as nova_events
from lmcaps.nova import request as nova_request
from tests.nova import base

PASSING = {'lmcaps:completion_timeout': '120',
           'lmcaps:timeout_action': 'abort'}
REFUSED = {'lmcaps:completion_timeout': '60',
           'lmcaps:timeout_action': 'force_complete',
           'lmcaps:force_complete_mode': 'postcopy'}


class Crashing(checks_base.PreCheck):
    name = 'crashing'

    def check(self, ctx: checks_base.CheckContext) -> checks_base.CheckResult:
        raise RuntimeError('plugin bug')


def _libvirt_down(*args: object, **kwargs: object) -> None:
    raise fakelibvirt.make_libvirtError(
        fakelibvirt.libvirtError, 'connection lost',
        error_code=fakelibvirt.VIR_ERR_INTERNAL_ERROR)


#: lmcaps's own failures: (name, patch target, side effect, reason part).
CRASHES = [
    ('check_not_installed', None, None,
     "lmcaps pre-check error: CheckNotFound: Unknown pre-check "
     "'no_such_check'"),
    ('declaration', 'lmcaps.nova.declaration.host_declaration',
     _libvirt_down, 'lmcaps pre-check error: libvirtError: connection lost'),
    ('data_size', 'nova.virt.libvirt.driver.LibvirtDriver.'
     '_live_migration_data_gb', RuntimeError('no flavor'),
     'lmcaps pre-check error: RuntimeError: no flavor'),
    ('resolution', 'lmcaps.nova.policy.resolve_instance',
     RuntimeError('bug'), 'lmcaps pre-check error: RuntimeError: bug'),
    ('policy', 'lmcaps.policy.resolve', ValueError('bad policy'),
     'lmcaps pre-check error: ValueError: bad policy'),
    ('check_runner', 'lmcaps.nova.precheck.runner', TypeError('no runner'),
     'lmcaps pre-check error: TypeError: no runner'),
]


@ddt.ddt
class PreCheckFailuresTest(base.PreCheckTestCase):
    """Post-copy is not permitted on this source."""

    LIBVIRT_FLAGS = dict(base.NovaLmcapsTestCase.LIBVIRT_FLAGS,
                         live_migration_permit_post_copy=False)

    def setUp(self) -> None:
        super().setUp()
        self.addCleanup(carry.forget_all)

    def assert_refused(self, inst: objects.Instance, *texts: str) -> str:
        exc = self.assertRaises(exception.MigrationPreCheckError,
                                self.check, inst)
        for text in texts:
            self.assertIn(text, str(exc))
        self.assertEqual('active', self.reloaded(inst).vm_state)
        return str(exc)

    def crash(self, target: str | None, effect: object) -> None:
        if target is None:
            self.flags(enabled_checks=['no_such_check'], group='lmcaps')
            return
        patcher = mock.patch(target, side_effect=effect)
        patcher.start()
        self.addCleanup(patcher.stop)

    @ddt.idata(CRASHES)
    @ddt.unpack
    def test_lmcaps_failure_is_a_precheck_error(self, name, target, effect,
                                                reason):
        inst = self.make_instance(extra_specs=PASSING)
        self.crash(target, effect)
        self.assert_refused(inst, reason)
        [ours] = self.named(inst, lmcaps_events.PRECHECK)
        self.assertEqual('Error', ours.result)
        self.assertIn(reason, ours.details)
        self.assertIn('Traceback (most recent call last)', ours.traceback)

    @ddt.idata(CRASHES)
    @ddt.unpack
    def test_fail_open_passes_with_an_event(self, name, target, effect,
                                            reason):
        self.flags(precheck_fail_open=True, group='lmcaps_nova')
        inst = self.make_instance(extra_specs=PASSING)
        self.crash(target, effect)
        self.assertIsInstance(self.check(inst), objects.LibvirtLiveMigrateData)
        [ours] = self.named(inst, lmcaps_events.PRECHECK)
        self.assertEqual('Error', ours.result)
        self.assertTrue(ours.details.startswith(
            "allowed by precheck_fail_open on nova's host-wide values: "
            'lmcaps pre-check error: '), ours.details)
        self.assertLessEqual(len(ours.details), 200)
        self.assertIn(reason, ours.traceback)
        # The monitor then runs on nova's host-wide values.
        self.assertEqual({}, dict(carry.recall(self.context, inst).picked))

    def test_check_plugin_crash_refuses(self):
        inst = self.make_instance(extra_specs=PASSING)
        crashing = lmcaps_checks.PreCheckRunner(
            nova.conf.CONF, checks=[Crashing(nova.conf.CONF)])
        with mock.patch('lmcaps.nova.precheck.runner', return_value=crashing):
            self.assert_refused(
                inst, 'refused by 1 of 1 lmcaps pre-checks: crashing. '
                'crashing: check crashed: RuntimeError: plugin bug')

    def test_fail_open_never_passes_a_refusal(self):
        self.flags(precheck_fail_open=True, group='lmcaps_nova')
        inst = self.make_instance(extra_specs=REFUSED)
        self.assert_refused(inst, 'refused by 1 of 3 lmcaps pre-checks: '
                                  'post_copy')

    @ddt.data('{"request_id": ["x"]}',
              '{"request_id": ["x"], "values": {}}',
              '{"request_id": "r", "values": []}',
              'not json', '[1]')
    def test_malformed_carrier_refuses(self, text):
        inst = self.make_instance(
            system_metadata={nova_request.SYSMETA_KEY: text})
        self.assert_refused(inst, 'system metadata lmcaps_request is')
        [ours] = self.named(inst, lmcaps_events.PRECHECK)
        self.assertEqual('Error', ours.result)

    def test_carrier_with_a_bad_value_refuses(self):
        inst = self.make_instance(system_metadata={
            nova_request.SYSMETA_KEY:
                '{"request_id": "%s", "values": {"completion_timeout": -5}}'
                % self.context.request_id})
        self.assert_refused(inst, 'completion_timeout')

    def test_bad_flavor_spec_refuses(self):
        inst = self.make_instance(
            extra_specs={'lmcaps:timeout_action': 'explode'})
        self.assert_refused(inst, 'flavor keys lmcaps:timeout_action')

    def test_event_store_failure_keeps_the_refusal_and_its_reasons(self):
        inst = self.make_instance(extra_specs=REFUSED)
        with mock.patch.object(nova_events.NovaEventStore, 'event_start',
                               side_effect=RuntimeError('db gone')):
            self.assert_refused(
                inst, 'post_copy: force_complete_mode postcopy (from flavor) '
                      'is not permitted')
        self.assertEqual([], self.named(inst, lmcaps_events.PRECHECK))

    def test_event_store_failure_keeps_a_pass(self):
        inst = self.make_instance(extra_specs=PASSING)
        with mock.patch.object(nova_events.NovaEventStore, 'record',
                               side_effect=RuntimeError('db gone')), \
                mock.patch.object(nova_events.NovaEventStore, 'event_finish',
                                  side_effect=RuntimeError('db gone')):
            self.assertIsInstance(self.check(inst), objects.LibvirtLiveMigrateData)

    def test_carry_write_failure_keeps_a_pass(self):
        inst = self.make_instance(extra_specs=PASSING)
        with mock.patch.object(objects.Instance, 'save',
                               side_effect=RuntimeError('conductor gone')):
            self.assertIsInstance(self.check(inst), objects.LibvirtLiveMigrateData)
        # The in-process record still holds.
        self.assertEqual({'completion_timeout': (120, 'flavor'),
                          'timeout_action': ('abort', 'flavor')},
                         dict(carry.recall(self.context, inst).picked))


class MonitorBeginFailuresTest(base.NovaLmcapsTestCase):
    """Each failure at the monitor's start: nova's host-wide values (10 s
    per GiB x 2 GiB = 20 s, abort), never an exception out of the hook."""

    LIBVIRT_FLAGS = dict(base.NovaLmcapsTestCase.LIBVIRT_FLAGS,
                         live_migration_completion_timeout=10)

    def setUp(self) -> None:
        super().setUp()
        self.addCleanup(carry.forget_all)

    def run_monitor(self, inst: objects.Instance) -> base.MonitorRun:
        run = base.MonitorRun(self, inst, [
            (0, 'none'), (20, 'running'), (21, 'running'), (22, 'running'),
            (23, 'cancelled')])
        run.run()
        return run

    def test_for_monitor_crash(self):
        inst = self.make_instance(extra_specs={
            'lmcaps:completion_timeout': '5'})
        with mock.patch.object(carry, 'for_monitor',
                               side_effect=RuntimeError('bug')):
            run = self.run_monitor(inst)
        self.assertEqual([21], run.times('abort'))

    def test_database_read_failure_resolves_again(self):
        inst = self.make_instance(extra_specs={
            'lmcaps:completion_timeout': '21'})
        with mock.patch.object(objects.Instance, 'get_by_uuid',
                               side_effect=RuntimeError('conductor gone')):
            run = self.run_monitor(inst)
        self.assertEqual([22], run.times('abort'))    # the flavor's 21 s

    def test_bad_flavor_value_runs_on_host_wide_values(self):
        inst = self.make_instance(extra_specs={
            'lmcaps:completion_timeout': 'soon'})
        run = self.run_monitor(inst)
        self.assertEqual([21], run.times('abort'))

    def test_malformed_record_resolves_again(self):
        inst = self.make_instance(
            extra_specs={'lmcaps:completion_timeout': '21'},
            system_metadata={carry.SYSMETA_KEY: '{"request_id": ["x"]}'})
        run = self.run_monitor(inst)
        self.assertEqual([22], run.times('abort'))
