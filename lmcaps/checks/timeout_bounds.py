"""Refuse per-instance values outside what the operator allows."""

from __future__ import annotations

from lmcaps import bounds as lmcaps_bounds
from lmcaps import policy as lmcaps_policy
from lmcaps.checks import base


class TimeoutBoundsCheck(base.PreCheck):
    """A per-instance timeout and action are within the operator's bounds.

    The bounds themselves are :mod:`lmcaps.bounds`; an embedding that
    applies them while resolving (lmcaps's nova integration) leaves nothing
    out of bounds for this check to find.
    """

    name = 'timeout_bounds'
    description = ('A per-instance completion_timeout lies within [lmcaps] '
                   'min/max_completion_timeout and its timeout_action is in '
                   'allowed_timeout_actions.')

    def check(self, ctx: base.CheckContext) -> base.CheckResult:
        pol = ctx.policy
        values: dict[str, object] = {}
        if pol.sources.get('completion_timeout', lmcaps_policy.CONFIG) != \
                lmcaps_policy.CONFIG:
            values['completion_timeout'] = pol.completion_timeout or 0
        if pol.sources.get('timeout_action', lmcaps_policy.CONFIG) != \
                lmcaps_policy.CONFIG:
            values['timeout_action'] = pol.timeout_action.value
        problems = lmcaps_bounds.problems(ctx.conf, values)
        if problems:
            return self.fail('; '.join(problems))
        return self.ok()
