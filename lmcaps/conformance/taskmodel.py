"""A migration task in simulated time, for protocol simulators of task backends.

vSphere (``RelocateVM_Task`` + ``CancelTask``), XenAPI
(``Async.VM.pool_migrate`` + ``task.cancel``), Hyper-V (``Msvm_MigrationJob``
+ ``RequestStateChange``) and PowerVM (a ``Migrate`` job + ``MigrateAbort``)
all run a live migration as a server-side task whose state a client polls.
Their simulators share this one engine and only translate it into their
vendor's vocabulary (``TaskInfo.state``, ``task.status``, ``JobState``,
``Status``), so that the four of them agree on time, progress and faults.

The model is lazy and thread-safe: nothing runs in the background; every
read brings the task to "now" on its clock and fires the transition
callbacks (``on_success``, ``on_cancelled``, ``on_error``) exactly once, in
the reading thread, under no lock of the model.  A simulator that answers a
request first calls :meth:`MigrationTask.advance` (or reads a property).

Life cycle (:class:`TaskState`)::

    QUEUED --queued s--> RUNNING --duration s--> SUCCESS
       |                    |  \\--fail()/fail_at--> ERROR
       |                    cancel() accepted
       |                    v
       +----------------> CANCELLING --cancel_delay s--> CANCELLED
                            \\--(reaches 100 % first)--> SUCCESS

A cancel is accepted only while :attr:`MigrationTask.cancellable`: the task
is queued or running and its progress is below ``cancellable_until`` (xapi
prohibits cancellation just before it suspends the domain for the final
copy; vSphere reports ``TaskInfo.cancelable``).  Once accepted, the
migration goes on copying for ``cancel_delay`` seconds; if it reaches 100 %
in that time it *completes while the cancel is in flight* (one of the
conformance faults) and the task ends SUCCESS.
"""

from __future__ import annotations

import enum
import math
import threading
import time
from collections.abc import Callable

Callback = Callable[['MigrationTask'], None]


class TaskState(enum.Enum):
    """Where a migration task is in its life cycle."""

    QUEUED = 'queued'
    RUNNING = 'running'
    CANCELLING = 'cancelling'
    CANCELLED = 'cancelled'
    SUCCESS = 'success'
    ERROR = 'error'

    @property
    def finished(self) -> bool:
        return self in (TaskState.CANCELLED, TaskState.SUCCESS,
                        TaskState.ERROR)


class TaskNotCancellable(Exception):
    """cancel() on a task that is running but may not be cancelled now."""


class TaskFinished(Exception):
    """cancel() or fail() on a task that has already finished."""

    def __init__(self, state: TaskState) -> None:
        super().__init__(f'the task already finished ({state.value})')
        self.state = state


class MigrationTask:
    """One migration task whose progress advances with its clock.

    :param task_id: the simulator's reference for it (an OpaqueRef, a moref,
        a WMI InstanceID, a job id).
    :param duration: seconds of RUNNING from 0 to 100 %; ``math.inf`` for a
        migration that never converges (it stays below 100 % forever and its
        progress creeps towards ``stuck_at``).
    :param queued: seconds spent QUEUED before RUNNING.
    :param cancel_delay: seconds from an accepted cancel to CANCELLED.
    :param cancellable_until: fraction of progress from which a cancel is
        no longer accepted (1.0: cancellable until the end).
    :param fail_at: fraction at which the task fails by itself (None: never).
    :param stuck_at: for ``duration=inf``, the fraction approached.
    :param clock: monotonic clock in seconds.
    :param on_success, on_cancelled, on_error: called once, with the task,
        when it reaches that state (move the guest, mark it failed ...).
    """

    def __init__(self, task_id: str, *, duration: float,
                 queued: float = 0.0, cancel_delay: float = 0.0,
                 cancellable_until: float = 1.0,
                 fail_at: float | None = None, stuck_at: float = 0.9,
                 clock: Callable[[], float] = time.monotonic,
                 on_success: Callback | None = None,
                 on_cancelled: Callback | None = None,
                 on_error: Callback | None = None) -> None:
        if not duration > 0 or queued < 0 or cancel_delay < 0:
            raise ValueError('duration must be > 0, queued and cancel_delay '
                             '>= 0')
        self.task_id = task_id
        self.duration = duration
        self.queued = queued
        self.cancel_delay = cancel_delay
        self.cancellable_until = cancellable_until
        self.fail_at = fail_at
        self.stuck_at = stuck_at
        self._clock = clock
        self._callbacks = {TaskState.SUCCESS: on_success,
                           TaskState.CANCELLED: on_cancelled,
                           TaskState.ERROR: on_error}
        self._lock = threading.Lock()
        self.created = clock()
        self._state = TaskState.QUEUED
        self._progress = 0.0
        self._at = self.created            # time the model was brought to
        self._cancel_at: float | None = None   # when CANCELLING ends
        self.cancel_requested = False
        self.error: str | None = None
        self.finished_at: float | None = None
        self._fired: set[TaskState] = set()

    # -- reading ------------------------------------------------------------

    def advance(self) -> TaskState:
        """Bring the task to now; fire due callbacks; returns the state."""
        with self._lock:
            self._advance(self._clock())
            state = self._state
            due = state.finished and state not in self._fired
            if due:
                self._fired.add(state)
        if due:
            callback = self._callbacks.get(state)
            if callback is not None:
                callback(self)
        return state

    @property
    def state(self) -> TaskState:
        return self.advance()

    @property
    def progress(self) -> float:
        """Completed fraction, 0..1 (1.0 once finished, as xapi reports)."""
        self.advance()
        with self._lock:
            return self._progress

    @property
    def percent(self) -> int:
        """Progress as a whole percentage 0..100."""
        return int(math.floor(self.progress * 100))

    @property
    def cancellable(self) -> bool:
        """Whether :meth:`cancel` would be accepted now."""
        self.advance()
        with self._lock:
            return self._cancellable()

    # -- acting -------------------------------------------------------------

    def cancel(self) -> None:
        """Request cancellation; returns once accepted (it takes effect later).

        A second cancel of a CANCELLING task is accepted and changes nothing
        ("multiple cancel requests will be treated as a single cancelation
        request", vSphere's CancelTask).

        :raises: TaskFinished if the task already ended; TaskNotCancellable
            if it runs past ``cancellable_until``.
        """
        self.advance()
        with self._lock:
            if self._state.finished:
                raise TaskFinished(self._state)
            if self._state is TaskState.CANCELLING:
                return
            if not self._cancellable():
                raise TaskNotCancellable(
                    f'task {self.task_id} can no longer be cancelled '
                    f'({self._progress:.0%} done)')
            self.cancel_requested = True
            now = self._clock()
            if self._state is TaskState.QUEUED:
                self._finish(TaskState.CANCELLED, now, 'cancelled')
            else:
                self._state = TaskState.CANCELLING
                self._cancel_at = now + self.cancel_delay
        self.advance()

    def fail(self, message: str = 'simulated failure') -> None:
        """Make the task fail now (fault injection).

        :raises: TaskFinished if it already ended.
        """
        self.advance()
        with self._lock:
            if self._state.finished:
                raise TaskFinished(self._state)
            self._finish(TaskState.ERROR, self._clock(), message)
        self.advance()

    def set_duration(self, duration: float) -> None:
        """Change the remaining speed: the rest now takes ``duration`` in all.

        Used to let a STUCK migration converge, or to stall a running one.
        """
        with self._lock:
            self._advance(self._clock())
            self.duration = duration

    # -- model (call under the lock) ------------------------------------------

    def _cancellable(self) -> bool:
        return (self._state in (TaskState.QUEUED, TaskState.RUNNING) and
                self._progress < self.cancellable_until)

    def _rate(self) -> float:
        return 0.0 if math.isinf(self.duration) else 1.0 / self.duration

    def _advance(self, now: float) -> None:
        if self._state.finished or now <= self._at:
            return
        if self._state is TaskState.QUEUED:
            start = self.created + self.queued
            if now < start:
                self._at = now
                return
            self._state, self._at = TaskState.RUNNING, start
        if math.isinf(self.duration):
            # Never converges: approach stuck_at, never reach 100 %.
            span = now - self.created - self.queued
            self._progress = self.stuck_at * (1 - math.exp(-span / 10.0))
            self._at = now
            self._check_cancel(now)
            if self.fail_at is not None and self._progress >= self.fail_at:
                self._finish(TaskState.ERROR, now, 'simulated failure')
            return
        # Events ahead: reaching fail_at, reaching 100 %, cancel taking
        # effect; the first one that is due wins.
        rate = self._rate()
        done_at = self._at + (1.0 - self._progress) / rate
        fail_at = (None if self.fail_at is None else
                   self._at + max(0.0, self.fail_at - self._progress) / rate)
        candidates = [(done_at, TaskState.SUCCESS)]
        if fail_at is not None:
            candidates.append((fail_at, TaskState.ERROR))
        if self._state is TaskState.CANCELLING and self._cancel_at is not None:
            candidates.append((self._cancel_at, TaskState.CANCELLED))
        when, outcome = min(candidates, key=lambda c: c[0])
        if when <= now:
            self._progress = min(1.0, self._progress + (when - self._at) * rate)
            message = {TaskState.SUCCESS: None,
                       TaskState.ERROR: 'simulated failure',
                       TaskState.CANCELLED: 'cancelled'}[outcome]
            self._finish(outcome, when, message)
            return
        self._progress = min(1.0, self._progress + (now - self._at) * rate)
        self._at = now

    def _check_cancel(self, now: float) -> None:
        if (self._state is TaskState.CANCELLING and
                self._cancel_at is not None and now >= self._cancel_at):
            self._finish(TaskState.CANCELLED, self._cancel_at, 'cancelled')

    def _finish(self, state: TaskState, when: float,
                message: str | None) -> None:
        self._state = state
        self._at = when
        self.finished_at = when
        if state is TaskState.SUCCESS:
            self._progress = 1.0
        if state is not TaskState.SUCCESS:
            self.error = message
