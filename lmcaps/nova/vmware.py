"""lmcaps inside nova's VMware driver (``VMwareVCDriver``, nova 34).

nova's VMware driver live-migrates with one ``RelocateVM_Task``
(``vmops.live_migration`` -> ``vm_util.relocate_vm`` ->
``session._call_method(vim, 'RelocateVM_Task', vm_ref, spec=...)``, then
``session._wait_for_task``) and has no completion timeout and no abort.
With the hooks (:mod:`lmcaps.nova.hooks`):

* **pre-check** — after nova's own ``check_can_live_migrate_source``,
  lmcaps's pre-checks run on this host's declaration (:func:`source_host`):
  lmcaps's vmware declaration, in which both force-complete modes are
  missing (vSphere has no post-copy switch and no pause during a vMotion),
  so a force-complete request is refused with ``MigrationPreCheckError``;
* **deadline** — while ``live_migration`` runs for an instance with a
  completion timeout (:func:`begin`), the ``RelocateVM_Task`` nova creates
  is captured (:meth:`Relocation.relocate`) and watched by lmcaps's timeout
  monitor (:mod:`lmcaps.monitor`) through lmcaps's vmware driver over the
  session nova's driver already holds (:class:`NovaSessionDriver`).  At the
  deadline the monitor cancels it (``CancelTask`` through oslo.vmware, once;
  never while ``info.cancelable`` is false, which is recorded as a refused
  attempt; a task that completed first is left alone);
* **rollback** — nova's ``_wait_for_task`` then raises, and nova's
  ``vmops.live_migration`` calls its ``recover_method`` as for any failed
  relocation.  When lmcaps cancelled the task and vCenter shows the VM on
  the source host, that call is made with ``migration_status='cancelled'``
  (as nova's libvirt driver does after an abort) and the failure is not
  passed on to the compute manager, which would put the instance in ERROR:
  the instance stays ACTIVE on the source.

Where the values come from is :mod:`lmcaps.nova.policy`; the host-wide
default is ``[lmcaps_nova] vmware_completion_timeout_per_gib`` (0 = no
timeout, nova's behaviour) with the action abort, the only one vSphere has.
Events: the monitor's ``lmcaps_live_migration_timeout_action`` (one per
attempt) and ``lmcaps_live_migration_outcome`` in the instance's
``live-migration`` action.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from nova import context as nova_context
from oslo_config import cfg
from oslo_log import log as logging

from lmcaps import capabilities as caps
from lmcaps import latch as latch_mod
from lmcaps import monitor as lmcaps_monitor
from lmcaps import policy as lmcaps_policy
from lmcaps.drivers import base
from lmcaps.drivers import vmware as lmcaps_vmware
from lmcaps.nova import carry
from lmcaps.nova import conf as nova_conf
from lmcaps.nova import events as nova_events
from lmcaps.nova import policy as nova_policy
from lmcaps.nova import precheck

LOG = logging.getLogger(__name__)

#: The vSphere method whose task is captured.
RELOCATE = 'RelocateVM_Task'
#: The only timeout action vSphere can carry out.
ACTION = lmcaps_policy.TimeoutAction.ABORT.value
#: nova's migration status after a cancelled live migration.
CANCELLED = 'cancelled'
#: Seconds, at most, ``live_migration`` waits for the monitor to record the
#: end of a relocation that nova saw end.
END_WAIT = 10.0
MIB = 1024 ** 2
FACT_VCENTER = 'vcenter'


class NovaSessionDriver(lmcaps_vmware.VMwareDriver):
    """lmcaps's vmware driver over the session of nova's VMwareVCDriver.

    :param nova_driver: nova's ``VMwareVCDriver``; its ``_session`` (an
        oslo.vmware session, logged in) is used and never logged out.
    """

    def __init__(self, conf: cfg.ConfigOpts, nova_driver: Any) -> None:
        super().__init__(conf)
        where = f'vCenter {conf.vmware.host_ip}:{conf.vmware.host_port}'
        self.adopt(nova_driver._session, where)

    def _refine(self, declaration: caps.Declaration) -> caps.Declaration:
        try:
            version = str(self.conn.session.vim.service_content.about.version)
        except Exception as exc:    # a fact, not a reason to fail
            version = f'unknown ({type(exc).__name__})'
        abort = declaration[caps.Operation.ABORT]
        return declaration.refine(
            self.conf.host, {FACT_VCENTER: version},
            abort=caps.partial(
                condition=abort.condition,
                notes="CancelTask on the RelocateVM_Task nova's vmops "
                      'started, at the completion timeout only (nova has no '
                      'live_migration_abort for VMware); the VM stays on '
                      "the source host and nova's rollback runs"),
            per_instance_timeout=caps.complete(
                "lmcaps.nova hooks: lmcaps's monitor cancels nova's "
                'RelocateVM_Task at the per-instance deadline'))


_lock = threading.Lock()
_drivers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_monitor: lmcaps_monitor.TimeoutMonitor | None = None
_store: nova_events.NovaEventStore | None = None
_local = threading.local()


def lmcaps_driver(nova_driver: Any, conf: cfg.ConfigOpts) -> NovaSessionDriver:
    """The lmcaps driver over ``nova_driver``'s session (one per driver)."""
    with _lock:
        found = _drivers.get(nova_driver)
        if found is None or found.conf is not conf:
            found = _drivers[nova_driver] = NovaSessionDriver(conf,
                                                              nova_driver)
        return found


def data_gb(instance: Any) -> float:
    """GiB a vMotion of ``instance`` moves as nova counts it: its flavor's
    RAM, at least 2 GiB (the base of the per-GiB default)."""
    return base.data_gib(int(instance.flavor.memory_mb or 0) * MIB)


def defaults(conf: cfg.ConfigOpts, gb: float) -> nova_policy.HostDefaults:
    """The host-wide values on VMware: ``[lmcaps_nova]
    vmware_completion_timeout_per_gib`` x ``gb`` seconds (0 = never), abort,
    no post-copy."""
    per_gib = conf[nova_conf.GROUP].vmware_completion_timeout_per_gib
    return nova_policy.HostDefaults(completion_timeout=int(per_gib * gb),
                                    timeout_action=ACTION,
                                    permit_post_copy=False)


def source_host(nova_driver: Any, conf: cfg.ConfigOpts,
                instance: Any) -> precheck.SourceHost:
    """The :class:`~lmcaps.nova.precheck.SourceHost` of a VMwareVCDriver."""
    gb = data_gb(instance)
    return precheck.SourceHost(
        declaration=lmcaps_driver(nova_driver, conf).host_declaration(),
        data_gb=gb, defaults=defaults(conf, gb),
        options=precheck.VMWARE_OPTIONS)


def monitor(conf: cfg.ConfigOpts) -> tuple[lmcaps_monitor.TimeoutMonitor,
                                           nova_events.NovaEventStore]:
    """The process's timeout monitor (started on first use) and its store.

    :raises: MonitorError for a bad ``[lmcaps]`` monitor option.
    """
    global _monitor, _store
    with _lock:
        if _monitor is None:
            store = nova_events.NovaEventStore(
                nova_context.get_admin_context())
            mon = lmcaps_monitor.TimeoutMonitor.from_conf(conf, store)
            mon.host = conf.host      # events name nova's host, as nova's
            mon.start()
            _monitor, _store = mon, store
        assert _store is not None
        return _monitor, _store


def stop_monitor() -> None:
    """Stop the monitor (its events are flushed); a later use starts anew."""
    global _monitor, _store
    with _lock:
        mon, _monitor, _store = _monitor, None, None
    if mon is not None:
        mon.stop()


def current(session: Any) -> Relocation | None:
    """The relocation this thread is running through ``session``, if any."""
    reloc = getattr(_local, 'relocation', None)
    if reloc is not None and reloc.lmcaps.conn.session is session:
        return reloc
    return None


@dataclasses.dataclass(eq=False)
class Relocation:
    """One ``VMwareVCDriver.live_migration`` call under a deadline."""

    conf: cfg.ConfigOpts
    context: Any
    instance: Any
    policy: lmcaps_policy.EffectivePolicy
    lmcaps: NovaSessionDriver
    data_gb: float
    migration: base.Migration | None = None
    watch: lmcaps_monitor.Watch | None = None
    store: nova_events.NovaEventStore | None = None
    #: nova's rollback ran as a cancellation: the failure is not passed on.
    cancelled: bool = False
    _capturing: bool = False

    def run(self, call: Callable[[Callable], Any],
            recover_method: Callable) -> Any:
        """Run nova's ``live_migration`` (``call(recover_method)``).

        :returns: what nova returned, or None after a cancellation by lmcaps
            that nova rolled back.
        """
        _local.relocation = self
        try:
            return call(self._recover(recover_method))
        except Exception:
            if not self.cancelled:
                raise
            LOG.warning('Live migration cancelled by lmcaps at its '
                        'completion timeout (%(timeout)g s, %(src)s); the '
                        'instance stays on this host',
                        {'timeout': self.policy.completion_timeout,
                         'src': self.policy.sources['completion_timeout']},
                        instance=self.instance)
            return None
        finally:
            _local.relocation = None
            self._end()

    def relocate(self, call: Callable[[], Any], vm_ref: Any,
                 relocate_spec: Any) -> Any:
        """Make nova's ``RelocateVM_Task`` call and watch the task.

        :param call: nova's ``_call_method`` for this call.
        :returns: the task moref, as nova's call returned it.
        """
        if self._capturing or self.migration is not None:
            return call()           # nova's own retry, or another relocation
        self._capturing = True
        try:
            vm = str(getattr(vm_ref, 'value', '') or '')
            source = self._source_host(vm)
            task = call()
        finally:
            self._capturing = False
        try:
            self._watch(task, vm, source, relocate_spec)
        except Exception:
            # Never let lmcaps fail a migration nova started.
            LOG.exception('lmcaps cannot enforce the completion timeout of '
                          'this live migration', instance=self.instance)
        return task

    def _source_host(self, vm: str) -> str:
        conn = self.lmcaps.conn
        try:
            ref = conn.prop(conn.moref(vm, 'VirtualMachine'), 'runtime.host')
        except Exception as exc:
            LOG.warning('lmcaps could not read the host of %s: %s', vm,
                        lmcaps_vmware.vsession.first_line(exc),
                        instance=self.instance)
            return ''
        return str(getattr(ref, 'value', '') or '')

    def _watch(self, task: Any, vm: str, source: str,
               relocate_spec: Any) -> None:
        dest = str(getattr(getattr(relocate_spec, 'host', None), 'value', '')
                   or '')
        spec = base.MigrationSpec(
            instance=self.instance.uuid,
            destination=base.Destination(host=dest, address=dest),
            completion_timeout=self.policy.completion_timeout)
        migration = self.lmcaps.track(spec, str(task.value), vm, source, dest,
                                      data_gib=self.data_gb)
        mon, store = monitor(self.conf)
        store.bind(self.context)
        self.store = store
        self.watch = mon.watch(self.lmcaps, migration, self.policy,
                               instance_uuid=self.instance.uuid,
                               request_id=self.context.request_id)
        self.migration = migration
        LOG.info('lmcaps watches %(task)s: %(action)s after %(timeout)g s '
                 '(%(src)s)', {'task': migration.reference,
                               'action': self.policy.timeout_action.value,
                               'timeout': self.policy.completion_timeout,
                               'src': self.policy.sources['completion_timeout']},
                 instance=self.instance)

    def _recover(self, recover_method: Callable) -> Callable:
        def recover(context: Any, instance: Any, dest: Any,
                    migrate_data: Any = None, *args: Any,
                    **kwargs: Any) -> Any:
            if not args and 'migration_status' not in kwargs and \
                    self._cancelled_by_lmcaps():
                kwargs['migration_status'] = CANCELLED
                result = recover_method(context, instance, dest, migrate_data,
                                        **kwargs)
                self.cancelled = True
                return result
            return recover_method(context, instance, dest, migrate_data,
                                  *args, **kwargs)
        return recover

    def _cancelled_by_lmcaps(self) -> bool:
        """lmcaps's CancelTask was accepted, vCenter ended the task
        cancelled and shows the VM on the source host (all asked now)."""
        migration, watch = self.migration, self.watch
        if migration is None or watch is None:
            return False
        try:
            # An abort call still in flight decides first (bounded).
            limit = time.monotonic() + self.lmcaps.call_timeout
            while time.monotonic() < limit and any(
                    a.action == latch_mod.ABORT and a.returned is None and
                    a.result is latch_mod.Result.PENDING
                    for a in watch.attempts):
                time.sleep(0.02)
            if not migration.backend.get('cancel_sent'):
                return False
            progress = self.lmcaps.get_progress(migration)
            if progress.phase is not base.Phase.CANCELLED:
                return False
            where = self.lmcaps.guest_location(migration)
        except Exception:
            LOG.exception('lmcaps could not read the cancelled relocation',
                          instance=self.instance)
            return False
        if where.host is not base.GuestHost.SOURCE:
            LOG.error('Relocation cancelled but the VM is not seen on the '
                      'source host (%s); nova handles it as a failure',
                      where, instance=self.instance)
            return False
        # The monitor records the outcome before nova rolls back (the task
        # has ended: it sees that on its next poll).
        if watch.wait(END_WAIT) is None:
            LOG.warning('lmcaps has not recorded the end of %s yet',
                        migration.reference, instance=self.instance)
        return True

    def _end(self) -> None:
        if self.watch is None:
            return
        if self.watch.wait(END_WAIT) is None:
            LOG.warning('lmcaps has not seen the end of %s yet; it records '
                        'it when it does', self.watch.migration.reference,
                        instance=self.instance)
        if self.store is not None:
            # Later events of this request take the request id only.
            self.store.unbind(self.context)


def begin(nova_driver: Any, conf: cfg.ConfigOpts, context: Any,
          instance: Any) -> Relocation | None:
    """A :class:`Relocation` when this migration has a deadline, else None
    (nova runs as without lmcaps).  Never raises: lmcaps's own failure is
    logged and the migration runs without a deadline."""
    try:
        # What the source pre-check resolved (never raises).
        layers = carry.for_monitor(conf, context, instance).layers
        gb = data_gb(instance)
        policy = defaults(conf, gb).resolve(conf, layers)
        if policy.completion_timeout is None:
            return None
        return Relocation(conf=conf, context=context, instance=instance,
                          policy=policy, data_gb=gb,
                          lmcaps=lmcaps_driver(nova_driver, conf))
    except Exception:
        LOG.exception('lmcaps cannot enforce a completion timeout on the '
                      'live migration of %s', instance.uuid)
        return None
