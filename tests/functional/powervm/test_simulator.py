"""The NovaLink simulator, driven through the real pypowervm client.

pypowervm's ``adapter.Session``/``Adapter``, ``wrappers`` and
``tasks.migration`` talk HTTP to the simulator as they would to NovaLink:
these tests prove the simulator answers the way pypowervm expects.
"""

from __future__ import annotations

import os
import threading
import time

from tests.functional.powervm import base


def _wait(predicate, timeout: float = 15.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError('condition not reached in %ss' % timeout)


class TestLogon(base.SimTestCase):

    def test_logon_gives_a_token_and_the_console_type(self):
        adpt = self.session()
        self.assertTrue(adpt.session._sessToken)
        self.assertEqual('PVM', adpt.session.mc_type)

    def test_bad_password_is_http_401(self):
        from pypowervm import exceptions as pvmex
        exc = self.assertRaises(pvmex.HttpError, self.session, 'wrong')
        self.assertEqual(401, exc.response.status)

    def test_request_without_a_valid_token_is_401(self):
        import requests
        resp = requests.get(f'http://127.0.0.1:{self.sim.port}'
                            f'/rest/api/uom/LogicalPartition',
                            headers={'X-API-Session': 'forged'}, timeout=5)
        self.assertEqual(401, resp.status_code)

    def test_expired_session_is_renewed_by_pypowervm(self):
        from pypowervm.wrappers import logical_partition as wlpar
        adpt = self.session()
        uuid = self.sim.add_lpar('renew')
        first = adpt.session._sessToken
        self.sim.control('POST', 'sessions/expire')
        lpar = wlpar.LPAR.wrap(adpt.read('LogicalPartition', uuid))
        self.assertEqual('renew', lpar.name)
        self.assertNotEqual(first, adpt.session._sessToken)


class TestLogicalPartition(base.SimTestCase):

    def test_feed_and_entry(self):
        from pypowervm.wrappers import logical_partition as wlpar
        from pypowervm.wrappers import managed_system as wms
        adpt = self.session()
        one = self.sim.add_lpar('one')
        two = self.sim.add_lpar('two', state='not activated')
        lpars = {lp.uuid: lp for lp in wlpar.LPAR.wrap(
            adpt.read('LogicalPartition'))}
        self.assertEqual({one, two}, set(lpars))
        self.assertEqual('not activated', lpars[two].state)
        lpar = wlpar.LPAR.wrap(adpt.read('LogicalPartition', one))
        self.assertEqual(('one', 'running', 'Not_Migrating'),
                         (lpar.name, lpar.state, lpar.migration_state))
        self.assertEqual(self.sim.source, lpar.assoc_sys_uuid)
        system = wms.System.wrap(adpt.read('ManagedSystem',
                                           lpar.assoc_sys_uuid))
        self.assertEqual(self.sim.source_name, system.system_name)
        names = {s.system_name for s in wms.System.wrap(
            adpt.read('ManagedSystem'))}
        self.assertEqual({self.sim.source_name, self.sim.target_name}, names)

    def test_unknown_lpar_is_404(self):
        from pypowervm import exceptions as pvmex
        adpt = self.session()
        self.assertRaises(pvmex.HttpNotFound, adpt.read, 'LogicalPartition',
                          '0A0A0A0A-0000-0000-0000-000000000000')

    def test_job_templates(self):
        from pypowervm.wrappers import job
        adpt = self.session()
        uuid = self.sim.add_lpar('tmpl')
        for op in ('Migrate', 'MigrateAbort', 'MigrateRecover'):
            wrapper = job.Job.wrap(adpt.read('LogicalPartition', uuid,
                                             suffix_type='do',
                                             suffix_parm=op))
            self.assertEqual(op, wrapper.op)
            self.assertEqual('LogicalPartition', wrapper._get_val_str(
                'RequestedOperation/GroupName'))


class TestMigrationJobs(base.SimTestCase):

    def lpar(self, adpt, uuid):
        from pypowervm.wrappers import logical_partition as wlpar
        return wlpar.LPAR.wrap(adpt.read('LogicalPartition', uuid))

    def migrate_in_thread(self, adpt, uuid, **kwargs):
        from pypowervm.tasks import migration
        box = {}

        def run():
            try:
                migration.migrate_lpar(self.lpar(adpt, uuid),
                                       self.sim.target_name, **kwargs)
                box['result'] = 'ok'
            except Exception as exc:
                box['result'] = exc
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.addCleanup(thread.join, 30)
        return thread, box

    def test_migrate_moves_the_lpar_and_state_changes_while_it_runs(self):
        from pypowervm.tasks import migration
        adpt = self.session()
        uuid = self.sim.add_lpar('mover', duration=2.5)
        thread, box = self.migrate_in_thread(adpt, uuid)
        lpar = _wait(lambda: (lambda lp: lp if lp.migration_state ==
                              'Migration_In_Progress' else None)(
            self.lpar(adpt, uuid)))
        self.assertEqual('migrating running', lpar.state)
        self.assertEqual(self.sim.source, lpar.assoc_sys_uuid)
        total = lpar._get_val_int('ProgressPartitionDataTotal')
        self.assertGreater(total, 0)
        thread.join(20)
        self.assertEqual('ok', box['result'])
        lpar = self.lpar(adpt, uuid)
        self.assertEqual(('running', 'Not_Migrating', self.sim.target),
                         (lpar.state, lpar.migration_state,
                          lpar.assoc_sys_uuid))
        # pypowervm deleted its finished job
        job_id = self.sim.lpar(uuid)['job']['id']
        from pypowervm import exceptions as pvmex
        self.assertRaises(pvmex.HttpNotFound, adpt.read_job, job_id)
        # and the LPAR is now on the target: migrating it there again fails
        self.assertRaises(pvmex.JobRequestFailed, migration.migrate_lpar,
                          lpar, self.sim.target_name)

    def test_job_status_values_while_polled(self):
        from pypowervm.wrappers import job
        adpt = self.session()
        uuid = self.sim.add_lpar('poll', duration=1.0)
        tmpl = job.Job.wrap(adpt.read('LogicalPartition', uuid,
                                      suffix_type='do', suffix_parm='Migrate'))
        tmpl.add_job_parameters_to_existing(tmpl.create_job_parameter(
            'TargetManagedSystemName', self.sim.target_name))
        resp = adpt.create_job(tmpl.entry.element, 'LogicalPartition', uuid)
        started = job.Job.wrap(resp.entry)
        self.assertIn(started.job_status, ('NOT_STARTED', 'RUNNING'))
        seen = {started.job_status}
        from pypowervm import exceptions as pvmex
        self.assertRaises(pvmex.HttpError, adpt.delete, 'jobs',
                          started.job_id)   # running: refused
        while True:
            polled = job.Job.wrap(adpt.read_job(started.job_id))
            seen.add(polled.job_status)
            if polled.job_status not in ('NOT_STARTED', 'RUNNING'):
                break
            time.sleep(0.05)
        self.assertEqual('COMPLETED_OK', polled.job_status)
        self.assertIn('RUNNING', seen)
        self.assertEqual(started.job_id, polled.job_id)
        adpt.delete('jobs', started.job_id)

    def test_migrate_abort_stops_the_migration(self):
        from pypowervm import exceptions as pvmex
        from pypowervm.tasks import migration
        adpt = self.session()
        uuid = self.sim.add_lpar('abortme', duration='inf')
        thread, box = self.migrate_in_thread(adpt, uuid)
        _wait(lambda: self.sim.lpar(uuid)['migration_state'] ==
              'Migration_In_Progress')
        migration.migrate_abort(self.lpar(adpt, uuid))
        thread.join(20)
        self.assertIsInstance(box['result'], pvmex.JobRequestFailed)
        lpar = self.lpar(adpt, uuid)
        self.assertEqual(('running', 'Not_Migrating', self.sim.source),
                         (lpar.state, lpar.migration_state,
                          lpar.assoc_sys_uuid))

    def test_migrate_abort_of_an_idle_lpar_fails(self):
        from pypowervm import exceptions as pvmex
        from pypowervm.tasks import migration
        adpt = self.session()
        uuid = self.sim.add_lpar('idle')
        self.assertRaises(pvmex.JobRequestFailed, migration.migrate_abort,
                          self.lpar(adpt, uuid))

    def test_pypowervm_timeout_cancels_the_job(self):
        from pypowervm import exceptions as pvmex
        adpt = self.session()
        uuid = self.sim.add_lpar('slow', duration='inf')
        thread, box = self.migrate_in_thread(adpt, uuid, timeout=1)
        thread.join(20)
        self.assertIsInstance(box['result'], pvmex.JobRequestTimedOut)
        self.assertIn(('POST', f'/rest/api/uom/jobs/'
                               f'{self.sim.lpar(uuid)["job"]["id"]}/cancel'),
                      [tuple(r) for r in self.sim.control('GET', 'requests')])
        _wait(lambda: self.sim.lpar(uuid)['job']['task'] == 'cancelled')
        lpar = self.lpar(adpt, uuid)
        self.assertEqual(('running', 'Not_Migrating', self.sim.source),
                         (lpar.state, lpar.migration_state,
                          lpar.assoc_sys_uuid))

    def test_failed_migration_then_recover(self):
        from pypowervm import exceptions as pvmex
        from pypowervm.tasks import migration
        adpt = self.session()
        uuid = self.sim.add_lpar('broken', duration='inf')
        thread, box = self.migrate_in_thread(adpt, uuid)
        _wait(lambda: self.sim.lpar(uuid)['migration_state'] ==
              'Migration_In_Progress')
        self.sim.control('POST', f'lpars/{uuid}/fail',
                         {'message': 'VIOS mover service partition lost'})
        thread.join(20)
        self.assertIsInstance(box['result'], pvmex.JobRequestFailed)
        self.assertIn('mover service partition lost', str(box['result']))
        lpar = self.lpar(adpt, uuid)
        self.assertEqual('Migration_Failed', lpar.migration_state)
        self.assertRaises(pvmex.JobRequestFailed, migration.migrate_lpar,
                          lpar, self.sim.target_name)
        migration.migrate_recover(lpar, force=True)
        lpar = self.lpar(adpt, uuid)
        self.assertEqual(('running', 'Not_Migrating', self.sim.source),
                         (lpar.state, lpar.migration_state,
                          lpar.assoc_sys_uuid))
        self.assertRaises(pvmex.JobRequestFailed, migration.migrate_recover,
                          lpar)   # nothing left to recover


class TestProcess(base.SimTestCase):

    def test_stopped_by_pid(self):
        pid = self.sim.pid
        os.kill(pid, 0)
        self.sim.stop()
        self.assertRaises(ProcessLookupError, os.kill, pid, 0)
