"""Refuse per-instance values outside what the operator allows."""

from __future__ import annotations

from lmcaps import conf as lmcaps_conf
from lmcaps import policy as lmcaps_policy
from lmcaps.checks import base


class TimeoutBoundsCheck(base.PreCheck):
    """A per-instance timeout and action are within the operator's bounds."""

    name = 'timeout_bounds'
    description = ('A per-instance completion_timeout lies within [lmcaps] '
                   'min/max_completion_timeout and its timeout_action is in '
                   'allowed_timeout_actions.')

    def check(self, ctx: base.CheckContext) -> base.CheckResult:
        group = ctx.conf[lmcaps_conf.GROUP]
        pol = ctx.policy
        problems = []
        if pol.sources.get('completion_timeout', lmcaps_policy.CONFIG) != \
                lmcaps_policy.CONFIG:
            value = pol.completion_timeout or 0
            lo, hi = group.min_completion_timeout, group.max_completion_timeout
            if value == 0 and hi:
                problems.append(
                    f'completion_timeout 0 (never) is not allowed; allowed: '
                    f'{max(lo, 1)} to {hi} seconds')
            elif value and (value < lo or (hi and value > hi)):
                problems.append(
                    f'completion_timeout {value:g} is out of bounds; allowed: '
                    f"{lo} to {hi or 'unbounded'} seconds")
        if pol.sources.get('timeout_action', lmcaps_policy.CONFIG) != \
                lmcaps_policy.CONFIG:
            allowed = group.allowed_timeout_actions
            if pol.timeout_action.value not in allowed:
                problems.append(
                    f'timeout_action {pol.timeout_action.value} is not '
                    f"allowed; allowed: {', '.join(allowed) or 'none'}")
        if problems:
            return self.fail('; '.join(problems))
        return self.ok()
