"""Refuse a timeout action the driver cannot carry out on this host."""

from __future__ import annotations

from lmcaps import capabilities as caps
from lmcaps import policy as lmcaps_policy
from lmcaps.checks import base


def _why(declaration: caps.Declaration, op: caps.Operation) -> str:
    cap = declaration[op]
    text = f'{op.value} is {cap.support.value} for driver {declaration.driver}'
    if declaration.host:
        text += f' on host {declaration.host}'
    return text + (f' ({cap.notes})' if cap.notes else '')


class DriverSupportCheck(base.PreCheck):
    """The effective timeout action (and per-instance values) are supported."""

    name = 'driver_support'
    description = ('The timeout action, and per-instance values if given, '
                   'are supported by the driver on this host.')

    def check(self, ctx: base.CheckContext) -> base.CheckResult:
        decl, pol = ctx.declaration, ctx.policy
        problems = []
        if pol.per_instance and not decl.support(
                caps.Operation.PER_INSTANCE_TIMEOUT).usable:
            problems.append(_why(decl, caps.Operation.PER_INSTANCE_TIMEOUT))
        if pol.completion_timeout is not None:
            if pol.timeout_action is lmcaps_policy.TimeoutAction.ABORT:
                if not decl.support(caps.Operation.ABORT).usable:
                    problems.append(_why(decl, caps.Operation.ABORT))
            else:
                mode = pol.mode if pol.mode is not None else (
                    lmcaps_policy.choose_mode(pol, decl))
                if mode is None:
                    problems.append(
                        'force_complete is impossible: ' + '; '.join(
                            _why(decl, op) for op in (
                                caps.Operation.FORCE_COMPLETE_POSTCOPY,
                                caps.Operation.FORCE_COMPLETE_PAUSE)))
                elif not decl.support(mode.operation).usable:
                    problems.append(_why(decl, mode.operation))
        if problems:
            src = pol.sources.get('timeout_action', lmcaps_policy.CONFIG)
            return self.fail(f'timeout_action {pol.timeout_action.value} '
                             f'(from {src}): ' + '; '.join(problems))
        return self.ok()
