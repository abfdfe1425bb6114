"""The xenapi driver's own logic, with the XenAPI SDK replaced by mocks."""

from __future__ import annotations

import sys
import xmlrpc.client
from unittest import mock

import ddt

from lmcaps import capabilities as caps
from lmcaps import exception
from lmcaps.drivers import base
from lmcaps.drivers import xenapi
from lmcaps.drivers.xenapi import session as session_mod
from tests.unit import base as test_base

SRC, DST = 'OpaqueRef:src', 'OpaqueRef:dst'


class Failure(Exception):
    def __init__(self, details):
        super().__init__(details)
        self.details = details


def _record(status='pending', progress=0.3, allowed=('cancel',),
            current=None, error=()):
    return {'status': status, 'progress': progress,
            'allowed_operations': list(allowed),
            'current_operations': current or {},
            'error_info': list(error), 'result': ''}


@ddt.ddt
class DeclarationTest(test_base.ConfTestCase):

    def test_declaration(self):
        decl = xenapi.XenAPIDriver.declare()
        self.assertIs(caps.Support.PARTIAL, decl.support(caps.Operation.ABORT))
        self.assertIn('allowed_operations',
                      decl[caps.Operation.ABORT].condition)
        for op in (caps.Operation.FORCE_COMPLETE_POSTCOPY,
                   caps.Operation.FORCE_COMPLETE_PAUSE):
            self.assertIs(caps.Support.MISSING, decl.support(op))
            self.assertTrue(decl[op].notes)
        self.assertIs(caps.Support.COMPLETE,
                      decl.support(caps.Operation.PER_INSTANCE_TIMEOUT))

    def test_options(self):
        driver = xenapi.XenAPIDriver(self.conf)
        opts = {o.name: o for o in driver.list_opts()}
        self.assertTrue(opts['password'].secret)
        self.assertFalse(self.conf.lmcaps_xenapi.insecure)
        self.assertIsNone(self.conf.lmcaps_xenapi.ca_file)
        self.assertEqual(0.5, self.conf.lmcaps_xenapi.task_poll_interval)

    @ddt.data(('pending', 0.0, {}, base.Phase.PREPARING),
              ('pending', 0.4, {}, base.Phase.PRECOPY),
              ('pending', 0.4, {'x': 'cancel'}, base.Phase.CANCELLING),
              ('cancelling', 0.4, {}, base.Phase.CANCELLING),
              ('success', 1.0, {}, base.Phase.COMPLETED),
              ('failure', 1.0, {}, base.Phase.FAILED),
              ('cancelled', 1.0, {}, base.Phase.CANCELLED))
    @ddt.unpack
    def test_progress_from_task_status(self, status, progress, current,
                                       phase):
        driver = xenapi.XenAPIDriver(self.conf)
        driver._feed = mock.Mock()
        driver._feed.record.return_value = _record(status, progress,
                                                   current=current)
        m = base.Migration(spec=base.MigrationSpec('vm', 'dst'), data_gib=2,
                           reference='OpaqueRef:t',
                           backend=xenapi._State('OpaqueRef:vm', SRC, DST))
        got = driver._progress(m)
        self.assertIs(phase, got.phase)
        self.assertEqual(status, got.raw_state)
        self.assertEqual([], got.problems())

    @ddt.data((SRC, 'Running', base.GuestHost.SOURCE, base.RunState.RUNNING),
              (DST, 'Paused', base.GuestHost.DESTINATION,
               base.RunState.PAUSED),
              ('OpaqueRef:NULL', 'Halted', base.GuestHost.NOWHERE,
               base.RunState.SHUT_OFF),
              ('OpaqueRef:x', 'Running', base.GuestHost.UNKNOWN,
               base.RunState.RUNNING))
    @ddt.unpack
    def test_where(self, resident, power, host, state):
        driver = xenapi.XenAPIDriver(self.conf)
        where = driver._where(resident, power,
                              xenapi._State('OpaqueRef:vm', SRC, DST))
        self.assertEqual((host, state), where.pair)


@ddt.ddt
class AbortTest(test_base.ConfTestCase):

    def setUp(self):
        super().setUp()
        self.driver = xenapi.XenAPIDriver(self.conf)
        self.x = mock.Mock()
        sess = self.driver.session
        sess.sdk = mock.Mock(Failure=Failure)
        sess._session = mock.Mock(xenapi=self.x)
        self.m = base.Migration(
            spec=base.MigrationSpec('vm', 'dst'), data_gib=2,
            reference='OpaqueRef:t',
            backend=xenapi._State('OpaqueRef:vm', SRC, DST))

    def test_cancel_while_allowed(self):
        self.x.task.get_allowed_operations.return_value = ['cancel']
        self.x.task.get_status.return_value = 'pending'
        self.driver._abort(self.m)
        self.x.task.cancel.assert_called_once_with('OpaqueRef:t')

    @ddt.data(('success', 'already completed'),
              ('failure', 'already ended'),
              ('pending', "no longer lists 'cancel'"))
    @ddt.unpack
    def test_refused_without_cancel(self, status, reason):
        self.x.task.get_allowed_operations.return_value = []
        self.x.task.get_status.return_value = status
        exc = self.assertRaises(exception.OperationRefused,
                                self.driver._abort, self.m)
        self.assertIn(reason, str(exc))
        self.x.task.cancel.assert_not_called()

    @ddt.data(('OPERATION_NOT_ALLOWED', 'already completed'),
              ('HANDLE_INVALID', 'no longer exists'))
    @ddt.unpack
    def test_cancel_errors(self, code, reason):
        self.x.task.get_allowed_operations.return_value = ['cancel']
        self.x.task.get_status.return_value = 'pending'
        self.x.task.cancel.side_effect = Failure([code, 'x'])
        exc = self.assertRaises(exception.OperationRefused,
                                self.driver._abort, self.m)
        self.assertIn(reason, str(exc))


class SessionTest(test_base.ConfTestCase):

    def _session(self, password='s3cret'):
        sess = session_mod.XapiSession('xenapi', 'lmcaps_xenapi',
                                       'http://127.0.0.1:1/', 'root', password)
        sdk = mock.Mock(Failure=Failure)
        sess.sdk = sdk
        return sess, sdk

    def test_relogin_once_when_sdk_gives_up(self):
        sess, sdk = self._session()
        calls = []

        def fn(x):
            calls.append(x)
            if len(calls) == 1:
                raise xmlrpc.client.Fault(500, 'Tried 3 times')
            return 'ok'
        self.assertEqual('ok', sess.call('host.get_all', fn))
        self.assertEqual(2, sess.logins)
        self.assertEqual(2, len(calls))

    def test_session_invalid_twice_is_raised(self):
        sess, sdk = self._session()

        def fn(x):
            raise Failure(['SESSION_INVALID', 'OpaqueRef:s'])
        self.assertRaises(Failure, sess.call, 'host.get_all', fn)
        self.assertEqual(2, sess.logins)

    def test_bad_credentials_one_line_no_password(self):
        sess, sdk = self._session('hunter2')
        sdk.Session.return_value.login_with_password.side_effect = Failure(
            ['SESSION_AUTHENTICATION_FAILED', 'root', 'Authentication failure'])
        exc = self.assertRaises(exception.DriverError, sess.connect)
        self.assertIn('SESSION_AUTHENTICATION_FAILED', str(exc))
        self.assertNotIn('hunter2', str(exc))
        self.assertNotIn('\n', str(exc))

    def test_tls_verified_by_default(self):
        sess, sdk = self._session()
        sess.url = 'https://xapi.example/'
        with mock.patch('ssl.create_default_context') as ctx:
            sess.connect()
        ctx.assert_called_once_with(cafile=None)
        transport = sdk.Session.call_args.kwargs['transport']
        self.assertIsInstance(transport, xmlrpc.client.SafeTransport)

    def test_declaring_imports_no_sdk(self):
        sys.modules.pop('XenAPI', None)
        xenapi.XenAPIDriver.declare()
        xenapi.XenAPIDriver(self.conf)
        self.assertNotIn('XenAPI', sys.modules)
