"""The xapi simulator, through the real XenAPI SDK, checked against the reference.

Each test cites the XenAPI reference section it follows (xapi-project/xen-api:
doc/content/xen-api/wire-protocol.md, ocaml/idl/datamodel*.ml).
"""

from __future__ import annotations

import time
import xmlrpc.client

import testtools
import XenAPI

from tests.functional.xenapi.sim import fixture as sim_fixture


class SimTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.sim = self.useFixture(sim_fixture.XapiSim())
        self.session = XenAPI.Session(self.sim.url)
        self.session.login_with_password(self.sim.username,
                                         self.sim.password, '2.0', 'test')
        self.x = self.session.xenapi

    def wait_status(self, task, want, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.x.task.get_status(task)
            if status == want:
                return
            time.sleep(0.05)
        self.fail(f'task still {status}, wanted {want}')

    def raw(self, method, *params):
        """The raw envelope (wire-protocol.md: Success/Failure struct)."""
        proxy = xmlrpc.client.ServerProxy(self.sim.url, allow_none=True)
        return getattr(proxy, method)(*params)

    # wire-protocol.md "XML-RPC": the Success/Failure envelope.
    def test_envelope_success_and_failure(self):
        ok = self.raw('host.get_all', self.session.handle)
        self.assertEqual('Success', ok['Status'])
        self.assertEqual(3, len(ok['Value']))
        bad = self.raw('VM.get_power_state', self.session.handle,
                       'OpaqueRef:nope')
        self.assertEqual({'Status': 'Failure', 'ErrorDescription':
                          ['HANDLE_INVALID', 'VM', 'OpaqueRef:nope']}, bad)
        unknown = self.raw('VM.frobnicate', self.session.handle)
        self.assertEqual(['MESSAGE_METHOD_UNKNOWN', 'VM.frobnicate'],
                         unknown['ErrorDescription'])
        count = self.raw('VM.get_power_state', self.session.handle)
        self.assertEqual('MESSAGE_PARAMETER_COUNT_MISMATCH',
                         count['ErrorDescription'][0])

    # SESSION_AUTHENTICATION_FAILED [uname; msg] (xapi_session.ml).
    def test_bad_credentials(self):
        session = XenAPI.Session(self.sim.url)
        exc = self.assertRaises(XenAPI.Failure, session.login_with_password,
                                'root', 'wrong', '2.0', 'test')
        self.assertEqual('SESSION_AUTHENTICATION_FAILED', exc.details[0])
        self.assertEqual('root', exc.details[1])

    # SESSION_INVALID [handle]: the SDK logs in again and retries.
    def test_session_invalid(self):
        handle = self.session.handle
        reply = self.raw('host.get_all', 'OpaqueRef:stale')
        self.assertEqual(['SESSION_INVALID', 'OpaqueRef:stale'],
                         reply['ErrorDescription'])
        self.sim.control.sim.expire_sessions()
        self.assertEqual(3, len(self.x.host.get_all()))
        self.assertNotEqual(handle, self.session.handle)
        self.x.session.logout()
        reply = self.raw('host.get_all', handle)
        self.assertEqual('SESSION_INVALID', reply['ErrorDescription'][0])

    # datamodel_vm.ml pool_migrate; task status pending -> success;
    # VM.resident_on moves to the destination (pool_migrate_complete).
    def test_pool_migrate_life_cycle(self):
        vm = self.sim.add_vm('vm1', duration=0.6)
        self.assertEqual(self.sim.src_host, self.x.VM.get_resident_on(vm))
        task = self.x.Async.VM.pool_migrate(vm, self.sim.dst_host,
                                            {'live': 'true'})
        self.assertTrue(task.startswith('OpaqueRef:'))
        rec = self.x.task.get_record(task)
        self.assertEqual('pending', rec['status'])
        self.assertEqual(['cancel'], rec['allowed_operations'])
        self.assertGreaterEqual(rec['progress'], 0.0)
        self.assertLess(rec['progress'], 1.0)
        self.assertEqual([], rec['error_info'])
        self.wait_status(task, 'success')
        rec = self.x.task.get_record(task)
        self.assertEqual(1.0, rec['progress'])
        self.assertEqual([], rec['allowed_operations'])
        self.assertEqual(self.sim.dst_host, self.x.VM.get_resident_on(vm))
        self.assertEqual('Running', self.x.VM.get_power_state(vm))
        # task.cancel declares OPERATION_NOT_ALLOWED [reason].
        exc = self.assertRaises(XenAPI.Failure, self.x.task.cancel, task)
        self.assertEqual('OPERATION_NOT_ALLOWED', exc.details[0])

    # The synchronous VM.pool_migrate returns void once migrated.
    def test_pool_migrate_sync(self):
        vm = self.sim.add_vm('vm1', duration=0.2)
        self.assertEqual('', self.x.VM.pool_migrate(vm, self.sim.dst_host,
                                                    {'live': 'true'}))
        self.assertEqual(self.sim.dst_host, self.x.VM.get_resident_on(vm))

    # task.destroy: refused while pending, then the ref is HANDLE_INVALID.
    def test_task_destroy(self):
        vm = self.sim.add_vm('vm1', duration=0.2)
        task = self.x.Async.VM.pool_migrate(vm, self.sim.dst_host, {})
        exc = self.assertRaises(XenAPI.Failure, self.x.task.destroy, task)
        self.assertEqual('OPERATION_NOT_ALLOWED', exc.details[0])
        self.wait_status(task, 'success')
        self.x.task.destroy(task)
        exc = self.assertRaises(XenAPI.Failure, self.x.task.get_record, task)
        self.assertEqual(['HANDLE_INVALID', 'task', task], exc.details)

    # task.cancel; TaskHelper.failed: status cancelled, error_info
    # [TASK_CANCELLED, task], progress 1, allowed_operations [].
    def test_cancel_life_cycle(self):
        vm = self.sim.add_vm('vm1', duration=0, cancel_delay=0.3)
        task = self.x.Async.VM.pool_migrate(vm, self.sim.dst_host,
                                            {'live': 'true'})
        self.x.task.cancel(task)
        rec = self.x.task.get_record(task)
        self.assertEqual('pending', rec['status'])
        self.assertEqual(['cancel'], list(rec['current_operations'].values()))
        self.assertEqual([], rec['allowed_operations'])
        self.wait_status(task, 'cancelled')
        self.assertEqual(['TASK_CANCELLED', task],
                         self.x.task.get_error_info(task))
        self.assertEqual(self.sim.src_host, self.x.VM.get_resident_on(vm))
        self.assertEqual('Running', self.x.VM.get_power_state(vm))

    # xenopsd prohibit_cancellation: 'cancel' leaves allowed_operations
    # before the final copy, and a cancel then is ignored.
    def test_cancel_ignored_after_cancellable_window(self):
        vm = self.sim.add_vm('vm1', duration=1.0, cancellable_until=0.2)
        task = self.x.Async.VM.pool_migrate(vm, self.sim.dst_host, {})
        deadline = time.monotonic() + 5
        while 'cancel' in self.x.task.get_allowed_operations(task):
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.05)
        self.x.task.cancel(task)
        self.wait_status(task, 'success')
        self.assertEqual(self.sim.dst_host, self.x.VM.get_resident_on(vm))

    # VM_MIGRATE_FAILED [vm; source; destination; msg]: status failure.
    def test_failure(self):
        vm = self.sim.add_vm('vm1', duration=0)
        task = self.x.Async.VM.pool_migrate(vm, self.sim.dst_host, {})
        self.sim.control.sim.fail_task(task, 'link down')
        self.assertEqual('failure', self.x.task.get_status(task))
        self.assertEqual(['VM_MIGRATE_FAILED', vm, self.sim.src_host,
                          self.sim.dst_host, 'link down'],
                         self.x.task.get_error_info(task))
        self.assertEqual(self.sim.src_host, self.x.VM.get_resident_on(vm))

    # OTHER_OPERATION_IN_PROGRESS; VM_BAD_POWER_STATE; HANDLE_INVALID.
    def test_start_errors(self):
        vm = self.sim.add_vm('vm1', duration=0)
        self.x.Async.VM.pool_migrate(vm, self.sim.dst_host, {})
        exc = self.assertRaises(XenAPI.Failure, self.x.Async.VM.pool_migrate,
                                vm, self.sim.dst_host, {})
        self.assertEqual('OTHER_OPERATION_IN_PROGRESS', exc.details[0])
        self.sim.control.sim.set_power_state(vm, 'Halted')
        vm2 = self.sim.add_vm('vm2')
        self.sim.control.sim.set_power_state(vm2, 'Halted')
        exc = self.assertRaises(XenAPI.Failure, self.x.Async.VM.pool_migrate,
                                vm2, self.sim.dst_host, {})
        self.assertEqual(['VM_BAD_POWER_STATE', vm2, 'running', 'halted'],
                         exc.details)
        exc = self.assertRaises(XenAPI.Failure, self.x.task.get_status,
                                'OpaqueRef:gone')
        self.assertEqual(['HANDLE_INVALID', 'task', 'OpaqueRef:gone'],
                         exc.details)

    # Host.migrate_receive token -> VM.migrate_send; result = new VM ref.
    def test_cross_pool(self):
        vm = self.sim.add_vm('vm1', duration=0.3)
        token = self.x.host.migrate_receive(self.sim.remote_host,
                                            'OpaqueRef:network0', {})
        task = self.x.Async.VM.migrate_send(vm, token, True, {}, {}, {})
        self.wait_status(task, 'success')
        result = self.x.task.get_result(task)
        new_vm = result.replace('<value>', '').replace('</value>', '')
        self.assertEqual(self.sim.remote_host,
                         self.x.VM.get_resident_on(new_vm))
        exc = self.assertRaises(XenAPI.Failure, self.x.VM.get_record, vm)
        self.assertEqual('HANDLE_INVALID', exc.details[0])

    # event.from(classes, token, timeout) -> {events, token,
    # valid_ref_counts}; event fields id/class/operation/ref/snapshot.
    def test_event_from(self):
        vm = self.sim.add_vm('vm1', duration=0.4)
        first = getattr(self.x.event, 'from')(['task'], '', 0.0)
        self.assertEqual([], first['events'])
        task = self.x.Async.VM.pool_migrate(vm, self.sim.dst_host, {})
        batch = getattr(self.x.event, 'from')(['task'], first['token'], 1.0)
        self.assertEqual(['add'], [e['operation'] for e in batch['events']])
        event = batch['events'][0]
        self.assertEqual(('task', task), (event['class'], event['ref']))
        self.assertEqual('pending', event['snapshot']['status'])
        self.assertEqual({'task': 1}, batch['valid_ref_counts'])
        token, status = batch['token'], 'pending'
        deadline = time.monotonic() + 5
        while status != 'success' and time.monotonic() < deadline:
            batch = getattr(self.x.event, 'from')([f'task/{task}'], token, 1.0)
            token = batch['token']
            for e in batch['events']:
                status = e['snapshot']['status']
        self.assertEqual('success', status)
