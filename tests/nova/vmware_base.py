"""nova's real VMwareVCDriver on govmomi's vcsim, with a DB and lmcaps on.

The driver is nova 34's own, constructed as nova-compute does, talking to
vcsim (``tests/functional/vmware/vcsim.py``) through nova's oslo.vmware
session.  Two things differ from a real vCenter and are patched at
construction only:

* nova's ``VMwareAPISession`` takes its connection defaults from
  ``CONF.vmware`` when the module is imported, and vcsim serves no
  ``/sdk/vimService.wsdl``: the session gets vcsim's address and lmcaps's
  WSDL (``tools/vcsim/wsdl``) from ``oslo_vmware``'s constructor;
* vcsim (govmomi 0.24.2) has no ExtensionManager:
  ``_register_openstack_extension`` is skipped.

nova finds the instance's VM through its own moref cache
(``vm_util.vm_ref_cache_update``), as after a spawn.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from unittest import mock

import fixtures
from nova.compute import task_states
from nova.compute import vm_states
from nova import context as nova_context
from nova.network import model as network_model
from nova import objects
from nova import test
from nova.tests.unit import fake_flavor
from nova.virt import fake
from nova.virt.vmwareapi import driver as vmware_driver
from nova.virt.vmwareapi import vm_util
from oslo_utils.fixture import uuidsentinel as uuids

from lmcaps import events as lmcaps_events
from tests import backend as test_backend
from tests.functional.vmware import vcsim
from tests.nova import fixtures as lmcaps_fixtures

CLUSTER = 'DC0_C0'
#: vcsim's build cache, resolved before nova's fixtures replace $HOME.
CACHE = os.environ.get('LMCAPS_CACHE') or str(
    Path.home() / '.cache' / 'lmcaps')


class VMwareNovaTestCase(test.TestCase):
    """nova's DB-backed TestCase + VMwareVCDriver on vcsim + lmcaps hooks.

    :attr:`drvr` is nova's driver; :attr:`sim` the running vcsim.
    """

    relocate_time = 30.0
    cancelable = True

    def setUp(self) -> None:
        super().setUp()
        ok, reason = vcsim.available()
        test_backend.require(self, ok, f'vcsim: {reason}')
        self.useFixture(fixtures.EnvironmentVariable('LMCAPS_CACHE', CACHE))
        self.sim = self.useFixture(vcsim.Vcsim(
            relocate_time=self.relocate_time, cancelable=self.cancelable))
        self.flags(host_ip=self.sim.host, host_port=self.sim.port,
                   host_username=vcsim.USERNAME, host_password=vcsim.PASSWORD,
                   cluster_name=CLUSTER, task_poll_interval=0.1,
                   api_retry_count=0, group='vmware')
        self.flags(host='source-host')
        self.useFixture(lmcaps_fixtures.NovaHooks())   # registers [lmcaps]
        self.flags(monitor_poll_interval=0.1, group='lmcaps')
        self.context = nova_context.get_admin_context()
        self.drvr = self.make_driver()

    def make_driver(self) -> vmware_driver.VMwareVCDriver:
        from oslo_vmware import api
        sim = self.sim
        real_init = api.VMwareAPISession.__init__

        def init(session: Any, *args: Any, **kwargs: Any) -> None:
            kwargs.update(host=sim.host, port=sim.port, wsdl_loc=sim.wsdl,
                          server_username=vcsim.USERNAME,
                          server_password=vcsim.PASSWORD,
                          task_poll_interval=0.1, api_retry_count=0)
            real_init(session, *args, **kwargs)

        with mock.patch.object(api.VMwareAPISession, '__init__', init), \
                mock.patch.object(vmware_driver.VMwareVCDriver,
                                  '_register_openstack_extension'):
            drvr = vmware_driver.VMwareVCDriver(fake.FakeVirtAPI(),
                                                scheme='http')
        self.addCleanup(drvr._session.logout)
        return drvr

    def make_instance(self, extra_specs: dict[str, str] | None = None
                      ) -> objects.Instance:
        """An ACTIVE, migrating instance in the DB, its live-migration
        action started under ``self.context.request_id``."""
        flavor = fake_flavor.fake_flavor_obj(
            self.context, memory_mb=2048, extra_specs=extra_specs or {},
            expected_attrs=['extra_specs'])
        inst = objects.Instance(
            context=self.context, uuid=uuids.instance, project_id='fake',
            user_id='fake', host='source-host',
            vm_state=vm_states.ACTIVE, task_state=task_states.MIGRATING,
            power_state=1, flavor=flavor, old_flavor=None, new_flavor=None,
            instance_type_id=flavor.id, numa_topology=None,
            system_metadata={}, metadata={}, pci_requests=None,
            info_cache=objects.InstanceInfoCache(
                network_info=network_model.NetworkInfo()))
        inst.create()
        objects.InstanceAction.action_start(
            self.context, inst.uuid, lmcaps_events.LIVE_MIGRATION,
            want_result=False)
        return inst

    def place(self, instance: objects.Instance) -> tuple[str, str, str]:
        """Bind ``instance`` to a vcsim VM that nova will move to another
        host: returns (VM, its host, the host nova's vmops picks), morefs."""
        from oslo_vmware import vim_util
        vmops = self.drvr._vmops
        inv = self.sim.inventory()
        for vm in sorted((v for v in inv['vms'] if f'{CLUSTER}_' in v['name']),
                         key=lambda v: v['name']):
            ref = vim_util.get_moref(vm['ref'], 'VirtualMachine')
            ds = vmops._find_datastore_for_migration(
                instance, ref, self.drvr._cluster_ref, None)
            dest = vmops._find_esx_host(self.drvr._cluster_ref, ds.ref)
            if dest.value != vm['host']:
                vm_util.vm_ref_cache_update(instance.uuid, ref)
                self.addCleanup(vm_util.vm_ref_cache_delete, instance.uuid)
                return vm['ref'], vm['host'], dest.value
        self.fail(f'vcsim has no VM in {CLUSTER} that nova would move: '
                  f'{inv["vms"]}')

    def migrate_data(self) -> objects.VMwareLiveMigrateData:
        """What the destination's check gives (cluster name, datastores)."""
        return objects.VMwareLiveMigrateData(cluster_name=CLUSTER,
                                             datastore_regex='.*')

    def events(self, instance: objects.Instance) -> dict[str, list[Any]]:
        """The events of the live-migration action, by name."""
        action = objects.InstanceAction.get_by_request_id(
            self.context, instance.uuid, self.context.request_id)
        found: dict[str, list[Any]] = {}
        for ev in objects.InstanceActionEventList.get_by_action(
                self.context, action.id):
            found.setdefault(ev.event, []).append(ev)
        return found
