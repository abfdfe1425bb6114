"""enable() / disable(), the console script, and the import boundary."""

from __future__ import annotations

import inspect
import subprocess
import sys
from unittest import mock

import testtools
from nova.virt.libvirt import driver as nova_driver
from nova.virt.libvirt import migration as nova_migration

from lmcaps.nova import hooks


def _originals() -> dict[str, object]:
    return {name: vars(owner)[name] for owner, name, _ in hooks.PATCHES}


class HooksTest(testtools.TestCase):
    def setUp(self) -> None:
        super().setUp()
        self.assertFalse(hooks.enabled())
        self.addCleanup(hooks.disable)

    def test_enable_twice_disable_twice_restores_nova(self) -> None:
        before = _originals()
        hooks.enable()
        wrapped = _originals()
        hooks.enable()
        self.assertEqual(wrapped, _originals())
        for name, func in wrapped.items():
            self.assertIsNot(before[name], func, name)
            self.assertIs(before[name], func.__wrapped__, name)
        hooks.disable()
        hooks.disable()
        self.assertEqual(before, _originals())
        self.assertFalse(hooks.enabled())

    def test_outside_a_monitor_nova_answers(self) -> None:
        hooks.enable()
        inst = mock.Mock(uuid='no-such-migration')
        should = nova_migration.should_trigger_timeout_action
        self.assertTrue(should(inst, 11, 10, 'running'))
        self.assertTrue(should(inst, 12, 10, 'running'))   # no latch here
        self.assertFalse(should(inst, 11, 0, 'running'))
        self.assertFalse(should(inst, 11, 10, 'running (post-copy)'))

    def test_registers_the_options_on_the_given_conf(self) -> None:
        from oslo_config import cfg
        conf = cfg.ConfigOpts()
        conf.register_opts([cfg.StrOpt('host', default='h')])
        hooks.enable(conf)
        self.assertEqual('auto', conf.lmcaps.force_complete_mode)
        self.assertFalse(conf.lmcaps_nova.instance_metadata)

    def test_patched_names_exist_in_nova(self) -> None:
        for owner, name, _ in hooks.PATCHES:
            self.assertTrue(callable(vars(owner)[name]), name)
        owners = [owner for owner, _, _ in hooks.PATCHES]
        self.assertIn(nova_driver.LibvirtDriver, owners)
        # nova's VMware driver imports here (nova[vmware]): its hooks too.
        self.assertIsNone(hooks.VMWARE_MISSING)
        self.assertEqual(
            [('VMwareVCDriver', 'check_can_live_migrate_source'),
             ('VMwareVCDriver', 'live_migration'),
             ('VMwareAPISession', '_call_method')],
            [(owner.__name__, name) for owner, name, _ in hooks.PATCHES
             if 'vmwareapi' in getattr(owner, '__module__', '')])


class _Nova:
    """Stands in for a nova class whose methods changed."""

    def check_can_live_migrate_source(self, context, instance,
                                      dest_check_data, block_device_info=None,
                                      new_arg=None):
        pass

    def update_provider_tree(self, provider_tree, nodename,
                             allocations=None):
        pass


class SignatureDriftTest(testtools.TestCase):
    def test_nova_34_matches_what_the_wrappers_expect(self) -> None:
        self.assertEqual([], hooks.signature_drift())
        self.assertEqual({(owner, name) for owner, name, _ in hooks.PATCHES},
                         set(hooks.SIGNATURES))
        # The pinned signatures are nova's, read now.
        for (owner, name), expected in hooks.SIGNATURES.items():
            self.assertEqual(expected,
                             str(inspect.signature(vars(owner)[name])), name)

    def test_also_while_enabled(self) -> None:
        self.addCleanup(hooks.disable)
        hooks.enable()
        self.assertEqual([], hooks.signature_drift())

    def test_a_changed_signature_is_reported(self) -> None:
        patches = ((_Nova, 'check_can_live_migrate_source',
                    hooks._check_source),)
        expected = hooks.SIGNATURES[(nova_driver.LibvirtDriver,
                                     'check_can_live_migrate_source')]
        [problem] = hooks.signature_drift(
            patches, {(_Nova, 'check_can_live_migrate_source'): expected})
        self.assertIn('_Nova.check_can_live_migrate_source: nova has (self, '
                      'context, instance, dest_check_data, '
                      'block_device_info=None, new_arg=None), lmcaps expects',
                      problem)

    def test_a_wrapper_that_cannot_take_the_arguments_is_reported(self) -> None:
        # nova's signature as pinned, but a wrapper that drops a parameter.
        def narrow(original, conf):
            def update_provider_tree(self, provider_tree, nodename):
                pass
            return update_provider_tree
        sig = '(self, provider_tree, nodename, allocations=None)'
        problems = hooks.signature_drift(
            ((_Nova, 'update_provider_tree', narrow),),
            {(_Nova, 'update_provider_tree'): sig})
        self.assertEqual(2, len(problems), problems)
        self.assertIn('the wrapper does not take the arguments by position',
                      problems[0])
        self.assertIn('by name', problems[1])

    def test_a_missing_method_or_pin_is_reported(self) -> None:
        self.assertEqual(
            ['_Nova.live_migration: missing in nova'],
            hooks.signature_drift(((_Nova, 'live_migration',
                                    hooks._vmware_live_migration),),
                                  {(_Nova, 'live_migration'): '()'}))
        self.assertEqual(
            ['_Nova.update_provider_tree: no expected signature in '
             'SIGNATURES'],
            hooks.signature_drift(((_Nova, 'update_provider_tree',
                                    hooks._provider_tree),), {}))


class CmdTest(testtools.TestCase):
    def test_main_enables_then_runs_nova_compute(self) -> None:
        # In a fresh interpreter, as the console script starts: nova.cmd
        # must monkey-patch (threading backend) before anything imports
        # eventlet, and the hooks must be in place when nova's main runs.
        code = (
            'from unittest import mock\n'
            'from lmcaps.nova import cmd\n'
            'seen = []\n'
            'def fake_main():\n'
            '    from lmcaps.nova import hooks\n'
            '    seen.append(hooks.enabled())\n'
            'with mock.patch("nova.cmd.compute.main", fake_main):\n'
            '    cmd.main()\n'
            'print("SEEN", seen)\n')
        proc = subprocess.run([sys.executable, '-c', code],
                              capture_output=True, text=True, timeout=120)
        self.assertEqual(0, proc.returncode, proc.stderr[-3000:])
        self.assertIn('SEEN [True]', proc.stdout)


class ImportBoundaryTest(testtools.TestCase):
    def test_lmcaps_core_never_imports_nova(self) -> None:
        code = ('import sys, lmcaps, lmcaps.request, lmcaps.policy, '
                'lmcaps.checks, lmcaps.events, lmcaps.drivers, lmcaps.nova; '
                "bad = sorted(m for m in sys.modules if m == 'nova' "
                "or m.startswith('nova.')); print(bad); "
                'sys.exit(1 if bad else 0)')
        proc = subprocess.run([sys.executable, '-c', code],
                              capture_output=True, text=True, timeout=120)
        self.assertEqual(0, proc.returncode, proc.stdout + proc.stderr)
