"""vmware: vMotion through vCenter with oslo.vmware (RelocateVM_Task).

A migration is a ``RelocateVM_Task`` whose RelocateSpec names the target
HostSystem (and its cluster's resource pool when the host is in another
compute resource; a datastore only for a block migration); its reference is
the task's managed object id (``task-123``).  Progress is the task's
``info.state`` and ``info.progress`` (a percentage); abort is ``CancelTask``
(vSphere API reference, vim.Task.CancelTask: NotSupported when the task is
not cancelable, InvalidState once it completed or was cancelled; a cancelled
task ends ``error`` with RequestCanceled).  Where the VM is and whether it
runs is read from vCenter: ``runtime.host`` and ``runtime.powerState``.

Abort is declared *partial*: vSphere cancels a task only while
``TaskInfo.cancelable`` is true, and no VMware document confirms that a
powered-on vMotion always is (the Host Client documents cancelling "migrating
a powered off VM" only).  The driver reads ``cancelable`` before it calls
CancelTask and refuses with OperationRefused when it is false.  vSphere has
no post-copy switch and no pause for a running vMotion: both force-complete
modes are missing.  A cancel that races the task's completion (``success``
seen, or InvalidState) is reported as the completion it was, not an error.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from oslo_config import cfg

from lmcaps import capabilities as caps
from lmcaps import exception
from lmcaps.drivers import base
from lmcaps.drivers.vmware import session as vsession

LOG = logging.getLogger(__name__)

MIB = 1024 ** 2
_MOREF = re.compile(r'^(vm|host|task)-\d+$')
_POWER = {'poweredOn': base.RunState.RUNNING,
          'poweredOff': base.RunState.SHUT_OFF,
          'suspended': base.RunState.SHUT_OFF}

CANCEL_CONDITION = ('TaskInfo.cancelable is true on the RelocateVM_Task '
                    '(read before CancelTask; NotSupported otherwise)')


class VMwareDriver(base.LiveMigrationDriver):
    """vMotion (RelocateVM_Task) on vCenter, abort by CancelTask."""

    name = 'vmware'

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        super().__init__(conf)
        self._conn: vsession.Connection | None = None

    @classmethod
    def list_opts(cls) -> list[cfg.Opt]:
        return list(vsession.OPTS)

    @classmethod
    def declare(cls) -> caps.Declaration:
        no_call = 'vSphere has no call that {} during a vMotion'
        return caps.Declaration('vmware', 'VMware vCenter (vMotion)', {
            caps.Operation.ABORT: caps.partial(
                condition=CANCEL_CONDITION,
                notes='CancelTask on the RelocateVM_Task; the VM stays on '
                      'the source host'),
            caps.Operation.FORCE_COMPLETE_POSTCOPY: caps.missing(
                no_call.format('switches to post-copy')),
            caps.Operation.FORCE_COMPLETE_PAUSE: caps.missing(
                no_call.format('pauses the guest')),
            caps.Operation.PER_INSTANCE_TIMEOUT: caps.complete(
                'enforced by the lmcaps monitor with CancelTask'),
        })

    # -- connection ---------------------------------------------------------

    def connect(self) -> None:
        if self._conn is None:
            self._conn = vsession.Connection(self.name, self.options)

    def adopt(self, session: Any, where: str) -> None:
        """Use a session the embedding host logged in (nova's driver holds
        one); :meth:`close` then leaves it logged in.

        :param session: an ``oslo_vmware.api.VMwareAPISession``.
        :param where: the vCenter address, for error messages.
        """
        self.close()
        self._conn = vsession.Connection.borrow(self.name, session, where)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @property
    def conn(self) -> vsession.Connection:
        self.connect()
        assert self._conn is not None
        return self._conn

    def _guard(self, what: str, call: Any) -> Any:
        """Run a backend call; oslo.vmware errors become one DriverError."""
        try:
            return call()
        except exception.LmcapsException:
            raise
        except Exception as exc:
            if vsession.NOT_FOUND in vsession.fault_names(exc):
                raise
            raise self.conn.error(what, exc) from None

    # -- inventory ----------------------------------------------------------

    def _find_vm(self, instance: str) -> Any:
        """The VirtualMachine moref: by moref, name or config.instanceUuid."""
        if _MOREF.match(instance) and instance.startswith('vm-'):
            return self.conn.moref(instance, 'VirtualMachine')
        for ref, values in self._guard('find VM', lambda: self.conn.find(
                'VirtualMachine', ['name', 'config.instanceUuid'])):
            if instance in (values.get('name'),
                            values.get('config.instanceUuid')):
                return ref
        raise exception.DriverError(
            driver=self.name, reason=f'no VirtualMachine {instance!r} on '
                                     f'{self.conn.where}')

    def _find_host(self, dest: base.Destination) -> Any:
        if dest.address.startswith('host-') and _MOREF.match(dest.address):
            return self.conn.moref(dest.address, 'HostSystem')
        wanted = dest.address or dest.host
        for ref, values in self._guard('find host', lambda: self.conn.find(
                'HostSystem', ['name'])):
            if values.get('name') == wanted:
                return ref
        raise exception.DriverError(
            driver=self.name, reason=f'no HostSystem {wanted!r} on '
                                     f'{self.conn.where}')

    def guest_data_gib(self, spec: base.MigrationSpec) -> float:
        vm = self._find_vm(spec.instance)
        mb = self._guard('read VM', lambda: self.conn.props(
            vm, ['config.hardware.memoryMB'])).get('config.hardware.memoryMB')
        return base.data_gib(int(mb or 0) * MIB)

    def prepare_destination(self, spec: base.MigrationSpec
                            ) -> base.Destination:
        """Resolve the target host, its compute resource's root resource
        pool and its datastores (morefs) into ``Destination.data``.

        :raises: DriverError if the host is not known to vCenter.
        """
        host = self._find_host(spec.destination)
        values = self._guard('read host', lambda: self.conn.props(
            host, ['name', 'parent', 'datastore']))
        data: dict[str, Any] = dict(spec.destination.data)
        data['host'] = host.value
        parent = values.get('parent')
        if parent is not None:
            data['compute_resource'] = parent.value
            pool = self._guard('read compute resource', lambda: self.conn.prop(
                parent, 'resourcePool'))
            if pool is not None:
                data['pool'] = pool.value
        stores = getattr(values.get('datastore'), 'ManagedObjectReference',
                         None) or []
        data['datastores'] = [ds.value for ds in stores]
        return base.Destination(host=values.get('name') or
                                spec.destination.host,
                                address=host.value, data=data)

    # -- starting -------------------------------------------------------------

    def _relocate_spec(self, vm: Any, dest: base.Destination,
                       spec: base.MigrationSpec) -> Any:
        factory = self.conn.factory()
        relocate = factory.create('ns0:VirtualMachineRelocateSpec')
        relocate.host = self.conn.moref(dest.data['host'], 'HostSystem')
        vm_pool = self._guard('read VM', lambda: self.conn.props(
            vm, ['resourcePool'])).get('resourcePool')
        dest_cr = dest.data.get('compute_resource')
        same_cr = False
        if vm_pool is not None and dest_cr:
            owner = self._guard('read pool', lambda: self.conn.prop(
                vm_pool, 'owner'))
            same_cr = owner is not None and owner.value == dest_cr
        if not same_cr and dest.data.get('pool'):
            relocate.pool = self.conn.moref(dest.data['pool'], 'ResourcePool')
        datastore = spec.options.get('datastore') or (
            spec.block_migration and (dest.data.get('datastores') or [None])[0])
        if datastore:
            relocate.datastore = self.conn.moref(datastore, 'Datastore')
        return relocate

    def _start(self, spec: base.MigrationSpec) -> base.Migration:
        vm = self._find_vm(spec.instance)
        dest = spec.destination
        if 'host' not in dest.data:
            dest = self.prepare_destination(spec)
        source = self._guard('read VM', lambda: self.conn.prop(
            vm, 'runtime.host'))
        relocate = self._relocate_spec(vm, dest, spec)
        task = self._guard('RelocateVM_Task', lambda: self.conn.call(
            'RelocateVM_Task', vm, spec=relocate,
            priority='defaultPriority'))
        LOG.info('vmware: RelocateVM_Task %s moves %s from %s to %s',
                 task.value, vm.value, getattr(source, 'value', ''),
                 dest.data['host'])
        return self.track(spec, task.value, vm.value,
                          getattr(source, 'value', ''), dest.data['host'])

    def track(self, spec: base.MigrationSpec, task: str, vm: str,
              source_host: str, dest_host: str,
              data_gib: float = 2.0) -> base.Migration:
        """A handle on a RelocateVM_Task that has just been created, by this
        driver or by the embedding host (nova's vmops), for the monitor.

        :param task: the task's moref value (``task-123``).
        :param vm, source_host, dest_host: morefs (``vm-1``, ``host-2``) of
            the VM, the host it runs on and the RelocateSpec's host.
        :param data_gib: the data the per-GiB timeout is based on.
        """
        return base.Migration(
            spec=spec, data_gib=data_gib, reference=task,
            backend={'cancel_sent': False},
            extra={'vm': vm, 'dest_host': dest_host,
                   'source_host': source_host})

    def _reattach(self, ref: base.MigrationRef) -> base.Migration:
        probe = base.Migration(spec=ref.spec, data_gib=ref.data_gib,
                               reference=ref.reference)
        info = self._task_info(probe)     # MigrationGone if vCenter has none
        entity = getattr(getattr(info, 'entity', None), 'value', None)
        if ref.extra.get('vm') and entity and entity != ref.extra['vm']:
            raise exception.MigrationGone(
                self.name, ref.reference, f'the task belongs to {entity}')
        return base.Migration(spec=ref.spec, data_gib=ref.data_gib,
                              reference=ref.reference,
                              backend={'cancel_sent': False},
                              extra=dict(ref.extra))

    # -- observing ----------------------------------------------------------

    def _task_info(self, migration: base.Migration) -> Any:
        task = self.conn.moref(migration.reference, 'Task')
        try:
            return self._guard('read task', lambda: self.conn.prop(
                task, 'info'))
        except exception.LmcapsException:
            raise
        except Exception as exc:
            raise exception.MigrationGone(self.name, migration.reference,
                                          vsession.first_line(exc)) from None

    def _progress(self, migration: base.Migration) -> base.Progress:
        info = self._task_info(migration)
        state = str(info.state)
        cancelled = bool(getattr(info, 'cancelled', False))
        pct = getattr(info, 'progress', None)
        fraction = None if pct is None else max(0.0, min(1.0, pct / 100.0))
        raw = state + (' (cancel requested)' if cancelled else '')
        if state == 'success':
            return base.Progress(base.Phase.COMPLETED, 1.0, raw)
        if state == 'error':
            error = getattr(info, 'error', None)
            fault = type(getattr(error, 'fault', None)).__name__
            message = str(getattr(error, 'localizedMessage', '') or fault)
            phase = (base.Phase.CANCELLED if cancelled or
                     fault == vsession.REQUEST_CANCELED else base.Phase.FAILED)
            return base.Progress(phase, fraction, raw, message=message)
        if cancelled:
            return base.Progress(base.Phase.CANCELLING, fraction, raw)
        if state == 'queued':
            return base.Progress(base.Phase.PREPARING, fraction, raw)
        return base.Progress(base.Phase.PRECOPY, fraction, raw)

    def _locate(self, migration: base.Migration) -> base.GuestLocation:
        vm = self.conn.moref(migration.extra['vm'], 'VirtualMachine')
        try:
            values = self.conn.props(vm, ['runtime.host',
                                          'runtime.powerState'])
        except Exception as exc:
            if vsession.NOT_FOUND in vsession.fault_names(exc):
                return base.GuestLocation(base.GuestHost.NOWHERE,
                                          base.RunState.UNKNOWN,
                                          'vCenter has no such VM')
            return base.GuestLocation.unknown(
                self.conn.error('locate', exc).message)
        host = getattr(values.get('runtime.host'), 'value', '')
        power = str(values.get('runtime.powerState', ''))
        state = _POWER.get(power, base.RunState.UNKNOWN)
        if host == migration.extra.get('source_host'):
            return base.GuestLocation(base.GuestHost.SOURCE, state, host)
        if host == migration.extra.get('dest_host'):
            return base.GuestLocation(base.GuestHost.DESTINATION, state, host)
        return base.GuestLocation(base.GuestHost.UNKNOWN, state,
                                  f'on {host or "no host"}, neither source '
                                  f'nor destination')

    # -- acting ---------------------------------------------------------------

    def _abort(self, migration: base.Migration) -> None:
        if migration.backend.get('cancel_sent'):
            return  # vSphere: several cancels are one; send it once
        info = self._task_info(migration)
        if str(info.state) in ('success', 'error'):
            self._ended_before_cancel(migration, info)
            return
        if not getattr(info, 'cancelable', False):
            raise exception.OperationRefused(
                driver=self.name, operation='abort',
                migration=migration.reference,
                reason='vCenter reports TaskInfo.cancelable = false for '
                       'this relocation')
        task = self.conn.moref(migration.reference, 'Task')
        try:
            self.conn.call('CancelTask', task)
        except Exception as exc:
            faults = vsession.fault_names(exc)
            if vsession.INVALID_STATE in faults:
                # Raced the end of the task: completed, or failed by itself.
                self._ended_before_cancel(migration,
                                          self._task_info(migration))
                return
            if vsession.NOT_SUPPORTED in faults:
                raise exception.OperationRefused(
                    driver=self.name, operation='abort',
                    migration=migration.reference,
                    reason='CancelTask: NotSupported (the task is not '
                           'cancelable)') from None
            raise self.conn.error('CancelTask', exc) from None
        migration.backend['cancel_sent'] = True

    def _ended_before_cancel(self, migration: base.Migration,
                             info: Any) -> None:
        """A task that ended before our cancel: completed is no error (the
        outcome says completed); a failure is not ours to call cancelled.

        :raises: OperationRefused when the task ended other than success.
        """
        state = str(info.state)
        if state == 'success':
            LOG.info('vmware: %s already completed; nothing to cancel',
                     migration.reference)
            return
        raise exception.OperationRefused(
            driver=self.name, operation='abort',
            migration=migration.reference,
            reason=f'the relocation already ended ({state}) before the '
                   f'cancel')
