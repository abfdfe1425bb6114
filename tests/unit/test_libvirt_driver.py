"""Unit tests of the libvirt driver's decisions, with scripted libvirt calls.

These test lmcaps's own logic (phases, the prepare phase, the thread's
verdict); that the driver works is shown on real daemons in
tests/functional/libvirt.
"""

import threading

from lmcaps import capabilities as caps
from lmcaps import exception
from lmcaps.drivers import base
from lmcaps.drivers.libvirt import LibvirtDriver
from lmcaps.drivers.libvirt import _State
from tests.unit import base as test_base


class _Error(Exception):
    def __init__(self, code, msg='scripted'):
        super().__init__(msg)
        self.code = code

    def get_error_code(self):
        return self.code


class _Lib:
    libvirtError = _Error
    VIR_MIGRATE_POSTCOPY = 1 << 15


class _Domain:
    def __init__(self, stats, state=(1, 0)):
        self.stats = list(stats)
        self.state_value = state
        self.calls = []

    def jobStats(self):
        self.calls.append('jobStats')
        item = self.stats.pop(0) if len(self.stats) > 1 else self.stats[0]
        if isinstance(item, Exception):
            raise item
        return item

    def state(self):
        if isinstance(self.state_value, Exception):
            raise self.state_value
        return list(self.state_value)

    def abortJob(self):
        self.calls.append('abortJob')

    def suspend(self):
        self.calls.append('suspend')

    def resume(self):
        self.calls.append('resume')
        self.state_value = (1, 0)


class _DriverCase(test_base.ConfTestCase):

    def setUp(self):
        super().setUp()
        self.cfg.config(permit_post_copy=True, group='lmcaps')
        self.driver = LibvirtDriver(self.conf)
        self.driver._libvirt = _Lib
        self.driver._host_declaration = LibvirtDriver.declare()

    def migration(self, dom, flags=0, finished=False, error=None):
        release = threading.Event()
        self.addCleanup(release.set)

        def call():
            if not finished:
                release.wait(30)
            if error is not None:
                raise error

        state = _State(dom, flags, base.BlockingCall(
            call, self.driver._verdict).start())
        if finished:
            state.call.thread.join(5)
        return base.Migration(spec=base.MigrationSpec('g', 'd'),
                              data_gib=2.0, backend=state)


class LibvirtDecisionTest(_DriverCase):

    def test_thread_verdict_wins(self):
        for error, phase in ((None, base.Phase.COMPLETED),
                             (_Error(78), base.Phase.CANCELLED),
                             (_Error(1), base.Phase.FAILED)):
            mig = self.migration(_Domain([{}]), finished=True, error=error)
            self.assertEqual(phase, self.driver.get_progress(mig).phase)

    def test_domain_gone_from_source_counts_as_completed(self):
        mig = self.migration(_Domain([_Error(42)]))
        self.assertEqual(base.Phase.COMPLETED,
                         self.driver.get_progress(mig).phase)

    def test_connection_lost_is_a_driver_error(self):
        mig = self.migration(_Domain([_Error(38, 'broken pipe')]))
        err = self.assertRaises(exception.DriverError,
                                self.driver.get_progress, mig)
        self.assertIn('broken pipe', str(err))

    def test_prepare_phase_then_abort_waits_for_data(self):
        dom = _Domain([{'type': 2, 'data_total': 0},
                       {'type': 2, 'data_total': 0},
                       {'type': 2, 'data_total': 100}])
        mig = self.migration(dom)
        self.assertEqual(base.Phase.PREPARING,
                         self.driver.get_progress(mig).phase)
        self.driver.abort(mig)
        self.assertEqual(['jobStats'] * 3 + ['abortJob'], dom.calls)

    def test_action_after_the_end_is_refused(self):
        mig = self.migration(_Domain([{'type': 0}]), finished=True)
        err = self.assertRaises(exception.OperationRefused,
                                self.driver.abort, mig)
        self.assertIn('already ended (completed)', str(err))

    def test_post_copy_needs_the_flag(self):
        dom = _Domain([{'type': 2, 'data_total': 100}])
        err = self.assertRaises(
            exception.OperationRefused, self.driver.force_complete,
            self.migration(dom), caps.ForceCompleteMode.POSTCOPY)
        self.assertIn('VIR_MIGRATE_POSTCOPY', str(err))
        self.assertNotIn('migrateStartPostCopy', dom.calls)

    def test_pause_in_post_copy_refused(self):
        dom = _Domain([{'type': 2, 'data_total': 100}], state=(3, 12))
        self.assertRaises(exception.OperationRefused,
                          self.driver.force_complete, self.migration(dom),
                          caps.ForceCompleteMode.PAUSE)
        self.assertNotIn('suspend', dom.calls)

    def test_pause_marks_paused_phase(self):
        dom = _Domain([{'type': 2, 'data_total': 100}])
        mig = self.migration(dom)
        self.driver.force_complete(mig, caps.ForceCompleteMode.PAUSE)
        self.assertIn('suspend', dom.calls)
        dom.state_value = (3, 1)     # paused by the user (us)
        self.assertEqual(base.Phase.PAUSED,
                         self.driver.get_progress(mig).phase)


class ResumeTest(_DriverCase):

    def test_guest_paused_by_its_owner_is_not_ours_to_pause(self):
        dom = _Domain([{'type': 2, 'data_total': 100}], state=(3, 1))
        mig = self.migration(dom)
        err = self.assertRaises(exception.OperationRefused,
                                self.driver.force_complete, mig,
                                caps.ForceCompleteMode.PAUSE)
        self.assertIn('already paused', str(err))
        self.driver.resume_source(mig)
        self.assertNotIn('resume', dom.calls)

    def test_resume_only_what_we_paused(self):
        dom = _Domain([{'type': 2, 'data_total': 100}])
        mig = self.migration(dom)
        self.driver.force_complete(mig, caps.ForceCompleteMode.PAUSE)
        dom.state_value = (3, 1)
        self.driver.resume_source(mig)
        self.assertEqual(1, dom.calls.count('resume'))
        self.driver.resume_source(mig)     # running again: nothing to do
        self.assertEqual(1, dom.calls.count('resume'))

    def test_resume_with_unknown_state_is_an_error(self):
        dom = _Domain([{'type': 2, 'data_total': 100}])
        mig = self.migration(dom)
        self.driver.force_complete(mig, caps.ForceCompleteMode.PAUSE)
        dom.state_value = _Error(38, 'connection lost')
        self.assertRaises(exception.DriverError, self.driver.resume_source,
                          mig)


class HostDeclarationTest(test_base.ConfTestCase):

    def refined(self, lib, qemu, permit):
        self.cfg.config(permit_post_copy=permit, group='lmcaps')
        driver = LibvirtDriver(self.conf)
        conn = type('Conn', (), {'getLibVersion': lambda s: lib,
                                 'getVersion': lambda s: qemu,
                                 'getHostname': lambda s: 'h1'})()
        driver._conn, driver._libvirt = conn, _Lib
        return driver.host_declaration()

    def test_refinement(self):
        op = caps.Operation.FORCE_COMPLETE_POSTCOPY
        self.assertEqual(caps.Support.COMPLETE,
                         self.refined(9000000, 7002000, True).support(op))
        partial = self.refined(9000000, 7002000, False)
        self.assertEqual(caps.Support.PARTIAL, partial.support(op))
        self.assertIn('permit_post_copy', partial[op].condition)
        self.assertEqual({'libvirt': '9.0.0', 'qemu': '7.2.0',
                          'permit_post_copy': 'False'}, dict(partial.facts))
        old = self.refined(1003002, 7002000, True)
        self.assertEqual(caps.Support.MISSING, old.support(op))
        self.assertIn('1.3.2', old[op].notes)
        self.assertEqual(caps.Support.COMPLETE,
                         old.support(caps.Operation.ABORT))
