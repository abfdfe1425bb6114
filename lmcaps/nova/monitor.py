"""The per-instance timeout in nova's libvirt live-migration monitor.

nova's ``LibvirtDriver._live_migration_monitor`` loops every 0.5 s; on each
pass it runs the queued migration tasks (``migration.run_tasks``) and then
asks ``migration.should_trigger_timeout_action(instance, elapsed,
completion_timeout, status)``.  While a monitor runs, :class:`MigrationState`
answers that question instead (always no), with the latch the core monitor
uses (:class:`lmcaps.latch.ActionLatch`, one implementation):

* the deadline is the per-instance ``completion_timeout`` if one was given,
  else nova's (re-read on every pass, as the option is mutable);
* the action fires from lmcaps's own timer (:mod:`lmcaps.nova.timer`,
  started in :func:`begin`, on the clock nova's ``elapsed`` uses) at the
  deadline, not on nova's next pass; nova's pass stays the fallback
  observer (it acts where the timer has not, e.g. a deadline that passed
  before nova saw the job running, the first moment the timer may act);
* lmcaps carries out the action through nova's own guest calls, with the
  bookkeeping nova's paths do: abort by ``guest.abort_job()``; post-copy by
  ``guest.migrate_start_postcopy()`` and the migration status
  ``running (post-copy)`` saved (``migration.trigger_postcopy_switch``);
  pause by ``guest.pause()`` and ``unpause`` queued on nova's
  on_migration_failure (``migration.run_tasks`` where post-copy is not
  enabled or ``force_complete_mode = pause``);
* an action counts once it *took effect*: the switch to post-copy accepted
  (the status nova reads), the guest seen paused, or (abort) the job ended.
  A refused or ineffective action (``[lmcaps]
  timeout_action_effect_timeout``) is retried with backoff
  (``timeout_action_backoff``, doubling up to
  ``timeout_action_backoff_max``) and escalates post-copy -> pause -> abort
  after ``timeout_action_attempts`` (``timeout_action_escalation``);
  nothing is attempted once the migration is in post-copy.

Stock nova instead checks on its 0.5 s pass (up to 0.5 s late), queues a
force-complete for its next pass (another 0.5 s), and repeats its action on
every pass for as long as the migration runs past the timeout.

Each concluded attempt is recorded as an instance action event
``lmcaps_live_migration_timeout_action`` (best effort: it never changes the
migration; written on nova's thread).  Its result is Error — the migration
missed its deadline — because nova keeps an event's details only for Error.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import threading
from typing import Any

from nova.compute import power_state
from nova import objects
from nova.virt.libvirt import driver as nova_driver
from oslo_config import cfg
from oslo_log import log as logging

from lmcaps import capabilities as caps
from lmcaps import conf as lmcaps_conf
from lmcaps import events as lmcaps_events
from lmcaps import latch as latch_mod
from lmcaps import policy as lmcaps_policy
from lmcaps.drivers import model
from lmcaps.nova import carry
from lmcaps.nova import events as nova_events
from lmcaps.nova import policy as nova_policy
from lmcaps.nova import timer as lmcaps_timer

LOG = logging.getLogger(__name__)

#: nova's migration status once it switched to post-copy.
POST_COPY_STATUS = 'running (post-copy)'

#: How many of nova's latest pass times a state keeps (for diagnostics).
PASSES_KEPT = 64

R = latch_mod.Result
Phase = model.Phase


@dataclasses.dataclass
class MigrationState:
    """What lmcaps knows about one running migration (one monitor call).

    Times are nova's ``elapsed`` seconds since the migration started.  The
    lock is taken by nova's passes (``run_tasks``, the timeout question)
    and by the timer, so an action and nova's task runner never interleave.
    """

    driver: Any
    conf: cfg.ConfigOpts
    context: Any
    instance: Any
    guest: Any
    layers: nova_policy.Layers
    latch: latch_mod.ActionLatch | None = None
    post_copy_enabled: bool = False
    in_post_copy: bool = False
    now: float = 0.0
    unusable_reported: bool = False
    last_policy: lmcaps_policy.EffectivePolicy | None = None
    history: list[str] = dataclasses.field(default_factory=list)
    recorded: bool = False
    # created when the state is, so that under eventlet it is a green lock
    lock: threading.RLock = dataclasses.field(
        default_factory=lambda: threading.RLock())
    #: nova's Migration and its on_migration_failure queue, from run_tasks
    migration: Any = None
    on_failure: collections.deque | None = None
    #: who began each attempt, in order: ``timer`` or ``pass``
    fired_by: list[str] = dataclasses.field(default_factory=list)
    #: nova's ``elapsed`` on its latest passes (newest last)
    passes: collections.deque = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=PASSES_KEPT))
    #: event details to write on nova's thread
    outbox: list[str] = dataclasses.field(default_factory=list)
    timer: lmcaps_timer.DeadlineTimer | None = None

    def policy(self, completion_timeout: int) -> lmcaps_policy.EffectivePolicy:
        """The effective policy now, over nova's current host-wide timeout."""
        return nova_policy.resolve(self.conf, self.layers, completion_timeout)

    @property
    def fired(self) -> bool:
        """Whether any timeout action was attempted."""
        return bool(self.latch is not None and self.latch.attempts)

    # -- the timer ----------------------------------------------------------

    def start_timer(self) -> None:
        """Start lmcaps's timer (its origin is now, before nova's start)."""
        self.timer = lmcaps_timer.DeadlineTimer(
            self.lock, self._wake_at, self._tick,
            name=f'lmcaps-deadline-{self.instance.uuid}')
        self.timer.start()

    def stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.stop()

    def _wake_at(self) -> float | None:
        """Called by the timer under the lock: when to act next."""
        if self.latch is None or self.last_policy is None or \
                self.migration is None:
            return None         # nova has not seen the job running yet
        return self.latch.wake_at()

    def _tick(self) -> bool:
        """Called by the timer under the lock when :meth:`_wake_at` came."""
        assert self.timer is not None and self.latch is not None
        assert self.last_policy is not None
        self.now = max(self.now, self.timer.elapsed())
        before = len(self.latch.attempts), self.latch.done
        self._step(self.last_policy, self.latch, 'timer')
        return (len(self.latch.attempts), self.latch.done) != before

    # -- nova's loop ------------------------------------------------------

    def tasks_run(self, is_post_copy_enabled: bool,
                  on_migration_failure: collections.deque | None = None,
                  migration: Any = None) -> bool:
        """Called where nova runs its queued tasks (holding :attr:`lock`);
        returns the ``is_post_copy_enabled`` nova's task runner is to use."""
        with self.lock:
            self.post_copy_enabled = is_post_copy_enabled
            if on_migration_failure is not None:
                self.on_failure = on_migration_failure
            if migration is not None:
                self.migration = migration
            if is_post_copy_enabled and self.pause_only():
                return False
            return is_post_copy_enabled

    def should_trigger(self, elapsed: float, completion_timeout: int,
                       migration_status: str | None) -> bool:
        """Stands in for nova's ``should_trigger_timeout_action``: lmcaps
        acts (or not) here or from its timer, so the answer is always
        False.  This pass is the fallback: it acts only where the timer has
        not (a deadline passed before nova saw the job running, a timer
        that could not run)."""
        with self.lock:
            self.passes.append(float(elapsed))
            if self.timer is not None:
                self.timer.align(float(elapsed))
            self.now = max(self.now, float(elapsed))
            if migration_status == POST_COPY_STATUS:
                self.in_post_copy = True
            policy = self.last_policy = self.policy(completion_timeout)
            latch = self._latch(policy)
            self._step(policy, latch, 'pass')
            if self.timer is not None:
                self.timer.poke()
        self._write_outbox()     # not holding the lock: the timer may act
        return False

    def aborted_by_lmcaps(self) -> bool:
        """Whether lmcaps made an abort call that did not fail (libvirt
        then ends the migrate call with VIR_ERR_OPERATION_ABORTED, possibly
        before the abort call itself returned)."""
        with self.lock:
            return self.latch is not None and any(
                a.action == latch_mod.ABORT and
                a.result in (R.PENDING, R.EFFECTIVE)
                for a in self.latch.attempts)

    def pause_only(self) -> bool:
        """Whether a force-complete must pause, not switch to post-copy."""
        with self.lock:
            if self.latch is not None and self.latch.attempts:
                return self.latch.attempts[-1].action == latch_mod.PAUSE
            return (self.policy(0).force_complete_mode is
                    lmcaps_policy.ModeChoice.PAUSE)

    def ended(self) -> None:
        """nova's monitor returned: the migration is over."""
        self.stop_timer()
        with self.lock:
            latch = self.latch
            if latch is not None and latch.attempts and \
                    self.last_policy is not None:
                last = latch.attempts[-1]
                if last.result is R.PENDING:
                    # The job ended while the effect was awaited (an abort
                    # ends the job; nova's monitor then stops asking).
                    latch.observe(Phase.CANCELLED
                                  if last.action == latch_mod.ABORT
                                  else Phase.COMPLETED)
                    self._attempt_event(self.last_policy, last,
                                        note='the job ended while its '
                                             "effect was awaited (nova's "
                                             'monitor returned)')
                self._flush(self.last_policy)
        self._write_outbox()

    # -- internals (under the lock) ---------------------------------------

    def _step(self, policy: lmcaps_policy.EffectivePolicy,
              latch: latch_mod.ActionLatch, source: str) -> None:
        """Observe, then attempt what the latch says is due now."""
        if self.migration is not None and \
                self.migration.status == POST_COPY_STATUS:
            self.in_post_copy = True
        effective = latch.observe(self._phase(latch))
        if effective is not None:
            self._attempt_event(policy, effective)
        expired = latch.expire()
        if expired is not None:
            self._attempt_event(policy, expired)
        if not latch.steps:
            self._nothing_usable(policy)
            return
        action = latch.due(self.now)
        if action is None:
            return
        attempt = latch.begin(action)
        self.fired_by.append(source)
        LOG.warning('Live migration not completed after %(timeout)g sec '
                    '(%(tsrc)s); lmcaps attempts %(action)s (attempt '
                    '%(n)d at %(at).3f s, timeout_action %(ta)s from '
                    '%(asrc)s, %(by)s)',
                    {'timeout': policy.completion_timeout,
                     'tsrc': policy.sources['completion_timeout'],
                     'action': action, 'n': attempt.number,
                     'at': attempt.started,
                     'ta': policy.timeout_action.value,
                     'asrc': policy.sources['timeout_action'],
                     'by': 'lmcaps timer' if source == 'timer'
                     else "nova's monitor pass"},
                    instance=self.instance)
        self._call(policy, latch, attempt, source)
        effective = latch.observe(self._phase(latch))
        if effective is not None:
            self._attempt_event(policy, effective)

    def _latch(self, policy: lmcaps_policy.EffectivePolicy
               ) -> latch_mod.ActionLatch:
        timeout = policy.completion_timeout
        deadline = float(timeout) if timeout else None
        if self.latch is None:
            opts = self.conf[lmcaps_conf.GROUP]
            steps = self._steps(policy, opts.timeout_action_escalation)
            self.latch = latch_mod.ActionLatch(
                steps, deadline,
                attempts_per_step=opts.timeout_action_attempts,
                backoff=opts.timeout_action_backoff,
                backoff_max=opts.timeout_action_backoff_max,
                effect_timeout=opts.timeout_action_effect_timeout,
                clock=lambda: self.now)
        elif not self.latch.attempts and self.latch.deadline != deadline:
            # nova's host-wide timeout is mutable: follow it until we act
            self.latch.deadline = self.latch.next_at = deadline
        return self.latch

    def _steps(self, policy: lmcaps_policy.EffectivePolicy,
               escalate: bool) -> list[str]:
        """The latch's chain from what nova does here: its task runner
        switches to post-copy only where the migration's flags enable it
        (``is_post_copy_enabled``, which includes ``[libvirt]
        live_migration_permit_post_copy``), else pauses; abort is always
        possible."""
        enabled = self.post_copy_enabled
        here = {op: caps.complete() for op in caps.Operation}
        if not enabled:
            here[caps.Operation.FORCE_COMPLETE_POSTCOPY] = caps.missing(
                "this migration's flags do not enable post-copy")
        decl = caps.Declaration(driver='libvirt', title='nova libvirt',
                                capabilities=here)
        mode = policy.mode
        if mode is caps.ForceCompleteMode.POSTCOPY and not enabled:
            mode = None
        return latch_mod.chain(
            dataclasses.replace(policy, permit_post_copy=enabled, mode=mode),
            decl, prepared_postcopy=enabled, escalate=escalate)

    def _phase(self, latch: latch_mod.ActionLatch) -> Phase:
        """What nova and libvirt say now (asked, not inferred)."""
        if self.in_post_copy:
            return Phase.POSTCOPY
        last = latch.attempts[-1] if latch.attempts else None
        if last is not None and last.action == latch_mod.PAUSE and \
                last.result is R.PENDING:
            try:
                state = self.guest.get_power_state(self.driver._host)
            except Exception:
                LOG.debug('Could not read the power state', exc_info=True)
                state = None
            if state == power_state.PAUSED:
                return Phase.PAUSED
        return Phase.PRECOPY

    def _call(self, policy: lmcaps_policy.EffectivePolicy,
              latch: latch_mod.ActionLatch, attempt: latch_mod.Attempt,
              source: str) -> None:
        """Carry out ``attempt`` through nova's own guest calls, with the
        bookkeeping nova's own timeout and force-complete paths do."""
        libvirt = nova_driver.libvirt
        try:
            if attempt.action == latch_mod.ABORT:
                self.guest.abort_job()
            elif attempt.action == latch_mod.POSTCOPY:
                # migration.trigger_postcopy_switch, with the error kept
                self.guest.migrate_start_postcopy()
                LOG.info('Switching to post-copy migration mode',
                         instance=self.instance)
                self.in_post_copy = True
                self._save_post_copy(source)
            else:
                # migration.run_tasks where post-copy is not enabled
                self.guest.pause()
                if self.on_failure is not None:
                    self.on_failure.append('unpause')
        except libvirt.libvirtError as exc:
            LOG.warning('Failed to %s migration: %s', attempt.action, exc,
                        instance=self.instance)
            latch.failed(attempt, R.REFUSED, str(exc))
            self._attempt_event(policy, attempt)
        except Exception as exc:
            LOG.warning('Failed to %s migration', attempt.action,
                        exc_info=True, instance=self.instance)
            latch.failed(attempt, R.FAILED, f'{type(exc).__name__}: {exc}')
            self._attempt_event(policy, attempt)
        else:
            latch.accepted(attempt)

    def _save_post_copy(self, source: str) -> None:
        """Record 'running (post-copy)' in nova's Migration as nova's
        ``trigger_postcopy_switch`` does.  On nova's thread through nova's
        object; from the timer through a Migration of the same id on a
        copy of the context (a context carries its DB transaction and must
        not be used by two threads at once; nova's own object is saved
        concurrently by its loop)."""
        migration = self.migration
        if migration is None:
            return
        migration.status = POST_COPY_STATUS
        try:
            if source == 'pass':
                migration.save()
            else:
                record = objects.Migration(
                    context=copy.copy(migration._context), id=migration.id)
                record.status = POST_COPY_STATUS
                record.save()
        except Exception:
            LOG.warning("Could not save the migration's post-copy status",
                        exc_info=True, instance=self.instance)

    def _nothing_usable(self, policy: lmcaps_policy.EffectivePolicy) -> None:
        timeout = policy.completion_timeout
        if self.unusable_reported or not timeout or self.now <= timeout:
            return
        self.unusable_reported = True
        LOG.warning('Live migration reached its timeout but %s is not '
                    'usable on this host', policy.timeout_action.value,
                    instance=self.instance)
        self._record(self._summary(policy) +
                     '; no action: not usable on this host')

    def _summary(self, policy: lmcaps_policy.EffectivePolicy) -> str:
        src = policy.sources
        timeout = policy.completion_timeout
        text = (f"not completed: completion_timeout "
                f"{'never' if timeout is None else f'{timeout:g}s'} "
                f"({src['completion_timeout']}); timeout_action "
                f"{policy.timeout_action.value} ({src['timeout_action']})")
        if policy.timeout_action is lmcaps_policy.TimeoutAction.FORCE_COMPLETE:
            text += (f', force_complete_mode '
                     f'{policy.force_complete_mode.value} '
                     f"({src['force_complete_mode']})")
        return text

    def _attempt_event(self, policy: lmcaps_policy.EffectivePolicy,
                       attempt: latch_mod.Attempt, note: str = '') -> None:
        """Note how an attempt ended; the event is written once the action
        took effect or the migration ended (nova keeps one event of a name
        per action, so it carries every attempt)."""
        # nova cuts details at 255 characters: keep each attempt short
        text = (f'attempt {attempt.number}: {attempt.action} at '
                f'{attempt.started:g}s {attempt.result.value}')
        if attempt.error and attempt.result in (R.FAILED, R.REFUSED):
            text += f' ({attempt.error[:60]})'
        if note:
            text += f' ({note})'
        latch = self.latch
        if attempt.result is not R.EFFECTIVE and latch is not None and \
                not latch.done and latch.next_at is not None:
            text += f', next at {latch.next_at:g}s'
        LOG.warning('lmcaps timeout action: %s', text, instance=self.instance)
        self.history.append(text)
        if attempt.result is R.EFFECTIVE:
            self._flush(policy)

    def _flush(self, policy: lmcaps_policy.EffectivePolicy) -> None:
        if self.recorded or not self.history:
            return
        self.recorded = True
        self._record(f'{self._summary(policy)}; ' + '; '.join(self.history))

    def _record(self, details: str) -> None:
        """Queue an event; it is written on nova's thread
        (:meth:`_write_outbox`), never from the timer."""
        self.outbox.append(details)

    def _write_outbox(self) -> None:
        """Write the queued events (on nova's thread, not holding the
        lock)."""
        with self.lock:
            queued, self.outbox[:] = list(self.outbox), []
        for details in queued:
            try:
                nova_events.NovaEventStore(self.context).record(
                    self.context.request_id, self.instance.uuid,
                    lmcaps_events.TIMEOUT_ACTION, lmcaps_events.ERROR,
                    host=self.conf.host, details=details)
            except Exception:
                LOG.warning('Could not record the lmcaps timeout event of '
                            'instance %s', self.instance.uuid, exc_info=True)


_lock = threading.Lock()
_states: dict[str, MigrationState] = {}


def begin(driver: Any, conf: cfg.ConfigOpts, context: Any, instance: Any,
          guest: Any) -> MigrationState:
    """Register the state of a migration whose monitor starts now.

    Its per-instance values are those the source pre-check resolved
    (:func:`lmcaps.nova.carry.for_monitor`), not a second reading of the
    instance.  Never raises.
    """
    try:
        layers = carry.for_monitor(conf, context, instance).layers
    except Exception:
        LOG.exception('lmcaps could not read the per-instance values of %s; '
                      "the migration runs on nova's host-wide values",
                      instance.uuid)
        layers = []
    state = MigrationState(driver, conf, context, instance, guest, layers)
    with _lock:
        _states[instance.uuid] = state
    state.start_timer()
    return state


def end(state: MigrationState) -> None:
    """Forget a migration whose monitor returned."""
    try:
        state.ended()
    except Exception:
        LOG.warning('lmcaps could not conclude the timeout action of %s',
                    state.instance.uuid, exc_info=True)
    with _lock:
        if _states.get(state.instance.uuid) is state:
            del _states[state.instance.uuid]


def lookup(instance_uuid: str) -> MigrationState | None:
    with _lock:
        return _states.get(instance_uuid)
