"""lmcaps's pre-checks in nova's source pre-check.

Runs after nova's own ``LibvirtDriver.check_can_live_migrate_source`` and
refuses with ``MigrationPreCheckError``, the one error for which nova's
conductor keeps the instance's vm_state (ACTIVE); nova then records its
``compute_check_can_live_migrate_source`` event as Error with the reason.
lmcaps records its own ``lmcaps_precheck_live_migration`` event in the same
instance action when per-instance values are in play, a check fails or
lmcaps itself fails; a migration on host-wide defaults that passes adds no
event.  The checks are evaluated once either way.
"""

from __future__ import annotations

import threading
import traceback
from typing import Any

from nova import exception as nova_exception
from oslo_config import cfg
from oslo_log import log as logging

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


def check_source(driver: Any, conf: cfg.ConfigOpts, context: Any,
                 instance: Any) -> checks_base.CheckContext | None:
    """Run lmcaps's pre-checks for a live migration of ``instance``.

    :param driver: nova's LibvirtDriver on the source.
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
    try:
        data_gb = driver._live_migration_data_gb(instance, [])
        all_layers = nova_policy.with_config(
            conf, layers, nova_policy.config_timeout(conf, data_gb))
        declaration = nova_declaration.host_declaration(driver, conf)
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
            declaration=declaration, data_gib=data_gb, runner=checks,
            host=conf.host, record_success=bool(layers),
            permit_post_copy=conf.libvirt.live_migration_permit_post_copy)
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
