"""One watched migration: its monitor-side state, handle and outcome."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any

from lmcaps import latch as latch_mod
from lmcaps import policy as lmcaps_policy
from lmcaps.drivers import base


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How a watched migration ended, and what the monitor did about it.

    :param phase: the terminal phase seen (or the last phase if stopped;
        PREPARING if never observed).
    :param action: the effective action (``abort``, ``postcopy``,
        ``pause``), else the last one attempted, ``force_complete`` when no
        mode was usable, or None (nothing attempted).
    :param action_error: why the last attempt failed, when none took effect.
    :param deadline: monotonic time of the deadline (None = no timeout).
    :param fired_at: monotonic time the effective (else the last) action
        call returned.
    :param resumed_source: a guest paused by the action was resumed on the
        source after the migration failed.
    :param location: where the guest is and whether it runs, asked of the
        backend when the migration ended (``unknown`` when it could not
        be asked).
    :param message: the backend's reason for a failure, or the driver's
        recovery note.
    :param attempts: every attempt of the timeout action, in order.
    :param effective_at: monotonic time the action's effect was observed.
    :param interrupted: the watch was interrupted (SIGINT/SIGTERM/SIGHUP).
    :param ended: the migration ended (False: the monitor stopped first).
    """

    phase: base.Phase
    action: str | None
    action_error: str | None
    deadline: float | None
    fired_at: float | None
    resumed_source: bool
    location: base.GuestLocation = base.GuestLocation.unknown()
    message: str = ''
    attempts: tuple[latch_mod.Attempt, ...] = ()
    effective_at: float | None = None
    interrupted: str | None = None
    ended: bool = True

    @property
    def guest(self) -> str:
        """The observed location as text, e.g. ``source (running)``."""
        return str(self.location)


@dataclasses.dataclass(eq=False)
class State:
    """Monitor-side state of one watched migration."""

    driver: base.LiveMigrationDriver
    migration: base.Migration
    policy: lmcaps_policy.EffectivePolicy
    instance_uuid: str
    request_id: str
    deadline: float | None
    latch: latch_mod.ActionLatch
    polling: bool = False           # a poll owns it (guarded by the lock)
    acting: bool = False            # an action lane thread owns it
    poll_at: float | None = None    # pending poll timer
    action_at: float | None = None  # pending action timer
    effect_wait: float = 0.0        # next effect reading, after this delay
    effect_at: float | None = None  # pending effect-reading timer
    #: the attempt whose driver call a lane thread is in (lock); cleared by
    #: whichever comes first: the call's return, or its watchdog
    in_call: latch_mod.Attempt | None = None
    watchdog_at: float | None = None    # pending watchdog timer
    blind_since: float | None = None   # get_progress failing since then
    blind_reported: bool = False
    skipped_reported: bool = False     # deadline reached in post-copy
    unusable_reported: bool = False    # deadline reached, nothing usable
    progress: base.Progress | None = None   # the last reading
    read_at: float | None = None
    early_poll: bool = False        # the pending poll is at a predicted end
    interrupted: str | None = None
    paused: bool = False            # our pause took effect
    concluding: bool = False
    last_event: int = 0             # sequence of its last queued event
    outcome: Outcome | None = None
    #: held while a reading is fed to the latch and an effective attempt
    #: recorded, so that its event precedes the outcome event
    observing: threading.Lock = dataclasses.field(
        default_factory=threading.Lock)
    finished: threading.Event = dataclasses.field(
        default_factory=threading.Event)
    #: called (no arguments, on a monitor thread) once the outcome is set
    on_done: Callable[[], None] | None = None

    @property
    def phase(self) -> base.Phase | None:
        return None if self.progress is None else self.progress.phase

    @property
    def seen_postcopy(self) -> bool:
        return self.latch.seen_postcopy


class Watch:
    """A handle on one watched migration, returned by ``watch()``.

    :param events: the monitor's event queue: :meth:`wait` returns once the
        migration's events are stored too.
    """

    def __init__(self, state: State, events: Any = None) -> None:
        self._state = state
        self._events = events
        self.migration = state.migration
        self.policy = state.policy
        self.instance_uuid = state.instance_uuid
        self.request_id = state.request_id

    def wait(self, timeout: float | None = None) -> Outcome | None:
        """Block until the migration ended and its events are stored.

        :returns: the outcome; None if ``timeout`` (seconds) passed first.
        """
        start = time.monotonic()
        if not self._state.finished.wait(timeout):
            return None
        if self._events is not None:
            left = None if timeout is None else max(
                0.0, timeout - (time.monotonic() - start))
            if not self._events.wait_written(self._state.last_event, left):
                return None
        return self._state.outcome

    @property
    def done(self) -> bool:
        return self._state.finished.is_set()

    @property
    def progress(self) -> base.Progress | None:
        """The monitor's last reading (no driver call)."""
        return self._state.progress

    @property
    def deadline(self) -> float | None:
        return self._state.deadline

    @property
    def interrupted(self) -> str | None:
        """Why :meth:`TimeoutMonitor.interrupt` aborted it (e.g.
        ``SIGTERM``), or None."""
        return self._state.interrupted

    @property
    def seen_postcopy(self) -> bool:
        """Whether the migration was seen in post-copy (never to retry)."""
        return self._state.seen_postcopy

    @property
    def attempts(self) -> list[latch_mod.Attempt]:
        """The timeout action's attempts so far."""
        return list(self._state.latch.attempts)
