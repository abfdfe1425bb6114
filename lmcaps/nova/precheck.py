"""lmcaps's pre-checks in nova's source pre-check.

Runs after nova's own ``check_can_live_migrate_source`` (``LibvirtDriver``,
``VMwareVCDriver``; the compute driver's part is a :class:`SourceHost`) and
refuses with ``MigrationPreCheckError``, the one error for which nova's
conductor keeps the instance's vm_state (ACTIVE); nova then records its
``compute_check_can_live_migrate_source`` event as Error with the reason.

* The per-instance values are resolved here, once, within the operator's
  bounds (:func:`lmcaps.nova.policy.resolve_instance`), and carried to the
  monitor (:mod:`lmcaps.nova.carry`).
* lmcaps records its own ``lmcaps_precheck_live_migration`` event in the
  same instance action when per-instance values are in play, a check fails
  or lmcaps itself fails; a migration on host-wide defaults that passes adds
  no event.  The checks are evaluated once (twice when owner metadata is in
  play and refused: once with it, once without).
* Every failure of lmcaps's own is a ``MigrationPreCheckError`` too, or,
  with ``[lmcaps_nova] precheck_fail_open``, a logged pass with an Error
  event; event writes never change the verdict
  (:class:`lmcaps.nova.events.BestEffortStore`).
* Messages name nova's options (:data:`LIBVIRT_OPTIONS`); event details
  start with one summary line of at most :data:`SUMMARY_MAX` characters
  naming every failed check (nova keeps 255), the reasons follow in the
  event's traceback text.
"""

from __future__ import annotations

import dataclasses
import threading
import traceback
from collections.abc import Callable, Mapping
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
from lmcaps.nova import carry
from lmcaps.nova import conf as nova_conf
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


#: lmcaps option -> nova's option that holds that value on a libvirt host,
#: for the checks' messages.
LIBVIRT_OPTIONS = {
    'permit_post_copy': '[libvirt] live_migration_permit_post_copy',
    'completion_timeout_per_gib':
        '[libvirt] live_migration_completion_timeout',
    'timeout_action': '[libvirt] live_migration_timeout_action',
}
#: The same on VMware, where nova has no such options.
VMWARE_OPTIONS = {
    'permit_post_copy': "post-copy with nova's VMware driver (vSphere has "
                        'none)',
    'completion_timeout_per_gib':
        f'[{nova_conf.GROUP}] vmware_completion_timeout_per_gib',
}
#: Longest one-line summary at the head of an event's details.
SUMMARY_MAX = lmcaps_checks.SUMMARY_MAX


@dataclasses.dataclass(frozen=True)
class SourceHost:
    """What the source's compute driver says about one migration.

    :param declaration: the host's declaration.
    :param data_gb: GiB the migration moves, as nova counts it.
    :param defaults: the driver's host-wide values for this migration.
    :param options: lmcaps option -> the option that holds it here, for
        messages (:data:`LIBVIRT_OPTIONS`, :data:`VMWARE_OPTIONS`).
    """

    declaration: caps.Declaration
    data_gb: float
    defaults: nova_policy.HostDefaults
    options: Mapping[str, str] = dataclasses.field(
        default_factory=lambda: dict(LIBVIRT_OPTIONS))


def libvirt_source(driver: Any, conf: cfg.ConfigOpts,
                   instance: Any) -> SourceHost:
    """The :class:`SourceHost` of nova's LibvirtDriver."""
    data_gb = driver._live_migration_data_gb(instance, [])
    return SourceHost(
        declaration=nova_declaration.host_declaration(driver, conf),
        data_gb=data_gb,
        defaults=nova_policy.libvirt_defaults(
            conf, nova_policy.config_timeout(conf, data_gb)),
        options=LIBVIRT_OPTIONS)


def one_line(text: str) -> str:
    """The first line of ``text``, at most :data:`SUMMARY_MAX` characters."""
    line = text.split('\n', 1)[0]
    return line if len(line) <= SUMMARY_MAX else line[:SUMMARY_MAX - 3] + '...'


def check_source(driver: Any, conf: cfg.ConfigOpts, context: Any,
                 instance: Any,
                 source: Callable[[], SourceHost] | None = None
                 ) -> checks_base.CheckContext | None:
    """Run lmcaps's pre-checks for a live migration of ``instance``.

    Resolves the per-instance values once, within the operator's bounds
    (:func:`lmcaps.nova.policy.resolve_instance`), runs the checks on them,
    and carries the resolution to the monitor (:mod:`lmcaps.nova.carry`).
    Owner metadata never refuses: values a check refuses are dropped with a
    note, and the notes are recorded as an Error event
    :data:`lmcaps.nova.events.METADATA` (nova keeps details only for Error).

    :param driver: nova's compute driver on the source.
    :param source: gives the driver's :class:`SourceHost` (called once,
        after the per-instance values were read); default: ``driver`` is
        nova's LibvirtDriver (:func:`libvirt_source`).
    :returns: the check context when the checks passed; None when lmcaps
        itself failed and ``[lmcaps_nova] precheck_fail_open`` is set.
    :raises: nova.exception.MigrationPreCheckError with lmcaps's reasons,
        also when lmcaps itself fails (so the instance never goes to ERROR).
    """
    store = nova_events.BestEffortStore(context)
    try:
        return _check(driver, conf, context, instance, source, store)
    except nova_exception.MigrationPreCheckError:
        raise
    except Exception as exc:  # never let lmcaps put the instance in ERROR
        reason = _crashed(instance, exc)
        tb = traceback.format_exc()
        if conf[nova_conf.GROUP].precheck_fail_open:
            LOG.error('lmcaps pre-check of instance %s failed; '
                      '[lmcaps_nova] precheck_fail_open is set: the live '
                      "migration goes ahead on nova's host-wide values",
                      instance.uuid)
            _record(store, context, instance, conf, lmcaps_events.PRECHECK,
                    one_line('allowed by precheck_fail_open on nova\'s '
                             f'host-wide values: {reason}') + '\n' + reason,
                    tb)
            _remember(conf, context, instance,
                      nova_policy.Resolution(picked={}))
            return None
        if lmcaps_events.PRECHECK not in store.finished:
            _record(store, context, instance, conf, lmcaps_events.PRECHECK,
                    reason, tb)
        raise nova_exception.MigrationPreCheckError(reason=reason) from exc


def _check(driver: Any, conf: cfg.ConfigOpts, context: Any, instance: Any,
           source: Callable[[], SourceHost] | None,
           store: nova_events.NovaEventStore) -> checks_base.CheckContext:
    """:func:`check_source` without its handling of lmcaps's own
    failures."""
    try:
        resolution = nova_policy.resolve_instance(conf, context, instance)
    except exception.InvalidRequest as exc:
        # An operator's value (request, flavor): refused, whatever the
        # fail-open setting says.
        _record(store, context, instance, conf, lmcaps_events.PRECHECK,
                exc.message)
        raise nova_exception.MigrationPreCheckError(reason=exc.message)
    host = (source() if source is not None
            else libvirt_source(driver, conf, instance))
    checks = runner(conf)

    def layered(res: nova_policy.Resolution) -> list:
        return host.defaults.layered(res.layers)

    if resolution.uses(nova_policy.METADATA):
        trial = checks.evaluate(lmcaps_precheck.check_context(
            conf, instance.uuid, lmcaps_precheck.validate_layers(
                layered(resolution)),
            declaration=host.declaration, data_gib=host.data_gb,
            permit_post_copy=host.defaults.permit_post_copy,
            options=host.options))
        if not trial.passed:
            resolution = resolution.without(
                nova_policy.METADATA,
                'instance metadata lmcaps:* ignored, a pre-check refuses it '
                'here: ' + '; '.join(trial.reasons))
    if resolution.notes:
        _owner_event(store, context, instance, conf, resolution)
    try:
        # One evaluation (one more above when owner metadata was refused);
        # on host-wide defaults a pass adds no event.
        verdict = lmcaps_precheck.run(
            conf, store, context.request_id, instance.uuid,
            layered(resolution), declaration=host.declaration,
            data_gib=host.data_gb, runner=checks, host=conf.host,
            record_success=bool(resolution.picked),
            permit_post_copy=host.defaults.permit_post_copy,
            options=host.options)
    except exception.MigrationPreCheckFailed as exc:
        report = exc.report
        reason = (f"{report.summary}. {'; '.join(report.reasons)}"
                  if report is not None else exc.message)
        raise nova_exception.MigrationPreCheckError(reason=reason)
    LOG.info('lmcaps pre-check passed for %(uuid)s: %(policy)s',
             {'uuid': instance.uuid, 'policy': verdict.policy.describe()})
    _remember(conf, context, instance, resolution)
    return verdict.context


def _remember(conf: cfg.ConfigOpts, context: Any, instance: Any,
              resolution: nova_policy.Resolution) -> None:
    """Carry the resolution to the monitor; written to system metadata
    when anything per-instance is in play (else the monitor, finding no
    record, resolves the same host-wide values again)."""
    persist = bool(resolution.picked or resolution.notes or
                   conf[nova_conf.GROUP].instance_metadata)
    carry.remember(context, instance, resolution, persist=persist)


def _crashed(instance: Any, exc: Exception) -> str:
    """Log lmcaps's own failure; the reason nova is given."""
    LOG.exception('lmcaps pre-check of instance %s failed', instance.uuid)
    return f'lmcaps pre-check error: {type(exc).__name__}: {exc}'


def _record(store: nova_events.NovaEventStore, context: Any, instance: Any,
            conf: cfg.ConfigOpts, event: str, text: str,
            tb: str | None = None) -> None:
    """Record an Error event: details one summary line, then ``text`` and
    ``tb`` in nova's traceback field; never raises."""
    summary = one_line(text)
    details = summary if summary == text else f'{summary}\n{text}'
    try:
        store.record(context.request_id, instance.uuid, event,
                     lmcaps_events.ERROR, host=conf.host, details=details,
                     traceback=tb)
    except Exception:
        LOG.exception('could not record the lmcaps event %s of instance %s',
                      event, instance.uuid)


def _owner_event(store: nova_events.NovaEventStore, context: Any,
                 instance: Any, conf: cfg.ConfigOpts,
                 resolution: nova_policy.Resolution) -> None:
    """Record what was done to the owner's instance metadata."""
    notes = resolution.notes
    keys = sorted({note.split(' ', 1)[0] if note.startswith('lmcaps:')
                   else 'lmcaps:*' for note in notes})
    summary = one_line(
        f"instance metadata adjusted, the live migration goes ahead: "
        f"{', '.join(keys)}")
    _record(store, context, instance, conf, nova_events.METADATA,
            '\n'.join([summary, *notes]))
