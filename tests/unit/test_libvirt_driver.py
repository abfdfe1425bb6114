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
        mig.backend.call = None        # re-attached: no call of ours
        self.assertEqual(base.Phase.COMPLETED,
                         self.driver.get_progress(mig).phase)

    def test_connection_lost_is_a_driver_error(self):
        mig = self.migration(_Domain([_Error(38, 'broken pipe')]))
        err = self.assertRaises(exception.DriverError,
                                self.driver.get_progress, mig)
        self.assertIn('broken pipe', str(err))

    def test_abort_in_the_prepare_phase_is_refused_not_waited_for(self):
        dom = _Domain([{'type': 2, 'data_total': 0},
                       {'type': 2, 'data_total': 0},
                       {'type': 2, 'data_total': 100}])
        mig = self.migration(dom)
        self.assertEqual(base.Phase.PREPARING,
                         self.driver.get_progress(mig).phase)
        err = self.assertRaises(exception.OperationRefused,
                                self.driver.abort, mig)
        self.assertIn('still preparing', str(err))
        self.assertNotIn('abortJob', dom.calls)
        self.driver.abort(mig)          # the monitor's retry: now sending
        self.assertEqual(['jobStats'] * 3 + ['abortJob'], dom.calls)

    def test_job_gone_before_the_call_returned_gives_the_last_reading(self):
        dom = _Domain([{'type': 2, 'data_total': 100}, _Error(42)])
        mig = self.migration(dom)
        first = self.driver.get_progress(mig)
        self.assertIs(base.Phase.PRECOPY, first.phase)
        self.assertEqual(first, self.driver.get_progress(mig))

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


class _Listed:
    """A domain as listAllDomains returns it (scripted)."""

    def __init__(self, name, state=(1, 1), stats=None, metadata=None):
        self._name, self._state = name, state
        self._stats = {'type': 0} if stats is None else stats
        self._metadata = metadata

    def name(self):
        return self._name

    def UUIDString(self):
        return f'00000000-0000-0000-0000-{len(self._name):012d}'

    def info(self):
        return [1, 262144, 262144, 1, 0]

    def state(self):
        return list(self._state)

    def jobStats(self):
        if isinstance(self._stats, Exception):
            raise self._stats
        return self._stats

    def metadata(self, _kind, _ns, _flags):
        if self._metadata is None:
            raise _Error(80, 'metadata not found')
        return self._metadata


class _ListLib(_Lib):
    VIR_CONNECT_LIST_DOMAINS_ACTIVE = 1
    VIR_DOMAIN_METADATA_ELEMENT = 2


class ListGuestsTest(test_base.ConfTestCase):
    """Labels and busy guests from what libvirt 9.0 answered (seen on the
    functional pair: tests/functional/libvirt/test_drain.py)."""

    def listed(self, *domains):
        driver = LibvirtDriver(self.conf)
        conn = type('Conn', (), {
            'listAllDomains': lambda s, flags: list(domains)})()
        driver._conn, driver._libvirt = conn, _ListLib
        return {g.name: g for g in driver.list_guests()}

    def test_labels_from_the_metadata_element(self):
        got = self.listed(
            _Listed('a', metadata='<labels>\n  <label key="tier">d&amp;b'
                                  '</label>\n  <label key="e"/>\n'
                                  '  <label>no key</label>\n</labels>'),
            _Listed('b'))
        self.assertEqual({'tier': 'd&b', 'e': ''}, dict(got['a'].labels))
        self.assertEqual({}, dict(got['b'].labels))
        self.assertEqual((256, base.RunState.RUNNING, ''),
                         (got['a'].ram_mib, got['a'].state, got['a'].busy))

    def test_incoming_and_busy_domains(self):
        unsupported = _Error(84, 'migration statistics are available only '
                                 'on the source host')
        got = self.listed(
            _Listed('in-precopy', (3, 2), unsupported),
            _Listed('in-postcopy', (1, 10), unsupported),
            _Listed('out', (1, 1), {'type': 2}),
            _Listed('out-paused', (3, 2), {'type': 2}),
            _Listed('idle', (1, 1), {'type': 0}))
        for name in ('in-precopy', 'in-postcopy'):
            self.assertIn('in progress (incoming)', got[name].busy)
        for name in ('out', 'out-paused'):
            self.assertIn('a job is already running', got[name].busy)
        self.assertEqual('', got['idle'].busy)

    def test_other_job_stats_errors_fail_the_listing(self):
        err = self.assertRaises(
            exception.DriverError, self.listed,
            _Listed('x', (1, 1), _Error(84, 'unsupported')))
        self.assertIn('domain listing', str(err))
        # a domain gone since it was listed is skipped
        self.assertEqual({}, self.listed(_Listed('y', (1, 1),
                                                 _Error(42, 'no domain'))))
