"""Turning lmcaps on and off inside nova-compute's libvirt and VMware drivers.

:func:`enable` wraps nine attributes of nova 34 and :func:`disable` puts the
originals back; nothing else in nova is changed (the VMware ones only where
nova's VMware driver imports, i.e. with oslo.vmware).  libvirt:

* ``LibvirtDriver.check_can_live_migrate_source`` — then runs lmcaps's
  pre-checks (:mod:`lmcaps.nova.precheck`);
* ``LibvirtDriver._live_migration_monitor`` — registers the migration's
  per-instance values while nova's monitor runs (:mod:`lmcaps.nova.monitor`);
* ``LibvirtDriver._live_migration_operation`` — the migrate call's
  ``VIR_ERR_OPERATION_ABORTED`` after lmcaps's own timeout abort is the
  abort's expected end, not an error: nova 34 re-raises the migrate
  thread's exception after its monitor rolled the guest back to the
  source, which would put the instance into ERROR;
* ``migration.should_trigger_timeout_action`` — answered by that state:
  per-instance deadline and action, once, never in post-copy (lmcaps's
  timer fires at the deadline; nova's pass is the fallback observer);
* ``migration.run_tasks`` — a force-complete pauses when the mode is pause;
  the state learns nova's Migration and its on_migration_failure queue;
* ``LibvirtDriver.update_provider_tree`` — adds the lmcaps traits.

VMware (:mod:`lmcaps.nova.vmware`):

* ``VMwareVCDriver.check_can_live_migrate_source`` — lmcaps's pre-checks on
  the vmware declaration (no force-complete);
* ``VMwareVCDriver.live_migration`` — a migration with a deadline is
  watched by lmcaps's monitor, which cancels the RelocateVM_Task at the
  deadline; nova's rollback then runs as a cancellation;
* ``VMwareAPISession._call_method`` — captures the RelocateVM_Task that
  ``live_migration`` creates (other calls pass straight through).

No traits are added on VMware: nova's own VMware tests pin the provider
tree's traits, and they run unchanged with the hooks.

With no per-instance values nova behaves as without lmcaps, except that the
timeout action fires once per migration and is recorded as an instance
action event.  A per-instance ``force_complete_mode = pause`` also applies to
a force-complete asked through nova's API during that migration.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import threading
from collections.abc import Callable
from typing import Any

from nova.virt.libvirt import driver as nova_driver
from nova.virt.libvirt import migration as nova_migration
from oslo_config import cfg
from oslo_log import log as logging

from lmcaps.nova import conf as nova_conf
from lmcaps.nova import declaration as nova_declaration
from lmcaps.nova import monitor
from lmcaps.nova import precheck
from lmcaps.nova import traits
from lmcaps.nova import vmware

try:
    from nova.virt.vmwareapi import driver as nova_vmware
    from nova.virt.vmwareapi import session as nova_vmware_session
except ImportError as exc:   # nova without its [vmware] extra (oslo.vmware)
    nova_vmware = nova_vmware_session = None
    VMWARE_MISSING: str | None = f'{type(exc).__name__}: {exc}'
else:
    VMWARE_MISSING = None

LOG = logging.getLogger(__name__)

Factory = Callable[[Callable, cfg.ConfigOpts], Callable]


@dataclasses.dataclass(frozen=True)
class _Saved:
    owner: Any
    name: str
    original: Callable


_lock = threading.Lock()
_saved: list[_Saved] | None = None


def _check_source(original: Callable, conf: cfg.ConfigOpts, *,
                  vmware_host: bool = False) -> Callable:
    """lmcaps's pre-check after nova's own; on a VMware compute the host
    is read from vCenter (:func:`lmcaps.nova.vmware.source_host`)."""
    @functools.wraps(original)
    def check_can_live_migrate_source(self: Any, context: Any, instance: Any,
                                      dest_check_data: Any,
                                      block_device_info: Any = None) -> Any:
        result = original(self, context, instance, dest_check_data,
                          block_device_info)
        if enabled():
            if vmware_host:
                precheck.check_source(
                    self, conf, context, instance,
                    lambda: vmware.source_host(self, conf, instance))
            else:
                precheck.check_source(self, conf, context, instance)
        return result
    return check_can_live_migrate_source


#: libvirt's VIR_ERR_OPERATION_ABORTED (virerror.h); nova's fake libvirt
#: raises the code without defining the name.
_OPERATION_ABORTED = 78


def _operation(original: Callable, conf: cfg.ConfigOpts) -> Callable:
    @functools.wraps(original)
    def _live_migration_operation(self: Any, context: Any, instance: Any,
                                  dest: Any, block_migration: Any,
                                  migrate_data: Any, guest: Any,
                                  device_names: Any) -> Any:
        try:
            return original(self, context, instance, dest, block_migration,
                            migrate_data, guest, device_names)
        except nova_driver.libvirt.libvirtError as exc:
            state = monitor.lookup(instance.uuid)
            if (state is None or exc.get_error_code() != _OPERATION_ABORTED or
                    not state.aborted_by_lmcaps()):
                raise
            # nova's monitor sees the job end and rolls the guest back;
            # the abort was lmcaps's, and it did what it was for
            LOG.info('Live migration aborted by the lmcaps timeout action: '
                     '%s', exc, instance=instance)
            return None
    return _live_migration_operation


def _monitor(original: Callable, conf: cfg.ConfigOpts) -> Callable:
    @functools.wraps(original)
    def _live_migration_monitor(self: Any, context: Any, instance: Any,
                                guest: Any, *args: Any, **kwargs: Any) -> Any:
        if not enabled():
            return original(self, context, instance, guest, *args, **kwargs)
        state = monitor.begin(self, conf, context, instance, guest)
        try:
            return original(self, context, instance, guest, *args, **kwargs)
        finally:
            monitor.end(state)
    return _live_migration_monitor


def _should_trigger(original: Callable, conf: cfg.ConfigOpts) -> Callable:
    @functools.wraps(original)
    def should_trigger_timeout_action(instance: Any, elapsed: float,
                                      completion_timeout: int,
                                      migration_status: str | None) -> bool:
        state = monitor.lookup(instance.uuid)
        if state is None:
            return original(instance, elapsed, completion_timeout,
                            migration_status)
        return state.should_trigger(elapsed, completion_timeout,
                                    migration_status)
    return should_trigger_timeout_action


def _run_tasks(original: Callable, conf: cfg.ConfigOpts) -> Callable:
    @functools.wraps(original)
    def run_tasks(guest: Any, instance: Any, active_migrations: Any,
                  on_migration_failure: Any, migration: Any,
                  is_post_copy_enabled: bool) -> Any:
        state = monitor.lookup(instance.uuid)
        if state is None:
            return original(guest, instance, active_migrations,
                            on_migration_failure, migration,
                            is_post_copy_enabled)
        with state.lock:     # never interleaved with lmcaps's timer
            is_post_copy_enabled = state.tasks_run(
                is_post_copy_enabled, on_migration_failure, migration)
            return original(guest, instance, active_migrations,
                            on_migration_failure, migration,
                            is_post_copy_enabled)
    return run_tasks


def _provider_tree(original: Callable, conf: cfg.ConfigOpts) -> Callable:
    @functools.wraps(original)
    def update_provider_tree(self: Any, provider_tree: Any, nodename: str,
                             allocations: Any = None) -> Any:
        result = original(self, provider_tree, nodename,
                          allocations=allocations)
        if enabled():
            try:
                traits.update_provider_tree(
                    provider_tree, nodename,
                    nova_declaration.host_declaration(self, conf))
            except Exception:
                # Never let lmcaps break nova's resource tracking.
                LOG.exception('lmcaps could not update the traits of %s',
                              nodename)
        return result
    return update_provider_tree


def _vmware_check_source(original: Callable,
                         conf: cfg.ConfigOpts) -> Callable:
    return _check_source(original, conf, vmware_host=True)


def _vmware_live_migration(original: Callable,
                           conf: cfg.ConfigOpts) -> Callable:
    @functools.wraps(original)
    def live_migration(self: Any, context: Any, instance: Any, dest: Any,
                       post_method: Callable, recover_method: Callable,
                       block_migration: bool = False,
                       migrate_data: Any = None) -> Any:
        reloc = (vmware.begin(self, conf, context, instance) if enabled()
                 else None)
        if reloc is None:
            return original(self, context, instance, dest, post_method,
                            recover_method, block_migration, migrate_data)
        return reloc.run(
            lambda recover: original(self, context, instance, dest,
                                     post_method, recover, block_migration,
                                     migrate_data), recover_method)
    return live_migration


def _vmware_call_method(original: Callable, conf: cfg.ConfigOpts) -> Callable:
    @functools.wraps(original)
    def _call_method(self: Any, module: Any, method: str, *args: Any,
                     **kwargs: Any) -> Any:
        reloc = vmware.current(self) if method == vmware.RELOCATE else None
        if reloc is None or not args:
            return original(self, module, method, *args, **kwargs)
        return reloc.relocate(
            lambda: original(self, module, method, *args, **kwargs),
            args[0], kwargs.get('spec'))
    return _call_method


#: (owner, attribute, wrapper factory), in the order they are applied.
PATCHES: tuple[tuple[Any, str, Factory], ...] = (
    (nova_driver.LibvirtDriver, 'check_can_live_migrate_source',
     _check_source),
    (nova_driver.LibvirtDriver, '_live_migration_monitor', _monitor),
    (nova_driver.LibvirtDriver, '_live_migration_operation', _operation),
    (nova_driver.LibvirtDriver, 'update_provider_tree', _provider_tree),
    (nova_migration, 'should_trigger_timeout_action', _should_trigger),
    (nova_migration, 'run_tasks', _run_tasks),
)
if nova_vmware is not None:
    PATCHES += (
        (nova_vmware.VMwareVCDriver, 'check_can_live_migrate_source',
         _vmware_check_source),
        (nova_vmware.VMwareVCDriver, 'live_migration',
         _vmware_live_migration),
        (nova_vmware_session.VMwareAPISession, '_call_method',
         _vmware_call_method),
    )


#: The signature of nova 34's original of each patched attribute, as each
#: wrapper expects it (``str(inspect.signature(original))``), keyed by
#: ``(owner, attribute)``; :func:`signature_drift` compares them.
SIGNATURES: dict[tuple[Any, str], str] = {
    (nova_driver.LibvirtDriver, 'check_can_live_migrate_source'):
        '(self, context, instance, dest_check_data, block_device_info=None)',
    (nova_driver.LibvirtDriver, '_live_migration_monitor'):
        '(self, context, instance, guest, dest, post_method, recover_method, '
        'block_migration, migrate_data, future, disk_paths)',
    (nova_driver.LibvirtDriver, '_live_migration_operation'):
        '(self, context, instance, dest, block_migration, migrate_data, '
        'guest, device_names)',
    (nova_driver.LibvirtDriver, 'update_provider_tree'):
        '(self, provider_tree, nodename, allocations=None)',
    (nova_migration, 'should_trigger_timeout_action'):
        '(instance, elapsed, completion_timeout, migration_status)',
    (nova_migration, 'run_tasks'):
        '(guest, instance, active_migrations, on_migration_failure, '
        'migration, is_post_copy_enabled)',
}
if nova_vmware is not None:
    SIGNATURES.update({
        (nova_vmware.VMwareVCDriver, 'check_can_live_migrate_source'):
            '(self, context, instance, dest_check_data, '
            'block_device_info=None)',
        (nova_vmware.VMwareVCDriver, 'live_migration'):
            '(self, context, instance, dest, post_method, recover_method, '
            'block_migration=False, migrate_data=None)',
        (nova_vmware_session.VMwareAPISession, '_call_method'):
            '(self, module, method, *args, **kwargs)',
    })


def _name(owner: Any, name: str) -> str:
    return f"{getattr(owner, '__qualname__', owner.__name__)}.{name}"


def _original(owner: Any, name: str) -> Callable:
    """nova's own attribute, also while the hooks are in place (no lock:
    :func:`enable` calls this holding it; ``_saved`` is replaced, never
    changed)."""
    for item in _saved or ():
        if item.owner is owner and item.name == name:
            return item.original
    return vars(owner)[name]


def signature_drift(patches: tuple[tuple[Any, str, Factory], ...] = PATCHES,
                    signatures: dict[tuple[Any, str], str] | None = None
                    ) -> list[str]:
    """Where nova's methods no longer look as the wrappers expect.

    For each patched attribute: nova's original must exist and have the
    signature in :data:`SIGNATURES`, and the wrapper must accept every call
    that signature allows (its parameters, passed by position and by name).

    :returns: one line per problem; empty when nothing drifted.
    """
    signatures = SIGNATURES if signatures is None else signatures
    found = []
    for owner, name, factory in patches:
        label = _name(owner, name)
        expected = signatures.get((owner, name))
        if expected is None:
            found.append(f'{label}: no expected signature in SIGNATURES')
            continue
        try:
            original = _original(owner, name)
        except KeyError:
            found.append(f'{label}: missing in nova')
            continue
        actual = str(inspect.signature(original))
        if actual != expected:
            found.append(f'{label}: nova has {actual}, lmcaps expects '
                         f'{expected}')
            continue
        wrapper = inspect.signature(factory(original, cfg.ConfigOpts()),
                                    follow_wrapped=False)
        params = [p for p in inspect.signature(original).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        for how, call in (
                ('by position', lambda: wrapper.bind(*params)),
                ('by name', lambda: wrapper.bind(
                    **{p.name: p for p in params}))):
            try:
                call()
            except TypeError as exc:
                found.append(f'{label}: the wrapper does not take the '
                             f'arguments {how}: {exc}')
    return found


def enabled() -> bool:
    """Whether the hooks are in place."""
    return _saved is not None


def enable(conf: cfg.ConfigOpts | None = None) -> None:
    """Put the hooks in place (a second call does nothing).

    :param conf: nova's configuration (default ``nova.conf.CONF``); the
        ``[lmcaps]`` and ``[lmcaps_nova]`` options are registered on it.
    """
    global _saved
    with _lock:
        if _saved is not None:
            return
        if conf is None:
            import nova.conf
            conf = nova.conf.CONF
        nova_conf.register_opts(conf)
        for problem in signature_drift():
            LOG.error('lmcaps hooks: a wrapped nova method changed: %s',
                      problem)
        saved = []
        for owner, name, factory in PATCHES:
            original = vars(owner)[name]
            setattr(owner, name, factory(original, conf))
            saved.append(_Saved(owner, name, original))
        _saved = saved
        LOG.info('lmcaps hooks enabled in nova-compute')
        if VMWARE_MISSING:
            LOG.info("lmcaps: nova's VMware driver is not importable "
                     '(%s); its hooks are not in place', VMWARE_MISSING)


def disable() -> None:
    """Put nova's originals back (a second call does nothing)."""
    global _saved
    with _lock:
        if _saved is None:
            return
        for item in reversed(_saved):
            setattr(item.owner, item.name, item.original)
        _saved = None
    vmware.stop_monitor()
