"""A nova test base with a real DB, nova's fake libvirt and lmcaps enabled."""

from __future__ import annotations

import collections
from typing import Any
from unittest import mock

from nova.compute import manager as compute_manager
from nova.compute import task_states
from nova.compute import vm_states
from nova import context as nova_context
from nova import objects
from nova import test
from nova.tests import fixtures as nova_fixtures
from nova.tests.fixtures import libvirt as fakelibvirt
from nova.tests.unit import fake_flavor
from nova.virt import fake
from nova.virt.libvirt import driver as libvirt_driver
from nova.virt.libvirt import guest as libvirt_guest
from oslo_utils.fixture import uuidsentinel as uuids

from lmcaps import checks as lmcaps_checks
from lmcaps import events as lmcaps_events
from tests.nova import fixtures as lmcaps_fixtures

#: Job types of nova's fake libvirt, by short name.
JOB = {
    'none': fakelibvirt.VIR_DOMAIN_JOB_NONE,
    'running': fakelibvirt.VIR_DOMAIN_JOB_UNBOUNDED,
    'completed': fakelibvirt.VIR_DOMAIN_JOB_COMPLETED,
    'failed': fakelibvirt.VIR_DOMAIN_JOB_FAILED,
    'cancelled': fakelibvirt.VIR_DOMAIN_JOB_CANCELLED,
}


class NovaLmcapsTestCase(test.TestCase):
    """nova's DB-backed TestCase + LibvirtFixture + lmcaps hooks.

    :attr:`drvr` is nova's real LibvirtDriver on the fake libvirt, with its
    migration flags parsed as in init_host.
    """

    #: [libvirt] options for the test; override per class.
    LIBVIRT_FLAGS: dict[str, Any] = {
        'live_migration_completion_timeout': 800,
        'live_migration_timeout_action': 'abort',
        'live_migration_permit_post_copy': True,
    }

    def setUp(self) -> None:
        super().setUp()
        self.useFixture(nova_fixtures.LibvirtFixture())
        self.useFixture(lmcaps_fixtures.NovaHooks())
        self.flags(group='libvirt', **self.LIBVIRT_FLAGS)
        self.flags(host='source-host')
        self.context = nova_context.get_admin_context()
        self.drvr = libvirt_driver.LibvirtDriver(fake.FakeVirtAPI(), False)
        self.drvr._parse_migration_flags()

    def make_instance(self, extra_specs: dict[str, str] | None = None,
                      system_metadata: dict[str, str] | None = None,
                      metadata: dict[str, str] | None = None,
                      uuid: str = uuids.instance) -> objects.Instance:
        """An ACTIVE, migrating instance in the DB with its live-migration
        instance action started under ``self.context.request_id``."""
        flavor = fake_flavor.fake_flavor_obj(
            self.context, memory_mb=2048, extra_specs=extra_specs or {},
            expected_attrs=['extra_specs'])
        inst = objects.Instance(
            context=self.context, uuid=uuid, project_id='fake',
            user_id='fake', host='source-host',
            vm_state=vm_states.ACTIVE, task_state=task_states.MIGRATING,
            power_state=1, flavor=flavor, old_flavor=None, new_flavor=None,
            instance_type_id=flavor.id, numa_topology=None,
            system_metadata=system_metadata or {}, metadata=metadata or {},
            pci_requests=None)
        inst.create()
        objects.InstanceAction.action_start(
            self.context, inst.uuid, lmcaps_events.LIVE_MIGRATION,
            want_result=False)
        return inst

    def events(self, instance: objects.Instance) -> dict[str, Any]:
        """The events of the live-migration action, by name."""
        action = objects.InstanceAction.get_by_request_id(
            self.context, instance.uuid, self.context.request_id)
        return {ev.event: ev for ev in
                objects.InstanceActionEventList.get_by_action(
                    self.context, action.id)}

    def all_events(self, instance: objects.Instance) -> list[Any]:
        """Every event of the live-migration action, oldest first."""
        action = objects.InstanceAction.get_by_request_id(
            self.context, instance.uuid, self.context.request_id)
        return sorted(objects.InstanceActionEventList.get_by_action(
            self.context, action.id), key=lambda ev: ev.id)


class PreCheckTestCase(NovaLmcapsTestCase):
    """nova's ComputeManager over :attr:`drvr`, for the source pre-check;
    nova's storage checks, which need files and domains, are stubbed."""

    def setUp(self) -> None:
        super().setUp()
        self.compute = compute_manager.ComputeManager()
        self.compute.driver = self.drvr
        for name, value in (('_check_shared_storage_test_file', True),
                            ('_is_shared_block_storage', False),
                            ('_get_all_assigned_mediated_devices', {})):
            patcher = mock.patch.object(libvirt_driver.LibvirtDriver, name,
                                        return_value=value)
            patcher.start()
            self.addCleanup(patcher.stop)

    def check(self, instance: objects.Instance) -> objects.LiveMigrateData:
        dest = objects.LibvirtLiveMigrateData(
            filename='probe', image_type='default', block_migration=False,
            graphics_listen_addr_vnc='127.0.0.1',
            graphics_listen_addr_spice='127.0.0.1',
            serial_listen_addr='127.0.0.1')
        return self.compute.check_can_live_migrate_source(
            self.context, instance, dest)

    def reloaded(self, instance: objects.Instance) -> objects.Instance:
        return objects.Instance.get_by_uuid(self.context, instance.uuid)

    def named(self, instance: objects.Instance,
              name: str) -> list[objects.InstanceActionEvent]:
        """Every event called ``name`` of the live-migration action."""
        action = objects.InstanceAction.get_by_request_id(
            self.context, instance.uuid, self.context.request_id)
        return [ev for ev in objects.InstanceActionEventList.get_by_action(
            self.context, action.id) if ev.event == name]

    def spy_evaluate(self) -> list:
        """The contexts the pre-checks are evaluated on (they still run)."""
        real = lmcaps_checks.PreCheckRunner.evaluate
        calls = []

        def evaluate(runner, ctx):
            calls.append(ctx)
            return real(runner, ctx)

        patcher = mock.patch.object(lmcaps_checks.PreCheckRunner, 'evaluate',
                                    evaluate)
        patcher.start()
        self.addCleanup(patcher.stop)
        return calls


class MonitorRun:
    """Drives nova's ``_live_migration_monitor`` through a job-info script.

    ``script`` is a list of ``(seconds, job)`` with ``job`` a key of
    :data:`JOB`: each pass of nova's loop reads the next entry, and the
    clock (``time.time``) reads ``seconds`` from then on.  Calls of
    libvirt's post-copy, abort and suspend are recorded with the clock.
    """

    def __init__(self, case: NovaLmcapsTestCase, instance: objects.Instance,
                 script: list[tuple[float, str]],
                 postcopy_error: bool = False) -> None:
        self.case = case
        self.instance = instance
        self.script = list(script)
        self.clock = 0.0
        self.calls: list[tuple[str, float]] = []
        self.postcopy_error = postcopy_error
        self.post_method = mock.Mock(name='post_method')
        self.recover_method = mock.Mock(name='recover_method')
        self.migration = objects.Migration(context=case.context, id=1,
                                           status='running')

    def _job_info(self) -> libvirt_guest.JobInfo:
        case = self.case
        case.assertTrue(self.script, 'the monitor asked past the script')
        self.clock, job = self.script.pop(0)
        if job in ('completed', 'failed', 'cancelled'):
            self.future.set_result(None)
        return libvirt_guest.JobInfo(type=JOB[job])

    def _record(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> None:
            self.calls.append((name, self.clock))
            if name == 'postcopy' and self.postcopy_error:
                raise fakelibvirt.make_libvirtError(
                    fakelibvirt.libvirtError, 'post-copy refused',
                    error_code=fakelibvirt.VIR_ERR_OPERATION_INVALID)
        return call

    def times(self, name: str) -> list[float]:
        return [t for n, t in self.calls if n == name]

    def run(self) -> None:
        import futurist
        case = self.case
        drvr = case.drvr
        self.future = futurist.Future()
        drvr.active_migrations[self.instance.uuid] = collections.deque()
        migrate_data = objects.LibvirtLiveMigrateData(
            migration=self.migration, block_migration=False)
        patches = [
            mock.patch.object(fakelibvirt.Connection, '_mark_running'),
            mock.patch.object(libvirt_guest.Guest, 'get_job_info',
                              side_effect=self._job_info),
            mock.patch('time.time', side_effect=lambda: self.clock),
            mock.patch('time.sleep'),
            mock.patch.object(fakelibvirt.virDomain, 'migrateStartPostCopy',
                              side_effect=self._record('postcopy'),
                              create=True),
            mock.patch.object(fakelibvirt.virDomain, 'abortJob',
                              side_effect=self._record('abort')),
            mock.patch.object(fakelibvirt.virDomain, 'suspend',
                              side_effect=self._record('pause')),
            mock.patch.object(objects.Migration, 'save'),
            mock.patch.object(objects.Instance, 'save'),
        ]
        for patch in patches:
            patch.start()
            case.addCleanup(patch.stop)
        dom = fakelibvirt.Domain(drvr._get_connection(), '<domain/>', True)
        guest = libvirt_guest.Guest(dom)
        drvr._live_migration_monitor(
            case.context, self.instance, guest, 'dest-host',
            self.post_method, self.recover_method, False, migrate_data,
            self.future, [])
        for patch in reversed(patches):
            patch.stop()
