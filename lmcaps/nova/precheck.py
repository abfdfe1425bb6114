"""lmcaps's pre-checks in nova's source pre-check.

Runs after nova's own ``check_can_live_migrate_source`` (``LibvirtDriver``,
``VMwareVCDriver``; the compute driver's part is a :class:`SourceHost`) and
refuses with ``MigrationPreCheckError``, the one error for which nova's
conductor keeps the instance's vm_state (ACTIVE); nova then records its
``compute_check_can_live_migrate_source`` event as Error with the reason.
lmcaps records its own ``lmcaps_precheck_live_migration`` event in the same
instance action when per-instance values are in play, a check fails or
lmcaps itself fails; a migration on host-wide defaults that passes adds no
event.  The checks are evaluated once either way.
"""

from __future__ import annotations

import dataclasses
import threading
import traceback
from collections.abc import Callable
from typing import Any

from nova import exception as nova_exception
from oslo_config import cfg
from oslo_log import log as logging

from lmcaps import capabilities as caps
from lmcaps import checks as lmcaps_checks
from lmcaps import conf as lmcaps_conf
from lmcaps import events as lmcaps_events
from lmcaps import exception
from lmcaps import precheck as lmcaps_precheck
from lmcaps.checks import base as checks_base
from lmcaps.nova import declaration as nova_declaration
from lmcaps.nova import events as nova_events
from lmcaps.nova import policy as nova_policy

LOG = logging.getLogger(__name__)

_lock = threading.Lock()
_runners: dict[tuple[int, tuple[str, ...]], lmcaps_checks.PreCheckRunner] = {}


def runner(conf: cfg.ConfigOpts) -> lmcaps_checks.PreCheckRunner:
    """The runner of ``[lmcaps] enabled_checks`` (loaded once per list)."""
    key = (id(conf), tuple(conf[lmcaps_conf.GROUP].enabled_checks))
    with _lock:
        found = _runners.get(key)
    if found is None:
        found = lmcaps_checks.PreCheckRunner(conf)
        with _lock:
            _runners[key] = found
    return found


@dataclasses.dataclass(frozen=True)
class SourceHost:
    """What the source's compute driver says about one migration.

    :param declaration: the host's declaration.
    :param data_gb: GiB the migration moves, as nova counts it.
    :param defaults: the driver's host-wide values for this migration.
    """

    declaration: caps.Declaration
    data_gb: float
    defaults: nova_policy.HostDefaults


def libvirt_source(driver: Any, conf: cfg.ConfigOpts,
                   instance: Any) -> SourceHost:
    """The :class:`SourceHost` of nova's LibvirtDriver."""
    data_gb = driver._live_migration_data_gb(instance, [])
    return SourceHost(
        declaration=nova_declaration.host_declaration(driver, conf),
        data_gb=data_gb,
        defaults=nova_policy.libvirt_defaults(
            conf, nova_policy.config_timeout(conf, data_gb)))


def check_source(driver: Any, conf: cfg.ConfigOpts, context: Any,
                 instance: Any,
                 source: Callable[[], SourceHost] | None = None
                 ) -> checks_base.CheckContext | None:
    """Run lmcaps's pre-checks for a live migration of ``instance``.

    :param driver: nova's compute driver on the source.
    :param source: gives the driver's :class:`SourceHost` (called once,
        after the per-instance values were read); default: ``driver`` is
        nova's LibvirtDriver (:func:`libvirt_source`).
    :returns: the check context when the checks passed.
    :raises: nova.exception.MigrationPreCheckError with lmcaps's reasons,
        also when lmcaps itself fails (so the instance never goes to ERROR).
    """
    store = nova_events.NovaEventStore(context)
    try:
        layers = nova_policy.instance_layers(conf, context, instance)
    except exception.InvalidRequest as exc:
        _record_refusal(store, context, instance, conf, exc.message)
        raise nova_exception.MigrationPreCheckError(reason=exc.message)
    except Exception as exc:  # never let lmcaps put the instance in ERROR
        reason = _crashed(instance, exc)
        _record_refusal(store, context, instance, conf, reason,
                        traceback.format_exc())
        raise nova_exception.MigrationPreCheckError(reason=reason) from exc
    try:
        host = (source() if source is not None
                else libvirt_source(driver, conf, instance))
        all_layers = host.defaults.layered(layers)
        checks = runner(conf)
    except Exception as exc:
        reason = _crashed(instance, exc)
        _record_refusal(store, context, instance, conf, reason,
                        traceback.format_exc())
        raise nova_exception.MigrationPreCheckError(reason=reason) from exc
    try:
        # One evaluation; on host-wide defaults a pass adds no event.
        verdict = lmcaps_precheck.run(
            conf, store, context.request_id, instance.uuid, all_layers,
            declaration=host.declaration, data_gib=host.data_gb,
            runner=checks, host=conf.host, record_success=bool(layers),
            permit_post_copy=host.defaults.permit_post_copy)
    except exception.MigrationPreCheckFailed as exc:
        raise nova_exception.MigrationPreCheckError(reason=exc.message)
    except Exception as exc:  # run() has recorded the event, if it could
        reason = _crashed(instance, exc)
        raise nova_exception.MigrationPreCheckError(reason=reason) from exc
    return verdict.context


def _crashed(instance: Any, exc: Exception) -> str:
    """Log lmcaps's own failure; the reason nova is given."""
    LOG.exception('lmcaps pre-check of instance %s failed', instance.uuid)
    return f'lmcaps pre-check error: {type(exc).__name__}: {exc}'


def _record_refusal(store: nova_events.NovaEventStore, context: Any,
                    instance: Any, conf: cfg.ConfigOpts, reason: str,
                    tb: str | None = None) -> None:
    """Record the refusal as an Error event; never raises."""
    try:
        store.record(context.request_id, instance.uuid,
                     lmcaps_events.PRECHECK, lmcaps_events.ERROR,
                     host=conf.host, details=reason, traceback=tb)
    except Exception:
        LOG.exception('could not record the lmcaps pre-check refusal of '
                      'instance %s', instance.uuid)
