"""Unit tests of the powervm driver's own logic (no REST server)."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from unittest import mock

import ddt

from lmcaps import capabilities as caps
from lmcaps import drivers
from lmcaps import exception
from lmcaps.drivers import base
from lmcaps.drivers.powervm import states
from tests import backend as test_backend
from tests.unit import base as test_base

Op = caps.Operation
S = caps.Support


def _pypowervm() -> bool:
    try:
        import pypowervm.adapter  # noqa: F401
    except ImportError:
        return False
    return True


class DeclarationTest(test_base.ConfTestCase):

    def test_declaration(self):
        decl = drivers.driver_class('powervm').declare()
        self.assertEqual(S.COMPLETE, decl.support(Op.ABORT))
        self.assertEqual(S.COMPLETE, decl.support(Op.PER_INSTANCE_TIMEOUT))
        for op in (Op.FORCE_COMPLETE_POSTCOPY, Op.FORCE_COMPLETE_PAUSE):
            self.assertEqual(S.MISSING, decl.support(op))
            self.assertIn('Live Partition Mobility', decl[op].notes)
        json.dumps(decl.as_dict())

    def test_force_complete_raises_before_any_backend_call(self):
        driver = drivers.load('powervm', self.conf)
        migration = base.Migration(spec=base.MigrationSpec('lp', 'sys'),
                                   data_gib=2.0)
        for mode in caps.ForceCompleteMode:
            self.assertRaises(exception.UnsupportedOperation,
                              driver.force_complete, migration, mode)
        self.assertIsNone(driver._session)

    def test_password_is_secret_and_tls_verified_by_default(self):
        drivers.load('powervm', self.conf)
        opts = {o.dest: o for o in drivers.driver_class('powervm').list_opts()}
        self.assertTrue(opts['password'].secret)
        self.assertTrue(self.conf.lmcaps_powervm.tls_verify)
        self.assertEqual('https', self.conf.lmcaps_powervm.protocol)

    def test_report_does_not_import_pypowervm(self):
        code = ('import sys\n'
                'from lmcaps.cmd import main\n'
                'rc = main.main(["report"])\n'
                'sys.stderr.write("PYPOWERVM=%s RC=%s" % ('
                '"pypowervm" in sys.modules, rc))\n')
        proc = subprocess.run([sys.executable, '-c', code],
                              capture_output=True, text=True, timeout=60)
        self.assertIn('powervm', proc.stdout)
        self.assertIn('PYPOWERVM=False RC=0', proc.stderr)


@ddt.ddt
class VerifyTest(test_base.ConfTestCase):

    def setUp(self):
        super().setUp()
        self.driver = drivers.load('powervm', self.conf)

    @ddt.data(({}, True),
              ({'ca_file': '/etc/ca.pem'}, '/etc/ca.pem'),
              ({'tls_verify': False, 'ca_file': '/etc/ca.pem'}, False),
              ({'protocol': 'http'}, False))
    @ddt.unpack
    def test_verify_value(self, options, expected):
        for key, value in options.items():
            self.cfg.config(group='lmcaps_powervm', **{key: value})
        self.assertEqual(expected, self.driver._verify())

    def test_logon_error_is_one_line_without_the_password(self):
        self.cfg.config(group='lmcaps_powervm', username='neo',
                        password='S3cret!', host='nl.example')
        exc = Exception('HTTP error 401 for PUT /rest/api/web/Logon\nbody')
        exc.response = types.SimpleNamespace(status=401)
        text = self.driver._logon_error(exc)
        self.assertIn('HTTP 401', text)
        self.assertNotIn('S3cret!', text)
        other = self.driver._logon_error(ConnectionError('refused\nmore'))
        self.assertEqual('cannot log on to https://nl.example:default: '
                         'refused', other)


@ddt.ddt
class StatesTest(test_base.ConfTestCase):

    @ddt.data(('running', base.RunState.RUNNING),
              ('migrating running', base.RunState.RUNNING),
              ('not activated', base.RunState.SHUT_OFF),
              ('migrating not active', base.RunState.SHUT_OFF),
              ('error', base.RunState.CRASHED),
              ('suspended', base.RunState.PAUSED),
              ('hardware discovery', base.RunState.UNKNOWN))
    @ddt.unpack
    def test_run_state(self, partition_state, expected):
        self.assertEqual(expected, states.run_state(partition_state))

    @ddt.data(('COMPLETED_OK', base.Phase.COMPLETED),
              ('COMPLETED_WITH_WARNINGS', base.Phase.FAILED),
              ('COMPLETED_WITH_ERROR', base.Phase.FAILED),
              ('FAILED_BEFORE_COMPLETION', base.Phase.FAILED))
    @ddt.unpack
    def test_final_status(self, status, phase):
        progress = states.from_job(status, 'HSCL1 boom\nat java.lang...')
        self.assertEqual((phase, status), (progress.phase, progress.raw_state))
        if phase is base.Phase.FAILED:
            self.assertEqual('HSCL1 boom', progress.message)

    def lpar(self, mstate, total=0, left=0):
        values = {'ProgressPartitionDataTotal': total,
                  'ProgressPartitionDataRemaining': left}
        return types.SimpleNamespace(
            migration_state=mstate,
            _get_val_int=lambda name, default=None: values.get(name, default))

    @ddt.data(('NOT_STARTED', 'Not_Migrating', None, base.Phase.PREPARING),
              ('RUNNING', 'Migration_Starting', None, base.Phase.PREPARING),
              ('RUNNING', 'Migration_In_Progress', None, base.Phase.PRECOPY),
              ('RUNNING', 'Migration_In_Progress', '', base.Phase.CANCELLING),
              ('RUNNING', 'Migration_In_Progress', 'refused',
               base.Phase.PRECOPY))
    @ddt.unpack
    def test_running(self, status, mstate, abort_note, phase):
        progress = states.running(status, self.lpar(mstate, 400, 100),
                                  abort_note)
        self.assertEqual(phase, progress.phase)
        self.assertEqual(0.75, progress.fraction)
        self.assertEqual([], progress.problems())
        if abort_note:
            self.assertIn(abort_note, progress.message)

    def test_running_without_data_counts(self):
        progress = states.running('RUNNING', self.lpar('X', 0, 0), None)
        self.assertIsNone(progress.fraction)

    def test_verdicts(self):
        ok = states.from_verdict(base.BlockingCall.Verdict(
            base.Phase.COMPLETED))
        self.assertEqual((base.Phase.COMPLETED, 1.0), (ok.phase, ok.fraction))
        failed = states.from_verdict(base.BlockingCall.Verdict(
            base.Phase.FAILED, RuntimeError("The 'Migrate' operation failed. "
                                            "x\ny")))
        self.assertEqual(base.Phase.FAILED, failed.phase)
        self.assertEqual("The 'Migrate' operation failed. x", failed.message)


class RestGlueTest(test_base.ConfTestCase):
    """pypowervm glue: TLS on every request, the JobID of a job PUT."""

    def setUp(self):
        super().setUp()
        test_backend.require(self, _pypowervm(), 'pypowervm not installed')

    def test_every_request_gets_the_verify_value(self):
        from lmcaps.drivers.powervm import rest
        from tests.functional.powervm.sim import documents
        seen = []

        def fake_session():
            sess = mock.MagicMock()

            def request(method, url, **kwargs):
                seen.append((method, sess.verify))
                body = documents.logon_response('tok').decode()
                return types.SimpleNamespace(
                    status_code=200, reason='OK', headers={}, text=body)
            sess.request.side_effect = request
            return sess
        with mock.patch('pypowervm.adapter.requests.Session',
                        side_effect=fake_session):
            sess = rest.session('nl.example', None, 'https', 'neo', 'pw',
                                '/etc/ca.pem', 5)
            sess.request('GET', '/rest/api/uom/LogicalPartition')
            sess._logoff()
        self.assertEqual([('PUT', '/etc/ca.pem'), ('GET', '/etc/ca.pem'),
                          ('DELETE', '/etc/ca.pem')], seen)

    def test_job_watch_reads_the_job_of_its_operation_only(self):
        from lmcaps.drivers.powervm import rest
        from tests.functional.powervm.sim import documents
        entry = documents.job_response(
            'http://x', job_id='42', request_path='/p', target_uuid='U',
            request=documents.job_request('Migrate').find(
                f'{{{documents.ATOM}}}content')[0],
            status='NOT_STARTED', started_ms=1, completed_ms=0)
        body = documents.tostring(entry).decode()
        watch = rest.JobWatch('Migrate')
        call = watch(lambda method, path, **kw: types.SimpleNamespace(
            body=body))
        call('PUT', '/rest/api/uom/LogicalPartition/U/do/MigrateAbort')
        self.assertIsNone(watch.job_id)
        call('GET', '/rest/api/uom/LogicalPartition/U/do/Migrate')
        self.assertIsNone(watch.job_id)
        call('PUT', '/rest/api/uom/LogicalPartition/U/do/Migrate')
        self.assertEqual(('42', 'NOT_STARTED'), (watch.job_id, watch.status))
        self.assertTrue(watch.created.is_set())


class VerdictTest(test_base.ConfTestCase):
    """Which migrate_lpar endings tell how the job ended."""

    def setUp(self):
        super().setUp()
        test_backend.require(self, _pypowervm(), 'pypowervm not installed')
        from lmcaps.drivers import powervm
        self.driver = drivers.load('powervm', self.conf)
        self.state = powervm._State('U', None, None)

    def ended(self, error):
        call = base.BlockingCall(lambda: None)
        call._verdict = base.BlockingCall.Verdict(
            base.Phase.COMPLETED if error is None else base.Phase.FAILED,
            error)
        call.finished.set()
        self.state.call = call
        return self.driver._verdict(self.state)

    def test_return_and_job_failure_are_verdicts(self):
        from pypowervm import exceptions as pvmex
        self.assertIsNotNone(self.ended(None))
        failed = self.ended(pvmex.JobRequestFailed(operation_name='Migrate',
                                                   error='boom'))
        self.assertEqual(base.Phase.FAILED, failed.phase)
        self.assertIsNotNone(self.state.call)

    def test_timeout_and_connection_errors_hand_over_to_rest(self):
        from pypowervm import exceptions as pvmex
        for error in (pvmex.JobRequestTimedOut(operation_name='Migrate',
                                               seconds=5),
                      pvmex.ConnectionError('refused')):
            self.assertIsNone(self.ended(error))
            self.assertIsNone(self.state.call)
