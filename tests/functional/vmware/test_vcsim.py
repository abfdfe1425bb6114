"""vcsim and its lmcaps extensions, through oslo.vmware (not the driver).

What the simulator does is checked against the vSphere API reference:
RelocateVM_Task runs asynchronously with advancing TaskInfo.progress; a
CancelTask on a cancelable task ends it ``error`` / RequestCanceled with the
VM still on its host; CancelTask on a finished task is InvalidState, on a
not-cancelable one NotSupported; oslo.vmware's recursive property-collector
traversal (vim_util.get_objects) terminates and finds every object.
"""

from __future__ import annotations

import logging
import time

import fixtures
import testtools

from tests import backend as test_backend
from tests.functional.vmware import vcsim


class VcsimTestCase(testtools.TestCase):

    cancelable = True

    def setUp(self):
        super().setUp()
        self.useFixture(fixtures.FakeLogger(level=logging.INFO))
        ok, reason = vcsim.available()
        test_backend.require(self, ok, f'vcsim: {reason}')
        self.sim = self.useFixture(vcsim.Vcsim(relocate_time=1.0,
                                               cancelable=self.cancelable))
        from oslo_vmware import api
        from oslo_vmware import vim_util
        self.vim_util = vim_util
        self.session = api.VMwareAPISession(
            self.sim.host, vcsim.USERNAME, vcsim.PASSWORD, 0, 0.1,
            scheme='http', port=self.sim.port, wsdl_loc=self.sim.wsdl,
            insecure=False)
        self.addCleanup(self.session.logout)

    def moref(self, value, kind):
        return self.vim_util.get_moref(value, kind)

    def relocate(self, vm, dest):
        spec = self.session.vim.client.factory.create(
            'ns0:VirtualMachineRelocateSpec')
        spec.host = self.moref(dest, 'HostSystem')
        return self.session.invoke_api(
            self.session.vim, 'RelocateVM_Task',
            self.moref(vm, 'VirtualMachine'), spec=spec)

    def info(self, task):
        return self.session.invoke_api(self.vim_util, 'get_object_property',
                                       self.session.vim, task, 'info')

    def host_of(self, vm):
        return self.session.invoke_api(
            self.vim_util, 'get_object_property', self.session.vim,
            self.moref(vm, 'VirtualMachine'), 'runtime.host').value

    def wait_end(self, task, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self.info(task)
            if info.state in ('success', 'error'):
                return info
            time.sleep(0.05)
        self.fail(f'{task.value} still {info.state}')


class TestVcsim(VcsimTestCase):

    def test_get_objects_traversal_terminates(self):
        inv = self.sim.inventory()
        started = time.monotonic()
        result = self.session.invoke_api(
            self.vim_util, 'get_objects', self.session.vim,
            'VirtualMachine', 100, ['name', 'runtime.host'])
        self.assertLess(time.monotonic() - started, 5.0)
        found = {o.obj.value for o in result.objects}
        self.assertEqual({v['ref'] for v in inv['vms']}, found)
        hosts = self.session.invoke_api(
            self.vim_util, 'get_objects', self.session.vim, 'HostSystem',
            100, ['name'])
        self.assertEqual({h['ref'] for h in inv['hosts']},
                         {o.obj.value for o in hosts.objects})

    def test_relocate_runs_async_then_moves_the_vm(self):
        vm, src, dest = self.sim.pick()
        task = self.relocate(vm, dest)
        first = self.info(task)
        self.assertIn(first.state, ('queued', 'running'))
        self.assertEqual(src, self.host_of(vm))
        seen = []
        while True:
            info = self.info(task)
            if info.state != 'running':
                break
            if getattr(info, 'progress', None) is not None:
                seen.append(info.progress)
            time.sleep(0.1)
        self.assertEqual('success', info.state)
        self.assertGreater(len(set(seen)), 2, seen)   # progress advanced
        self.assertEqual(sorted(seen), seen)          # and never went back
        self.assertEqual(dest, self.host_of(vm))
        self.assertEqual(dest, self.sim.vm(vm)['host'])

    def test_cancel_keeps_the_vm_on_its_host(self):
        vm, src, dest = self.sim.pick()
        self.sim.next_relocation(vm, 3.0)
        task = self.relocate(vm, dest)
        time.sleep(0.3)
        self.assertTrue(self.info(task).cancelable)
        self.session.invoke_api(self.session.vim, 'CancelTask', task)
        # "Multiple cancel requests will be treated as a single one".
        info = self.wait_end(task)
        self.assertEqual('error', info.state)
        self.assertTrue(info.cancelled)
        self.assertEqual('The task was canceled by a user.',
                         info.error.localizedMessage)
        time.sleep(3.5)  # past the relocation's own end
        self.assertEqual(src, self.host_of(vm))
        self.assertEqual('poweredOn', self.sim.vm(vm)['power_state'])
        self.assertEqual('error', self.info(task).state)

    def test_cancel_after_completion_is_invalid_state(self):
        from oslo_vmware import exceptions
        vm, _src, dest = self.sim.pick()
        self.sim.next_relocation(vm, 0.2)
        task = self.relocate(vm, dest)
        self.assertEqual('success', self.wait_end(task).state)
        exc = self.assertRaises(exceptions.VimFaultException,
                                self.session.invoke_api, self.session.vim,
                                'CancelTask', task)
        self.assertEqual(['InvalidState'], exc.fault_list)

    def test_slow_cancel_then_cancelled(self):
        vm, src, dest = self.sim.pick()
        self.sim.next_relocation(vm, 0, cancel_delay=1.0)
        task = self.relocate(vm, dest)
        self.session.invoke_api(self.session.vim, 'CancelTask', task)
        info = self.info(task)
        self.assertEqual('running', info.state)
        self.assertTrue(info.cancelled)
        self.assertEqual('error', self.wait_end(task).state)
        self.assertEqual(src, self.host_of(vm))

    def test_completes_during_cancel(self):
        vm, _src, dest = self.sim.pick()
        self.sim.next_relocation(vm, 0, complete_on_cancel=True)
        task = self.relocate(vm, dest)
        self.session.invoke_api(self.session.vim, 'CancelTask', task)
        info = self.wait_end(task)
        self.assertEqual('success', info.state)
        self.assertTrue(info.cancelled)
        self.assertEqual(dest, self.host_of(vm))

    def test_failure_leaves_the_vm(self):
        vm, src, dest = self.sim.pick()
        self.sim.next_relocation(vm, 0)
        task = self.relocate(vm, dest)
        self.sim.fail(task.value)
        info = self.wait_end(task)
        self.assertEqual('error', info.state)
        self.assertFalse(info.cancelled)
        self.assertEqual(src, self.host_of(vm))

    def test_unknown_host_refused_before_a_task(self):
        from oslo_vmware import exceptions
        vm, _src, _dest = self.sim.pick()
        self.assertRaises(exceptions.VimException, self.relocate, vm,
                          'host-999999')

    def test_bad_password_is_invalid_login(self):
        from oslo_vmware import api
        from oslo_vmware import exceptions
        exc = self.assertRaises(
            exceptions.VimFaultException, api.VMwareAPISession,
            self.sim.host, vcsim.USERNAME, 'wrong', 0, 0.1, scheme='http',
            port=self.sim.port, wsdl_loc=self.sim.wsdl, insecure=False)
        self.assertEqual(['InvalidLogin'], exc.fault_list)


class TestVcsimNotCancelable(VcsimTestCase):

    cancelable = False

    def test_cancel_not_supported(self):
        from oslo_vmware import exceptions
        vm, src, dest = self.sim.pick()
        self.sim.next_relocation(vm, 1.0)
        task = self.relocate(vm, dest)
        self.assertFalse(self.info(task).cancelable)
        exc = self.assertRaises(exceptions.VimFaultException,
                                self.session.invoke_api, self.session.vim,
                                'CancelTask', task)
        self.assertEqual(['NotSupported'], exc.fault_list)
        self.assertEqual('success', self.wait_end(task).state)
        self.assertEqual(dest, self.host_of(vm))
