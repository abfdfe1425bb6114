"""Refuse post-copy when the operator has not permitted it."""

from __future__ import annotations

from lmcaps import policy as lmcaps_policy
from lmcaps.checks import base


class PostCopyCheck(base.PreCheck):
    """Post-copy, requested or implied by the config, is permitted here."""

    name = 'post_copy'
    description = ('A force_complete by post-copy, requested or implied by '
                   'the configuration, is permitted by [lmcaps] '
                   'permit_post_copy.')

    def check(self, ctx: base.CheckContext) -> base.CheckResult:
        pol = ctx.policy
        if (pol.completion_timeout is None or
                pol.timeout_action is not lmcaps_policy.TimeoutAction.FORCE_COMPLETE
                or pol.force_complete_mode is not lmcaps_policy.ModeChoice.POSTCOPY):
            return self.ok('post-copy not requested')
        if not pol.permit_post_copy:
            src = pol.sources.get('force_complete_mode', 'config')
            return self.fail(
                f'force_complete_mode postcopy (from {src}) is not permitted '
                f"on this host: {ctx.option('permit_post_copy')} is False; "
                f'use force_complete_mode pause or auto')
        return self.ok()
