"""The timeout-action latch: one action that took effect, never more.

"Exactly once" means one *effective* action: the call was accepted by the
backend **and** its effect was observed within ``effect_timeout`` seconds
(the migration's phase moved to CANCELLING/CANCELLED after an abort, to
POSTCOPY after a switch to post-copy, to PAUSED after a pause — or the
migration ended).  A refused, failed, timed-out or ineffective attempt is
retried with exponential backoff while the migration runs and is not in
post-copy; after ``attempts_per_step`` attempts the latch escalates along
the chain::

    postcopy -> pause -> abort        (force_complete)
    pause -> abort                    (force_complete by pause)
    abort                             (abort: no escalation)

each step only where the host's declaration makes it usable and the policy
permits it (post-copy needs the operator's permit and a migration started
prepared for it; abort is appended only with ``escalate``).  Once the
migration was seen in post-copy nothing more is attempted: an abort in
post-copy would lose the guest.  When the chain is exhausted the last step
is retried at the longest backoff until the migration ends.

Pure logic with an injected clock, shared by the core monitor
(:mod:`lmcaps.monitor`) and the nova embedding (:mod:`lmcaps.nova`).
"""

from __future__ import annotations

import dataclasses
import enum
import threading
from collections.abc import Callable

from lmcaps import capabilities as caps
from lmcaps import policy as lmcaps_policy
from lmcaps.drivers import model

Phase = model.Phase
Mode = caps.ForceCompleteMode

ABORT = 'abort'
POSTCOPY = Mode.POSTCOPY.value
PAUSE = Mode.PAUSE.value

#: The phases that show each action took effect (or made it moot).
_EFFECT = {
    ABORT: {Phase.CANCELLING, Phase.CANCELLED},
    POSTCOPY: {Phase.POSTCOPY},
    PAUSE: {Phase.PAUSED},
}
_OPERATION = {ABORT: caps.Operation.ABORT,
              POSTCOPY: caps.Operation.FORCE_COMPLETE_POSTCOPY,
              PAUSE: caps.Operation.FORCE_COMPLETE_PAUSE}


class Result(enum.Enum):
    """How one attempt ended."""

    PENDING = 'pending'          # accepted, effect not observed yet
    EFFECTIVE = 'effective'      # accepted and its effect observed
    REFUSED = 'refused'          # the backend refused it now
    FAILED = 'failed'            # the call raised
    TIMED_OUT = 'timed out'      # the call did not return in time
    INEFFECTIVE = 'ineffective'  # accepted, no effect within the bound


@dataclasses.dataclass
class Attempt:
    """One try of one action; times in the latch's clock (seconds)."""

    number: int
    action: str
    started: float                 # the driver call entered (set again then)
    returned: float | None = None
    effective_at: float | None = None
    result: Result = Result.PENDING
    error: str = ''
    #: when the latch began the attempt (the monitor committed to it and
    #: queued its call); ``started`` is when the call was entered
    begun: float | None = None

    def __post_init__(self) -> None:
        if self.begun is None:
            self.begun = self.started

    def describe(self) -> str:
        text = f'attempt {self.number}: {self.action} {self.result.value}'
        return f'{text} ({self.error})' if self.error else text


def chain(policy: lmcaps_policy.EffectivePolicy,
          declaration: caps.Declaration, *, prepared_postcopy: bool,
          escalate: bool = True) -> list[str]:
    """The actions to try in order for ``policy`` on this host.

    :param prepared_postcopy: the migration was started so that post-copy
        is possible.
    :param escalate: append abort (where usable) to a force-complete chain.
    """
    def usable(action: str) -> bool:
        return declaration.support(_OPERATION[action]).usable

    if policy.timeout_action is lmcaps_policy.TimeoutAction.ABORT:
        return [ABORT] if usable(ABORT) else []
    first = policy.mode or lmcaps_policy.choose_mode(policy, declaration)
    steps: list[str] = []
    if first is Mode.POSTCOPY and usable(POSTCOPY) and \
            policy.permit_post_copy and prepared_postcopy:
        steps.append(POSTCOPY)
    if first is not None and usable(PAUSE) and (
            first is Mode.PAUSE or escalate):
        steps.append(PAUSE)
    if escalate and steps and usable(ABORT):
        steps.append(ABORT)
    return steps


class ActionLatch:
    """Decides when to attempt which action, and when one took effect.

    :param steps: from :func:`chain`; empty means nothing can be done.
    :param deadline: time (in ``clock``) of the completion timeout; None
        means never.
    :param attempts_per_step: attempts of one action before escalating.
    :param backoff: seconds before the first retry; doubles per attempt.
    :param backoff_max: the longest wait between two attempts.
    :param effect_timeout: seconds an accepted action has to show its
        effect before it counts as ineffective.
    """

    def __init__(self, steps: list[str], deadline: float | None, *,
                 attempts_per_step: int = 3, backoff: float = 0.5,
                 backoff_max: float = 8.0, effect_timeout: float = 5.0,
                 clock: Callable[[], float]) -> None:
        self.steps = list(steps)
        self.deadline = deadline
        self.attempts_per_step = max(1, attempts_per_step)
        self.backoff = backoff
        self.backoff_max = max(backoff, backoff_max)
        self.effect_timeout = effect_timeout
        self._clock = clock
        self._lock = threading.Lock()
        self.attempts: list[Attempt] = []
        self.effective: Attempt | None = None
        self.seen_postcopy = False
        self.ended = False
        self.next_at: float | None = deadline
        self._step = 0
        self._in_step = 0
        self._last_phase: Phase | None = None

    # -- observations -----------------------------------------------------

    def observe(self, phase: Phase) -> Attempt | None:
        """Feed a reading; returns the attempt that became effective, if any."""
        with self._lock:
            if phase is Phase.POSTCOPY:
                self.seen_postcopy = True
            if phase.terminal:
                self.ended = True
            current = self._pending() or self._in_flight()
            if current is None:
                return None
            if phase in _EFFECT[current.action] or phase.terminal:
                current.result = Result.EFFECTIVE
                current.effective_at = self._clock()
                if current.returned is None:    # seen before the call
                    current.returned = current.effective_at   # returned
                self.effective = current
                self.next_at = None
                return current
            self._last_phase = phase
            return None

    @property
    def done(self) -> bool:
        """Nothing more will be attempted (effective, ended, post-copy)."""
        return (self.effective is not None or self.ended or
                self.seen_postcopy or not self.steps)

    # -- attempts ---------------------------------------------------------

    def due(self, now: float | None = None) -> str | None:
        """The action to attempt now, or None."""
        now = self._clock() if now is None else now
        with self._lock:
            if self.done or self.next_at is None or now < self.next_at:
                return None
            if self.deadline is not None and not now > self.deadline:
                return None
            if any(a.result is Result.PENDING for a in self.attempts):
                return None
            return self.steps[self._step]

    def begin(self, action: str) -> Attempt:
        with self._lock:
            attempt = Attempt(len(self.attempts) + 1, action, self._clock())
            self.attempts.append(attempt)
            self.next_at = None
            return attempt

    def accepted(self, attempt: Attempt, at: float | None = None) -> None:
        """The call returned: the backend accepted it; effect pending.

        :param at: when it returned (in ``clock``); now by default.
        """
        with self._lock:
            if attempt.result is Result.EFFECTIVE:
                return          # its effect was seen before the call returned
            attempt.returned = self._clock() if at is None else at
            if self.ended and self.effective is None:
                # the migration ended while the call was in flight
                attempt.result = Result.EFFECTIVE
                attempt.effective_at = attempt.returned
                self.effective = attempt

    def failed(self, attempt: Attempt, result: Result, error: str, *,
               give_up_step: bool = False, at: float | None = None) -> None:
        """The call raised (refused, failed, timed out): retry later.

        :param give_up_step: the action can never work here (declared
            missing): go to the next step at once.
        :param at: when it returned (in ``clock``); now by default.  The
            backoff counts from then.
        """
        with self._lock:
            if attempt.result is Result.EFFECTIVE:
                return          # its effect was seen while the call ran
            attempt.returned = self._clock() if at is None else at
            attempt.result, attempt.error = result, error
            if give_up_step:
                self._in_step = self.attempts_per_step
            self._schedule_next(attempt.returned)

    def expire(self) -> Attempt | None:
        """Mark a pending attempt ineffective if its bound passed."""
        with self._lock:
            current = self._pending()
            if current is None or current.returned is None:
                return None
            if self._clock() - current.returned <= self.effect_timeout:
                return None
            current.result = Result.INEFFECTIVE
            seen = ('' if self._last_phase is None else
                    f'phase still {self._last_phase.value} ')
            current.error = (f'{seen}{self.effect_timeout:g} s after the '
                             f'call was accepted')
            self._schedule_next()
            return current

    def awaiting_effect(self) -> bool:
        """True while an accepted call's effect is not yet seen."""
        with self._lock:
            return self._pending() is not None

    def wake_at(self) -> float | None:
        """When, in the latch's clock, :meth:`due` or :meth:`expire` may
        next change its answer without a new reading.

        :returns: seconds: the retry or deadline time (``due`` needs the
            clock past the deadline), or a pending attempt's effect bound;
            None while nothing is scheduled (done, or a call in flight).
        """
        with self._lock:
            if self.done:
                return None
            pending = self._pending()
            if pending is not None:
                assert pending.returned is not None
                return pending.returned + self.effect_timeout
            if self._in_flight() is not None or self.next_at is None:
                return None
            if self.deadline is None:
                return self.next_at
            return max(self.next_at, self.deadline)

    def postpone(self, seconds: float) -> None:
        """Nothing could be attempted now (no fresh reading): try later."""
        with self._lock:
            if self.next_at is not None:
                self.next_at = max(self.next_at, self._clock() + seconds)

    # -- internals (under the lock) ---------------------------------------

    def _pending(self) -> Attempt | None:
        for attempt in reversed(self.attempts):
            if (attempt.result is Result.PENDING and
                    attempt.returned is not None):
                return attempt
        return None

    def _in_flight(self) -> Attempt | None:
        last = self.attempts[-1] if self.attempts else None
        if last is not None and last.result is Result.PENDING and \
                last.returned is None:
            return last
        return None

    def _schedule_next(self, now: float | None = None) -> None:
        self._in_step += 1
        if (self._in_step >= self.attempts_per_step and
                self._step + 1 < len(self.steps)):
            self._step += 1
            self._in_step = 0
        tries = len(self.attempts)
        wait = min(self.backoff_max, self.backoff * 2 ** max(0, tries - 1))
        self.next_at = (self._clock() if now is None else now) + wait
