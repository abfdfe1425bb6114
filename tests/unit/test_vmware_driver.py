"""Unit tests of the vmware driver's decisions, with a scripted vCenter.

They test lmcaps's own logic (task states to phases, when CancelTask is
sent, how faults read); that the driver works over oslo.vmware is shown on
vcsim in tests/functional/vmware.
"""

import types

import ddt

from lmcaps import capabilities as caps
from lmcaps import exception
from lmcaps.drivers import base
from lmcaps.drivers import vmware
from lmcaps.drivers.vmware import session as vsession
from tests.unit import base as test_base


class _Fault(Exception):
    def __init__(self, *faults):
        super().__init__('scripted fault')
        self.fault_list = list(faults)


class _Ref:
    def __init__(self, value, kind=''):
        self.value, self._type = value, kind


class _Conn:
    """Answers the driver's calls from a script; records CancelTask."""

    where = 'https://vc:443'

    def __init__(self, info=None, vm_props=None, cancel_error=None):
        self.info = info
        self.vm_props = vm_props or {}
        self.cancel_error = cancel_error
        self.calls = []

    def moref(self, value, kind):
        return _Ref(value, kind)

    def prop(self, ref, name):
        if isinstance(self.info, Exception):
            raise self.info
        return self.info

    def props(self, ref, names):
        if isinstance(self.vm_props, Exception):
            raise self.vm_props
        return self.vm_props

    def call(self, method, ref, **kw):
        self.calls.append(method)
        if self.cancel_error is not None:
            raise self.cancel_error

    def error(self, what, exc):
        return exception.DriverError(driver='vmware', reason=f'{what}: {exc}')


def _info(state, cancelled=False, cancelable=True, progress=None,
          fault=None, message=''):
    error = None
    if fault is not None:
        error = types.SimpleNamespace(fault=fault(), localizedMessage=message)
    return types.SimpleNamespace(state=state, cancelled=cancelled,
                                 cancelable=cancelable, progress=progress,
                                 error=error)


class RequestCanceled:
    pass


class Text:
    pass


@ddt.ddt
class VMwareDriverTest(test_base.ConfTestCase):

    def driver(self, conn):
        driver = vmware.VMwareDriver(self.conf)
        driver._conn = conn
        return driver

    def migration(self):
        spec = base.MigrationSpec(instance='vm-1', destination='host-2')
        return base.Migration(spec=spec, data_gib=2.0, reference='task-9',
                              backend={'cancel_sent': False},
                              extra={'vm': 'vm-1', 'source_host': 'host-1',
                                     'dest_host': 'host-2'})

    def test_declaration(self):
        decl = vmware.VMwareDriver.declare()
        self.assertIs(caps.Support.PARTIAL, decl.support(caps.Operation.ABORT))
        self.assertIn('cancelable', decl[caps.Operation.ABORT].condition)
        for op in (caps.Operation.FORCE_COMPLETE_POSTCOPY,
                   caps.Operation.FORCE_COMPLETE_PAUSE):
            self.assertIs(caps.Support.MISSING, decl.support(op))
            self.assertIn('vSphere has no call', decl[op].notes)
        self.assertIs(caps.Support.COMPLETE,
                      decl.support(caps.Operation.PER_INSTANCE_TIMEOUT))

    def test_password_option_is_secret(self):
        vmware.VMwareDriver(self.conf)
        opt = self.conf._get_opt_info('host_password',
                                      'lmcaps_vmware')['opt']
        self.assertTrue(opt.secret)
        self.assertFalse(self.conf.lmcaps_vmware.insecure)

    @ddt.data(
        ('queued', False, None, None, base.Phase.PREPARING, None),
        ('running', False, 40, None, base.Phase.PRECOPY, 0.4),
        ('running', True, 40, None, base.Phase.CANCELLING, 0.4),
        ('success', True, 100, None, base.Phase.COMPLETED, 1.0),
        ('error', True, 50, Text, base.Phase.CANCELLED, 0.5),
        ('error', False, 50, RequestCanceled, base.Phase.CANCELLED, 0.5),
        ('error', False, 50, Text, base.Phase.FAILED, 0.5),
    )
    @ddt.unpack
    def test_task_info_to_phase(self, state, cancelled, pct, fault, phase,
                                fraction):
        driver = self.driver(_Conn(_info(state, cancelled, progress=pct,
                                         fault=fault, message='why')))
        progress = driver._progress(self.migration())
        self.assertEqual((phase, fraction), (progress.phase,
                                             progress.fraction))
        self.assertEqual([], progress.problems())

    def test_task_gone(self):
        driver = self.driver(_Conn(_Fault('ManagedObjectNotFound')))
        self.assertRaises(exception.MigrationGone, driver._progress,
                          self.migration())

    def test_abort_sends_cancel_once(self):
        conn = _Conn(_info('running'))
        driver = self.driver(conn)
        migration = self.migration()
        driver._abort(migration)
        driver._abort(migration)
        self.assertEqual(['CancelTask'], conn.calls)

    def test_abort_refused_when_not_cancelable(self):
        conn = _Conn(_info('running', cancelable=False))
        exc = self.assertRaises(exception.OperationRefused,
                                self.driver(conn)._abort, self.migration())
        self.assertIn('cancelable = false', str(exc))
        self.assertEqual([], conn.calls)

    def test_abort_of_a_completed_task_sends_nothing(self):
        conn = _Conn(_info('success'))
        self.driver(conn)._abort(self.migration())
        self.assertEqual([], conn.calls)

    def test_abort_of_a_failed_task_is_refused(self):
        conn = _Conn(_info('error', fault=Text))
        exc = self.assertRaises(exception.OperationRefused,
                                self.driver(conn)._abort, self.migration())
        self.assertIn('already ended (error)', str(exc))
        self.assertEqual([], conn.calls)

    def test_cancel_racing_completion_is_not_an_error(self):
        conn = _Conn(_info('running'))
        driver = self.driver(conn)

        def cancel(method, ref, **kw):
            conn.calls.append(method)
            conn.info = _info('success')
            raise _Fault('InvalidState')
        conn.call = cancel
        driver._abort(self.migration())
        self.assertEqual(['CancelTask'], conn.calls)

    def test_cancel_racing_a_failure_is_refused(self):
        conn = _Conn(_info('running'))
        driver = self.driver(conn)

        def cancel(method, ref, **kw):
            conn.calls.append(method)
            conn.info = _info('error', fault=Text)
            raise _Fault('InvalidState')
        conn.call = cancel
        self.assertRaises(exception.OperationRefused, driver._abort,
                          self.migration())

    def test_cancel_not_supported_is_refused(self):
        conn = _Conn(_info('running'), cancel_error=_Fault('NotSupported'))
        self.assertRaises(exception.OperationRefused,
                          self.driver(conn)._abort, self.migration())

    def test_other_cancel_fault_is_a_driver_error(self):
        conn = _Conn(_info('running'), cancel_error=_Fault('NoPermission'))
        self.assertRaises(exception.DriverError, self.driver(conn)._abort,
                          self.migration())

    @ddt.data(
        ({'runtime.host': _Ref('host-1'), 'runtime.powerState': 'poweredOn'},
         base.GuestHost.SOURCE, base.RunState.RUNNING),
        ({'runtime.host': _Ref('host-2'), 'runtime.powerState': 'poweredOn'},
         base.GuestHost.DESTINATION, base.RunState.RUNNING),
        ({'runtime.host': _Ref('host-2'),
          'runtime.powerState': 'poweredOff'},
         base.GuestHost.DESTINATION, base.RunState.SHUT_OFF),
        ({'runtime.host': _Ref('host-7'), 'runtime.powerState': 'poweredOn'},
         base.GuestHost.UNKNOWN, base.RunState.RUNNING),
        (_Fault('ManagedObjectNotFound'), base.GuestHost.NOWHERE,
         base.RunState.UNKNOWN),
        (_Fault('Text'), base.GuestHost.UNKNOWN, base.RunState.UNKNOWN),
    )
    @ddt.unpack
    def test_locate(self, props, host, state):
        driver = self.driver(_Conn(vm_props=props))
        where = driver._locate(self.migration())
        self.assertEqual((host, state), where.pair)

    def test_force_complete_missing_touches_nothing(self):
        conn = _Conn(_info('running'))
        driver = self.driver(conn)
        for mode in caps.ForceCompleteMode:
            self.assertRaises(exception.UnsupportedOperation,
                              driver.force_complete, self.migration(), mode)
        self.assertEqual([], conn.calls)


class SessionHelpersTest(test_base.ConfTestCase):

    def test_fault_names(self):
        self.assertEqual(['InvalidState'],
                         vsession.fault_names(_Fault('InvalidState')))
        self.assertEqual([], vsession.fault_names(ValueError('x')))

    def test_errors_are_one_line_without_the_password(self):
        conn = object.__new__(vsession.Connection)
        conn.driver, conn.where, conn._password = 'vmware', 'https://vc:443', 'S3cret!'
        conn.vexc = types.SimpleNamespace(VimConnectionException=OSError)
        err = conn.error('login', ValueError('bad S3cret! here\nsecond line'))
        self.assertNotIn('S3cret!', str(err))
        self.assertEqual(1, len(str(err).splitlines()))
        tls = conn.error('connect', OSError(
            'SSLError: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify '
            'failed'))
        self.assertIn('TLS certificate verification failed', str(tls))
        self.assertIn('ca_file', str(tls))
        lost = conn.error('read task', OSError('Connection refused'))
        self.assertIn('vCenter unreachable', str(lost))


class _Session:
    """An embedding host's logged-in session; records what is asked of it."""

    vim = object()

    def __init__(self):
        self.calls = []

    def invoke_api(self, module, method, *args, **kwargs):
        self.calls.append(method)
        return _Ref('host-7')

    def logout(self):
        self.calls.append('logout')


class AdoptedSessionTest(test_base.ConfTestCase):

    def test_adopted_session_is_used_and_never_logged_out(self):
        session = _Session()
        driver = vmware.VMwareDriver(self.conf)
        driver.adopt(session, 'vCenter vc:443')
        self.assertEqual('vCenter vc:443', driver.conn.where)
        self.assertEqual('host-7', driver.conn.prop(
            driver.conn.moref('vm-1', 'VirtualMachine'),
            'runtime.host').value)
        driver.close()
        self.assertEqual(['get_object_property'], session.calls)

    def test_track_gives_the_handle_of_a_started_task(self):
        driver = vmware.VMwareDriver(self.conf)
        spec = base.MigrationSpec(instance='uuid-1', destination='host-2')
        migration = driver.track(spec, 'task-9', 'vm-1', 'host-1', 'host-2',
                                 data_gib=4.0)
        self.assertEqual(('task-9', 4.0, {'cancel_sent': False}),
                         (migration.reference, migration.data_gib,
                          migration.backend))
        self.assertEqual({'vm': 'vm-1', 'source_host': 'host-1',
                          'dest_host': 'host-2'}, dict(migration.extra))
