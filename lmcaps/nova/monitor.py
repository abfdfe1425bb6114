"""The per-instance timeout in nova's libvirt live-migration monitor.

nova's ``LibvirtDriver._live_migration_monitor`` loops every 0.5 s; on each
pass it asks ``migration.should_trigger_timeout_action(instance, elapsed,
completion_timeout, status)`` and, when told yes, carries out the host-wide
``[libvirt] live_migration_timeout_action``.  While a monitor runs,
:class:`MigrationState` answers that question instead:

* the deadline is the per-instance ``completion_timeout`` if one was given,
  else nova's (still re-read on every pass, as the option is mutable);
* it answers yes at most once per migration, and never once the migration
  is in post-copy;
* if the effective action is the one nova is about to read from its config,
  it answers yes and nova acts; otherwise lmcaps acts (abort, or queue a
  force-complete exactly as nova's API does) and answers no;
* ``force_complete_mode = pause`` makes nova's task runner pause the guest
  even on a post-copy capable migration.

An instance action event ``lmcaps_live_migration_timeout_action`` records
what fired and why (best effort: it never changes the migration).  Its
result is Error — the migration missed its deadline — because nova keeps an
event's details only for Error.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

from nova.virt.libvirt import driver as nova_driver
from oslo_config import cfg
from oslo_log import log as logging

from lmcaps import events as lmcaps_events
from lmcaps import exception
from lmcaps import policy as lmcaps_policy
from lmcaps.nova import events as nova_events
from lmcaps.nova import policy as nova_policy

LOG = logging.getLogger(__name__)

#: nova's migration status once it switched to post-copy.
POST_COPY_STATUS = 'running (post-copy)'


@dataclasses.dataclass
class MigrationState:
    """What lmcaps knows about one running migration (one monitor call)."""

    driver: Any
    conf: cfg.ConfigOpts
    context: Any
    instance: Any
    guest: Any
    layers: nova_policy.Layers
    fired: bool = False
    in_post_copy: bool = False
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def policy(self, completion_timeout: int) -> lmcaps_policy.EffectivePolicy:
        """The effective policy now, over nova's current host-wide timeout."""
        return nova_policy.resolve(self.conf, self.layers, completion_timeout)

    def should_trigger(self, elapsed: float, completion_timeout: int,
                       migration_status: str | None) -> bool:
        """Stands in for nova's ``should_trigger_timeout_action``."""
        with self.lock:
            if migration_status == POST_COPY_STATUS:
                self.in_post_copy = True
            if self.fired or self.in_post_copy:
                return False
            policy = self.policy(completion_timeout)
            if not lmcaps_policy.deadline_reached(
                    elapsed, policy.completion_timeout):
                return False
            self.fired = True
        action = policy.timeout_action.value
        nova_acts = action == self.conf.libvirt.live_migration_timeout_action
        LOG.warning('Live migration not completed after %(timeout)d sec '
                    '(%(tsrc)s); %(action)s (%(asrc)s) by %(who)s',
                    {'timeout': policy.completion_timeout,
                     'tsrc': policy.sources['completion_timeout'],
                     'action': action,
                     'asrc': policy.sources['timeout_action'],
                     'who': 'nova' if nova_acts else 'lmcaps'},
                    instance=self.instance)
        self._record(policy, elapsed)
        if nova_acts:
            return True
        self._act(policy)
        return False

    def pause_only(self) -> bool:
        """Whether a force-complete must pause, not switch to post-copy."""
        return (self.policy(0).force_complete_mode is
                lmcaps_policy.ModeChoice.PAUSE)

    def _act(self, policy: lmcaps_policy.EffectivePolicy) -> None:
        if policy.timeout_action is lmcaps_policy.TimeoutAction.FORCE_COMPLETE:
            # The same queue nova's force-complete API feeds; nova's
            # run_tasks switches to post-copy or pauses on the next pass.
            self.driver.live_migration_force_complete(self.instance)
            return
        libvirt = nova_driver.libvirt
        try:
            self.guest.abort_job()
        except libvirt.libvirtError as exc:
            # What nova's monitor does when its own abort fails.
            LOG.warning('Failed to abort migration %s', exc,
                        instance=self.instance)
            self.driver._clear_empty_migration(self.instance)
            raise

    def _record(self, policy: lmcaps_policy.EffectivePolicy,
                elapsed: float) -> None:
        src = policy.sources
        details = (f"not completed: completion_timeout "
                   f"{policy.completion_timeout:g}s "
                   f"({src['completion_timeout']}) reached after "
                   f"{elapsed:.0f}s; timeout_action "
                   f"{policy.timeout_action.value} ({src['timeout_action']})")
        if policy.timeout_action is lmcaps_policy.TimeoutAction.FORCE_COMPLETE:
            details += (f', force_complete_mode '
                        f'{policy.force_complete_mode.value} '
                        f"({src['force_complete_mode']})")
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
    """Register the state of a migration whose monitor starts now."""
    try:
        layers = nova_policy.instance_layers(conf, context, instance)
    except exception.InvalidRequest as exc:
        # The source pre-check refuses these; if one gets here anyway the
        # migration runs on the host-wide values.
        LOG.error('Ignoring per-instance live-migration values of %s: %s',
                  instance.uuid, exc.message)
        layers = []
    state = MigrationState(driver, conf, context, instance, guest, layers)
    with _lock:
        _states[instance.uuid] = state
    return state


def end(state: MigrationState) -> None:
    """Forget a migration whose monitor returned."""
    with _lock:
        if _states.get(state.instance.uuid) is state:
            del _states[state.instance.uuid]


def lookup(instance_uuid: str) -> MigrationState | None:
    with _lock:
        return _states.get(instance_uuid)
