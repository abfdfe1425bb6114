"""One watched migration: its monitor-side state, handle and outcome."""

from __future__ import annotations

import dataclasses
import threading

from lmcaps import policy as lmcaps_policy
from lmcaps.drivers import base


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How a watched migration ended, and what the monitor did about it.

    :param phase: the terminal phase seen (or the last phase if stopped;
        PREPARING if never observed).
    :param action: ``abort``, ``postcopy``, ``pause``, ``force_complete``
        (no mode was usable) or None (never fired).
    :param action_error: why the action failed or was refused.
    :param deadline: monotonic time of the deadline (None = no timeout).
    :param fired_at: monotonic time the action call returned.
    :param resumed_source: a guest paused by the action was resumed on the
        source after the migration failed.
    :param location: where the guest is and whether it runs, asked of the
        backend when the migration ended (``unknown`` when it could not
        be asked).
    :param message: the backend's reason for a failure, or the driver's
        recovery note.
    """

    phase: base.Phase
    action: str | None
    action_error: str | None
    deadline: float | None
    fired_at: float | None
    resumed_source: bool
    location: base.GuestLocation = base.GuestLocation.unknown()
    message: str = ''

    @property
    def guest(self) -> str:
        """The observed location as text, e.g. ``source (running)``."""
        return str(self.location)


@dataclasses.dataclass(eq=False)
class State:
    """Monitor-side state of one watched migration (guarded by the lock)."""

    driver: base.LiveMigrationDriver
    migration: base.Migration
    policy: lmcaps_policy.EffectivePolicy
    instance_uuid: str
    request_id: str
    deadline: float | None
    busy: bool = False              # a worker owns it
    again: bool = False             # a timer fired while busy
    poll_at: float | None = None    # pending poll timer
    deadline_at: float | None = None  # pending deadline timer
    latched: bool = False           # the deadline was handled: never again
    skipped: str | None = None      # why the deadline caused no action
    seen_postcopy: bool = False
    blind_since: float | None = None   # get_progress failing since then
    blind_reported: bool = False
    phase: base.Phase | None = None
    action: str | None = None
    action_error: str | None = None
    fired_at: float | None = None
    paused: bool = False            # our pause action succeeded
    outcome: Outcome | None = None
    finished: threading.Event = dataclasses.field(
        default_factory=threading.Event)


class Watch:
    """A handle on one watched migration, returned by ``watch()``."""

    def __init__(self, state: State) -> None:
        self._state = state
        self.migration = state.migration
        self.policy = state.policy

    def wait(self, timeout: float | None = None) -> Outcome | None:
        """Block until the migration ends; None if ``timeout`` passed first."""
        if self._state.finished.wait(timeout):
            return self._state.outcome
        return None

    @property
    def done(self) -> bool:
        return self._state.finished.is_set()
