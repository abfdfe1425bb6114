"""lmcaps's os-migrateLive fields end to end, in nova's functional framework.

nova's real API (wsgi-intercept, the pipeline of nova's api-paste.ini with
``lmcaps_migrate_live`` after ``keystonecontext``, as README.rst says),
conductor, scheduler, the placement fixture and two computes ``src`` and
``dest`` on nova's fake libvirt, with lmcaps's hooks enabled (what
``lmcaps-nova-compute`` does).

The fake libvirt's ``migrateToURI3`` here behaves as libvirt 9 did on real
daemons (see :class:`NonConverging`): the migration runs until someone acts,
post-copy completes it on the destination, an abort ends it with libvirt's
error 78 and the guest left on the source.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from typing import Any

import fixtures
from lxml import etree
from nova import conf as nova_conf
from nova import context as nova_context
from nova import objects
from nova.tests.fixtures import libvirt as fakelibvirt
from nova.tests.functional.api import client as api_client
from nova.tests.functional import integrated_helpers
from nova.tests.functional.libvirt import base as libvirt_base

from lmcaps import events as lmcaps_events
from lmcaps.nova import api as nova_api
from lmcaps.nova import request as nova_request
from tests.nova import fixtures as lmcaps_fixtures

CONF = nova_conf.CONF
#: libvirt's VIR_ERR_OPERATION_ABORTED (nova's fake libvirt lacks it).
VIR_ERR_OPERATION_ABORTED = 78
#: Seconds a test waits for an outcome before it fails.
WAIT = 20


class NonConverging:
    """nova's fake libvirt Domain patched so a migration never converges.

    ``migrateToURI3`` marks the job running and blocks until
    ``migrateStartPostCopy`` (migration started with VIR_MIGRATE_POSTCOPY:
    the guest is created on the destination and the job completes) or
    ``abortJob`` (the job is cancelled and migrateToURI3 raises libvirt's
    VIR_ERR_OPERATION_ABORTED, code 78, as libvirt 9 does).  ``converge``
    makes the next migration complete at once (stock behaviour of nova's
    LibvirtMigrationMixin).  Calls are recorded with ``time.monotonic()``.
    """

    def __init__(self, case: LmcapsApiTestBase) -> None:
        self.case = case
        self.converge = False
        self.started: float | None = None
        self.calls: list[tuple[str, float]] = []
        self._acts: queue.Queue[str] = queue.Queue()
        self._flags = 0
        self._lock = threading.Lock()

    def install(self) -> None:
        # plain functions: the Domain is their first argument
        for name, method in (('migrateToURI3', self._migrate),
                             ('migrateStartPostCopy', self._postcopy),
                             ('abortJob', self._abort)):
            self.case.useFixture(fixtures.MonkeyPatch(
                f'nova.tests.fixtures.libvirt.Domain.{name}',
                lambda domain, *args, _m=method, **kw: _m(domain, *args,
                                                          **kw)))

    def times(self, name: str) -> list[float]:
        return [t - (self.started or 0.0) for n, t in self.calls if n == name]

    def _migrate(self, domain: Any, dconnuri: str, params: dict,
                 flags: int) -> None:
        self.started = time.monotonic()
        self._flags = flags
        if not self.converge:
            domain._job_type = fakelibvirt.VIR_DOMAIN_JOB_UNBOUNDED
            act = self._acts.get(timeout=WAIT)
            if act == 'abort':
                domain._job_type = fakelibvirt.VIR_DOMAIN_JOB_CANCELLED
                raise fakelibvirt.make_libvirtError(
                    fakelibvirt.libvirtError,
                    "operation aborted: job 'migration out' canceled by "
                    "client", error_code=VIR_ERR_OPERATION_ABORTED,
                    error_domain=fakelibvirt.VIR_FROM_QEMU)
        dest = self.case.computes['dest'].driver._host.get_connection()
        dest.createXML(params['destination_xml'], 0)
        uuid = etree.fromstring(params['destination_xml']).find('./uuid').text
        src = self.case.computes['src'].driver._host.get_connection()
        src.lookupByUUIDString(uuid).complete_job()

    def _postcopy(self, domain: Any, flags: int = 0) -> None:
        with self._lock:
            self.calls.append(('postcopy', time.monotonic()))
        if not self._flags & fakelibvirt.VIR_MIGRATE_POSTCOPY:
            raise fakelibvirt.make_libvirtError(
                fakelibvirt.libvirtError,
                'switching to post-copy requires migration to be started '
                'with VIR_MIGRATE_POSTCOPY flag',
                error_code=fakelibvirt.VIR_ERR_OPERATION_INVALID)
        self._acts.put('postcopy')

    def _abort(self, domain: Any) -> None:
        with self._lock:
            self.calls.append(('abort', time.monotonic()))
        self._acts.put('abort')


class LmcapsApiTestBase(libvirt_base.ServersTestBase,
                        integrated_helpers.InstanceHelperMixin):
    """Two libvirt computes, nova's API with lmcaps's filter, hooks on."""

    ADMIN_API = True
    microversion = 'latest'
    #: casts stay casts: the API answers 202 before the conductor runs
    CAST_AS_CALL = False
    PERMIT_POST_COPY = True

    def setUp(self) -> None:
        # before the base class builds nova's OSAPIFixture from the file
        self.pipeline = self.useFixture(lmcaps_fixtures.ApiPipeline(CONF))
        self.flags(live_migration_permit_post_copy=self.PERMIT_POST_COPY,
                   live_migration_completion_timeout=800,
                   live_migration_timeout_action='abort', group='libvirt')
        super().setUp()
        self._request_ids_from_environ()
        self.useFixture(lmcaps_fixtures.NovaHooks())
        self.libvirt_job = NonConverging(self)
        self.libvirt_job.install()
        self.migration_done = threading.Event()
        self._watch_source_migration()
        self.start_compute(hostname='src')
        self.start_compute(hostname='dest')
        self.server = self._create_server(host='src', networks='none')
        self.assertEqual('src', self.server['OS-EXT-SRV-ATTR:host'])

    # nova's helpers wait 10 x 0.5 s; on a loaded 2-core machine a boot
    # or a migration can take longer: wait up to WAIT seconds.
    def _wait_for_state_change(self, server: dict, expected_status: str,
                               max_retries: int = WAIT * 2,
                               wait_for_fault_key: bool = True) -> dict:
        return super()._wait_for_state_change(
            server, expected_status, max_retries, wait_for_fault_key)

    def _wait_for_server_parameter(self, server: dict, expected_params: dict,
                                   max_retries: int = WAIT * 2,
                                   **kwargs: Any) -> dict:
        return super()._wait_for_server_parameter(
            server, expected_params, max_retries, **kwargs)

    def _wait_for_migration_status(self, server: dict,
                                   expected_statuses: list[str]) -> dict:
        deadline = time.monotonic() + WAIT
        while True:
            try:
                return super()._wait_for_migration_status(
                    server, expected_statuses)
            except AssertionError:
                if time.monotonic() > deadline:
                    raise

    def _watch_source_migration(self) -> None:
        """Set :attr:`migration_done` when the source compute's
        ``_do_live_migration`` returned or raised."""
        from nova.compute import manager
        original = manager.ComputeManager._do_live_migration

        def watched(compute: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return original(compute, *args, **kwargs)
            finally:
                self.migration_done.set()
        self.useFixture(fixtures.MonkeyPatch(
            'nova.compute.manager.ComputeManager._do_live_migration',
            watched))

    def _request_ids_from_environ(self) -> None:
        """The request context takes its ids from the environ, as
        ``RequestContext.from_environ`` does in nova-api (the fixture's stub
        of NovaKeystoneContext would make a fresh request id)."""
        def create_context(env: dict, **kwargs: Any) -> Any:
            user_id = env['HTTP_X_AUTH_USER']
            return nova_context.RequestContext(
                user_id, env['HTTP_X_AUTH_PROJECT_ID'],
                is_admin=user_id == 'admin',
                roles=env['HTTP_X_ROLES'].split(','),
                request_id=env.get('openstack.request_id'),
                global_request_id=env.get('openstack.global_request_id'),
                **kwargs)
        self.useFixture(fixtures.MonkeyPatch(
            'nova.api.auth.NovaKeystoneContext._create_context',
            create_context))

    def migrate_live(self, api: Any = None, status: list[int] | None = None,
                     **fields: Any) -> api_client.APIResponse:
        """POST os-migrateLive to ``dest`` with ``fields`` added."""
        api = api or self.api
        body = {'os-migrateLive': {'host': 'dest', 'block_migration': 'auto',
                                   **fields}}
        return api.api_post(f"/servers/{self.server['id']}/action", body,
                            check_response_status=status or [202])

    def action_events(self, request_id: str) -> dict[str, dict]:
        action = self.api.api_get(
            f"/servers/{self.server['id']}/os-instance-actions/"
            f"{request_id}").body['instanceAction']
        self.assertEqual('live-migration', action['action'])
        return {ev['event']: ev for ev in action['events']}

    def wait_for_event(self, request_id: str, name: str) -> dict:
        deadline = time.monotonic() + WAIT
        while True:
            events = self.action_events(request_id)
            if name in events and events[name]['finish_time']:
                return events[name]
            if time.monotonic() > deadline:
                self.fail(f'no finished {name} in {sorted(events)}')
            time.sleep(0.1)

    def stashed(self) -> dict:
        ctx = nova_context.get_admin_context()
        inst = objects.Instance.get_by_uuid(
            ctx, self.server['id'], expected_attrs=['system_metadata'])
        text = inst.system_metadata.get(nova_request.SYSMETA_KEY)
        return {} if text is None else json.loads(text)


class TimeoutActionTest(LmcapsApiTestBase):

    def test_force_complete_switches_to_postcopy_at_the_deadline(self) -> None:
        resp = self.migrate_live(timeout_seconds=1,
                                 on_timeout='force_complete')
        request_id = resp.headers['x-openstack-request-id']
        self.assertEqual(
            {'request_id': request_id,
             'values': {'completion_timeout': 1,
                        'timeout_action': 'force_complete'}},
            self.stashed())
        self._wait_for_migration_status(self.server, ['completed'])
        server = self._wait_for_state_change(self.server, 'ACTIVE')
        self.assertEqual('dest', server['OS-EXT-SRV-ATTR:host'])
        switches = self.libvirt_job.times('postcopy')
        self.assertEqual(1, len(switches), self.libvirt_job.calls)
        # at the deadline (1 s), on one of nova's 0.5 s passes (the host
        # default would be 1600 s), with slack for a loaded machine
        self.assertGreaterEqual(switches[0], 1.0)
        self.assertLess(switches[0], 2.5)
        self.assertEqual([], self.libvirt_job.times('abort'))
        event = self.wait_for_event(request_id,
                                    lmcaps_events.TIMEOUT_ACTION)
        self.assertIn('attempt 1: postcopy', event['details'])
        self.assertNotIn('attempt 2', event['details'])

    def abort_outcome(self, request_id: str) -> tuple[str, str, str]:
        """(server status, host, migration status) once nova's source
        compute finished the live migration."""
        self.assertTrue(self.migration_done.wait(WAIT))
        server = self.api.get_server(self.server['id'])
        migration = self._wait_for_migration_status(
            self.server, ['cancelled', 'error', 'completed', 'failed'])
        return (server['status'], server['OS-EXT-SRV-ATTR:host'],
                migration['status'])

    def test_abort_ends_active_on_the_source(self) -> None:
        resp = self.migrate_live(timeout_seconds=1, on_timeout='abort')
        request_id = resp.headers['x-openstack-request-id']
        event = self.wait_for_event(request_id, lmcaps_events.TIMEOUT_ACTION)
        aborts = self.libvirt_job.times('abort')
        self.assertGreaterEqual(aborts[0], 1.0)
        self.assertLess(aborts[0], 2.5)
        self.assertIn('attempt 1: abort', event['details'])
        self.assertNotIn('attempt 2', event['details'])
        self.assertEqual([], self.libvirt_job.times('postcopy'))
        status, host, migration = self.abort_outcome(request_id)
        # libvirt ends the migrate call with error 78 after an abort; nova
        # 34 re-raises it once its monitor rolled back, which puts the
        # instance into ERROR (also for an abort through nova's own API,
        # below).  After lmcaps's own abort that error is the abort's end:
        # the server stays ACTIVE on the source.  The migration record is
        # what nova's monitor concluded from the job: nova's fake libvirt
        # has no completed-job statistics, so nova reads the ended job as
        # failed ('error'); real libvirt reports it cancelled.
        self.assertEqual(('ACTIVE', 'src'), (status, host))
        self.assertIn(migration, ('cancelled', 'error'))
        stock = self.stock_abort_outcome()
        self.assertEqual(('ERROR', 'src'), stock[:2])

    def stock_abort_outcome(self) -> tuple[str, str, str]:
        self._reset_server()
        self.migration_done.clear()
        resp = self.migrate_live()
        running = self._wait_for_migration_status(self.server, ['running'])
        self.api.api_delete(f"/servers/{self.server['id']}/migrations/"
                            f"{running['id']}")
        return self.abort_outcome(resp.headers['x-openstack-request-id'])

    def _reset_server(self) -> None:
        """A second server on src."""
        self.server = self._create_server(host='src', networks='none')


class RefusedRequestTest(LmcapsApiTestBase):
    PERMIT_POST_COPY = False

    def test_postcopy_not_permitted_is_refused_before_migrating(self) -> None:
        resp = self.migrate_live(timeout_seconds=1,
                                 on_timeout='force_complete',
                                 force_complete_mode='postcopy')
        request_id = resp.headers['x-openstack-request-id']
        migration = self._wait_for_migration_status(self.server, ['error'])
        self.assertEqual('error', migration['status'])
        server = self._wait_for_server_parameter(
            self.server, {'status': 'ACTIVE', 'OS-EXT-STS:task_state': None})
        self.assertEqual('src', server['OS-EXT-SRV-ATTR:host'])
        event = self.wait_for_event(request_id, lmcaps_events.PRECHECK)
        self.assertEqual('Error', event['result'])
        # the summary names the failed check; the reasons are in full in
        # the event's traceback field, which nova keeps whole
        self.assertIn('post_copy', event['details'])
        self.assertLess(len(event['details']), 255)
        self.assertIn('force_complete_mode postcopy', event['traceback'])
        self.assertIn('[libvirt] live_migration_permit_post_copy',
                      event['traceback'])
        self.assertIsNone(self.libvirt_job.started)


class ApiAnswersTest(LmcapsApiTestBase):

    def test_member_gets_403(self) -> None:
        resp = self.migrate_live(api=self.api_fixture.api, status=[403],
                                 timeout_seconds=600)
        self.assertEqual(
            {'forbidden': {'code': 403, 'message':
                           f"Policy doesn't allow {nova_api.RULE} to be "
                           f"performed."}}, resp.body)
        self.assertEqual({}, self.stashed())

    def test_project_manager_needs_the_lmcaps_rule(self) -> None:
        # nova 34 lets a project manager live-migrate without a host; the
        # lmcaps fields need lmcaps:migrate_live:timeout (admin by default)
        manager = api_client.TestOpenStackClient(
            'manager', self.api_fixture.base_url,
            project_id=self.api_fixture.project_id,
            roles=['reader', 'member', 'manager'])
        manager.microversion = self.microversion
        body = {'os-migrateLive': {'host': None, 'block_migration': 'auto',
                                   'on_timeout': 'abort'}}
        uri = f"/servers/{self.server['id']}/action"
        resp = manager.api_post(uri, body, check_response_status=[403])
        self.assertIn(nova_api.RULE, resp.body['forbidden']['message'])
        self.policy.set_rules({nova_api.RULE: 'role:manager'},
                              overwrite=False)
        self.libvirt_job.converge = True
        resp = manager.api_post(uri, body, check_response_status=[202])
        self.assertEqual(resp.headers['x-openstack-request-id'],
                         self.stashed()['request_id'])
        self._wait_for_migration_status(self.server, ['completed'])

    def test_bad_values_get_400_naming_the_field(self) -> None:
        for fields, wanted in (
                ({'timeout_seconds': -1}, 'timeout_seconds: -1 is out of '
                                          'range; allowed: integer from 0'),
                ({'on_timeout': 'later'}, "on_timeout: 'later' is not "
                 'allowed; allowed values: abort, force_complete'),
                ({'force_complete_mode': 'fast'}, "force_complete_mode: "
                 "'fast' is not allowed; allowed values: auto, postcopy, "
                 'pause')):
            resp = self.migrate_live(status=[400], **fields)
            self.assertEqual(400, resp.body['badRequest']['code'])
            self.assertIn(wanted, resp.body['badRequest']['message'])
        self.assertEqual([], self.api.api_get(
            f"/os-migrations?instance_uuid={self.server['id']}"
        ).body['migrations'])
        self.assertEqual({}, self.stashed())

    def test_without_the_fields_nova_is_unchanged(self) -> None:
        self.libvirt_job.converge = True
        resp = self.migrate_live()
        request_id = resp.headers['x-openstack-request-id']
        self._wait_for_migration_status(self.server, ['completed'])
        server = self._wait_for_state_change(self.server, 'ACTIVE')
        self.assertEqual('dest', server['OS-EXT-SRV-ATTR:host'])
        self.assertEqual({}, self.stashed())
        names = set(self.action_events(request_id))
        self.assertEqual(set(), {n for n in names if n.startswith('lmcaps')})
        # nova's own validation still answers for nova's fields
        resp = self.migrate_live(status=[400], host='src', force='yes')
        self.assertIn('badRequest', resp.body)
