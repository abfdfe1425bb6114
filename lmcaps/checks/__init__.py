"""Running the enabled pre-live-migration checks and recording the verdict."""

from __future__ import annotations

import dataclasses
import traceback
from typing import Any
from importlib import metadata

from oslo_config import cfg
from stevedore import named

from lmcaps import conf as lmcaps_conf
from lmcaps import events as lmcaps_events
from lmcaps import exception
from lmcaps.checks import base

NAMESPACE = 'lmcaps.checks'
#: Longest :attr:`PreCheckReport.summary`: it fits in nova's 255-character
#: event details even behind nova's ``Migration pre-check error: ``.
SUMMARY_MAX = 200


def available() -> list[str]:
    """Names of the installed checks, sorted."""
    return sorted({ep.name for ep in metadata.entry_points(group=NAMESPACE)})


@dataclasses.dataclass(frozen=True)
class PreCheckReport:
    """All verdicts of one run; ``passed`` when every check passed."""

    instance: str
    results: tuple[base.CheckResult, ...]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def reasons(self) -> list[str]:
        return [f'{r.name}: {r.reason}' for r in self.results if not r.passed]

    @property
    def failed(self) -> list[str]:
        """Names of the checks that failed, in the order they ran."""
        return [r.name for r in self.results if not r.passed]

    @property
    def summary(self) -> str:
        """One line naming every failed check, at most
        :data:`SUMMARY_MAX` characters (nova keeps 255 of an event's
        details), e.g. ``refused by 2 of 3 lmcaps pre-checks: post_copy,
        timeout_bounds``."""
        failed = self.failed
        if not failed:
            return f'{len(self.results)} lmcaps pre-checks passed'
        text = (f'refused by {len(failed)} of {len(self.results)} lmcaps '
                f"pre-checks: {', '.join(failed)}")
        return text if len(text) <= SUMMARY_MAX else \
            text[:SUMMARY_MAX - 3] + '...'

    def details(self, policy: Any = None) -> str:
        """The event details: :attr:`summary`, then one line per reason,
        then the effective policy with each value's source (``policy``, an
        ``EffectivePolicy``, when given)."""
        lines = [self.summary, *self.reasons]
        if policy is not None:
            lines.append(f'effective policy: {policy.describe()}')
        return '\n'.join(lines)

    def as_dict(self) -> dict:
        return {r.name: {'result': r.passed, 'reason': r.reason}
                for r in self.results}


class PreCheckRunner:
    """Loads the checks named in ``[lmcaps] enabled_checks``, in that order.

    :raises: CheckNotFound for an unknown name, CheckLoadFailed when one
        does not import; never skips a check silently.
    """

    def __init__(self, conf: cfg.ConfigOpts,
                 names: list[str] | None = None, *,
                 checks: list[base.PreCheck] | None = None) -> None:
        """:param checks: check objects to run instead of loading ``names``
            (tests, embedding hosts with checks of their own)."""
        self.conf = conf
        self.checks: list[base.PreCheck] = (
            list(checks) if checks is not None else self._load(conf, names))

    @staticmethod
    def _load(conf: cfg.ConfigOpts,
              names: list[str] | None) -> list[base.PreCheck]:
        names = list(conf[lmcaps_conf.GROUP].enabled_checks
                     if names is None else names)
        installed = available()
        for name in names:
            if name not in installed:
                raise exception.CheckNotFound(
                    name=name, available=', '.join(installed) or 'none')

        def failed(_mgr: object, ep: object, exc: BaseException) -> None:
            raise exception.CheckLoadFailed(
                name=getattr(ep, 'name', '?'),
                reason=f'{type(exc).__name__}: {exc}')

        mgr: Any = named.NamedExtensionManager(
            NAMESPACE, names=names, name_order=True, invoke_on_load=True,
            invoke_args=(conf,), on_load_failure_callback=failed,
            propagate_map_exceptions=True)
        return [ext.obj for ext in mgr]

    def evaluate(self, ctx: base.CheckContext) -> PreCheckReport:
        """Run every check; a check that crashes counts as failed."""
        results = []
        for check in self.checks:
            try:
                result = check.check(ctx)
            except Exception as exc:  # a broken check must refuse, not pass
                result = base.CheckResult(
                    check.name, False,
                    f'check crashed: {type(exc).__name__}: {exc}')
            results.append(result)
        return PreCheckReport(ctx.instance, tuple(results))

    def run(self, ctx: base.CheckContext, store: lmcaps_events.EventStore,
            request_id: str, host: str | None = None, *,
            record_success: bool = True) -> PreCheckReport:
        """Run the checks once, record the event, raise if any failed.

        :param record_success: False records no event when every check
            passes (nova on host-wide defaults); a refusal or a crash is
            recorded either way.
        :raises: MigrationPreCheckFailed with every failed reason and the
            report.
        """
        host = host or self.conf[lmcaps_conf.GROUP].host
        started = record_success   # start now, so the event times the checks

        def finish(result: str, details: str, tb: str | None = None) -> None:
            if not started:
                store.event_start(request_id, ctx.instance,
                                  lmcaps_events.PRECHECK, host=host)
            store.event_finish(request_id, ctx.instance,
                               lmcaps_events.PRECHECK, result,
                               details=details, traceback=tb)

        if started:
            store.event_start(request_id, ctx.instance,
                              lmcaps_events.PRECHECK, host=host)
        try:
            report = self.evaluate(ctx)
        except BaseException as exc:
            finish(lmcaps_events.ERROR, str(exc), traceback.format_exc())
            raise
        if report.passed:
            if record_success:
                finish(lmcaps_events.SUCCESS, report.details(ctx.policy))
            return report
        finish(lmcaps_events.ERROR, report.details(ctx.policy))
        raise exception.MigrationPreCheckFailed(ctx.instance, report.reasons,
                                                report=report,
                                                policy=ctx.policy)
