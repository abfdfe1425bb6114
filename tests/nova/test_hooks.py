"""enable() / disable(), the console script, and the import boundary."""

from __future__ import annotations

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
