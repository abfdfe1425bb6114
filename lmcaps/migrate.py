"""One live migration end to end: validate, pre-check, start, monitor, record.

This is what ``lmcaps migrate`` runs, and what an embedding host without
its own monitor can call.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Callable, Mapping

from oslo_config import cfg

from lmcaps import checks
from lmcaps import events as lmcaps_events
from lmcaps import monitor as lmcaps_monitor
from lmcaps import policy as lmcaps_policy
from lmcaps import precheck as lmcaps_precheck
from lmcaps import request as lmcaps_request
from lmcaps.drivers import base

LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Summary:
    """How a migration ended, for people and scripts."""

    instance: str
    request_id: str
    outcome: str           # completed | aborted | failed | cancelled
    action: str | None     # abort | postcopy | pause | None
    action_error: str | None
    guest_on: str          # observed, e.g. 'destination (running)'
    policy: Mapping
    elapsed: float
    #: seconds from the deadline to the action call returning, if it fired
    reaction: float | None = None
    message: str = ''

    def line(self) -> str:
        forced = {'postcopy': ' (forced by post-copy)',
                  'pause': ' (forced by pausing the guest)'}
        text = f'{self.instance}: {self.outcome}'
        if self.outcome == 'completed' and self.action in forced:
            text += forced[self.action]
        text += f' after {self.elapsed:.1f} s; guest: {self.guest_on}'
        if self.action_error:
            text += f'; timeout action failed: {self.action_error}'
        if self.message and self.outcome != 'completed':
            text += f'; {self.message}'
        return text

    def as_dict(self) -> dict:
        return dataclasses.asdict(self) | {'policy': dict(self.policy)}


#: exit code per outcome, for scripts
EXIT_CODES = {'completed': 0, 'aborted': 3, 'cancelled': 3, 'failed': 4}

_OUTCOME = {base.Phase.COMPLETED: 'completed', base.Phase.FAILED: 'failed',
            base.Phase.CANCELLED: 'cancelled'}


def precheck(conf: cfg.ConfigOpts, runner: checks.PreCheckRunner,
             driver: base.LiveMigrationDriver, spec: base.MigrationSpec,
             values: Mapping, store: lmcaps_events.EventStore,
             request_id: str) -> lmcaps_precheck.Verdict:
    """Resolve the policy and run the pre-checks; records the event.

    :param runner: the loaded checks (load them before touching a backend,
        so that a bad ``enabled_checks`` fails first).
    :param values: the request, already validated
        (:func:`lmcaps.request.validate`).
    :raises: MigrationPreCheckFailed (event recorded, report attached).
    """
    return lmcaps_precheck.run(
        conf, store, request_id, spec.instance,
        lmcaps_precheck.request_layers(values), driver=driver, spec=spec,
        runner=runner)


def run(conf: cfg.ConfigOpts, driver: base.LiveMigrationDriver,
        spec: base.MigrationSpec, body: Mapping,
        store: lmcaps_events.EventStore, *,
        request_id: str | None = None,
        on_progress: Callable[[base.Migration, base.Progress, float | None],
                              None] | None = None,
        progress_interval: float = 0.5) -> Summary:
    """Run one live migration under lmcaps's pre-checks and monitor.

    :param on_progress: called with (migration, progress, seconds left to
        the deadline) about every ``progress_interval`` seconds.
    :raises: InvalidRequest, MigrationPreCheckFailed before anything starts.
    """
    request_id = request_id or f'req-{uuid.uuid4()}'
    values = lmcaps_request.validate(body)    # before touching the backend
    runner = checks.PreCheckRunner(conf)
    verdict = precheck(conf, runner, driver, spec, values, store, request_id)
    pol = verdict.policy
    per_instance = pol.sources['completion_timeout'] != lmcaps_policy.CONFIG
    try:
        destination = driver.prepare_destination(spec)
        spec = dataclasses.replace(
            spec, destination=destination, prepare_for=pol.prepare_for,
            completion_timeout=pol.completion_timeout if per_instance
            else None)
        migration = driver.start_migration(spec)
    except Exception as exc:
        where = _observed_before_start(driver, spec)
        store.record(request_id, spec.instance, lmcaps_events.OUTCOME,
                     lmcaps_events.ERROR, host=conf.lmcaps.host,
                     details=lmcaps_events.details_text({
                         'error': f'the migration did not start: {exc}',
                         'guest': where}))
        raise
    with lmcaps_monitor.TimeoutMonitor.from_conf(conf, store) as mon:
        watch = mon.watch(driver, migration, pol, instance_uuid=spec.instance,
                          request_id=request_id)
        try:
            outcome = _follow(driver, migration, pol, watch, on_progress,
                              progress_interval)
        except BaseException:
            _give_up(driver, migration, watch)
            raise
    name = _OUTCOME.get(outcome.phase, outcome.phase.value)
    if outcome.phase is base.Phase.CANCELLED and outcome.action == 'abort':
        name = 'aborted'
    return Summary(
        instance=spec.instance, request_id=request_id, outcome=name,
        action=outcome.action, action_error=outcome.action_error,
        guest_on=str(outcome.location), policy=pol.as_dict(),
        elapsed=migration.elapsed,
        reaction=(None if outcome.fired_at is None or outcome.deadline is None
                  else outcome.fired_at - outcome.deadline),
        message=outcome.message)


def _observed_before_start(driver: base.LiveMigrationDriver,
                           spec: base.MigrationSpec) -> str:
    """Where the guest is after a failed start: asked, when the driver can."""
    probe = base.Migration(spec=spec, data_gib=0.0)
    return str(driver.guest_location(probe))


def _follow(driver: base.LiveMigrationDriver, migration: base.Migration,
            pol: lmcaps_policy.EffectivePolicy, watch: lmcaps_monitor.Watch,
            on_progress: Callable | None, interval: float
            ) -> lmcaps_monitor.Outcome:
    """Wait for the monitor's outcome, showing progress meanwhile."""
    while True:
        outcome = watch.wait(interval)
        if outcome is not None:
            return outcome
        if on_progress is None:
            continue
        left = (None if pol.completion_timeout is None else
                pol.completion_timeout - migration.elapsed)
        try:
            on_progress(migration, driver.get_progress(migration), left)
        except Exception:  # display only; the monitor decides
            LOG.debug('progress display failed', exc_info=True)


def _give_up(driver: base.LiveMigrationDriver, migration: base.Migration,
             watch: lmcaps_monitor.Watch, settle: float = 30.0) -> None:
    """Interrupted (Ctrl-C): abort unless in post-copy, let the monitor see.

    Without this an interrupted ``lmcaps migrate`` would leave a migration
    running with nobody enforcing its timeout.
    """
    try:
        if driver.get_progress(migration).phase in (
                base.Phase.PREPARING, base.Phase.PRECOPY, base.Phase.PAUSED):
            LOG.warning('interrupted: aborting migration %s', migration.id)
            driver.abort(migration)
            watch.wait(settle)
    except Exception:
        LOG.exception('could not abort migration %s after an interruption',
                      migration.id)
