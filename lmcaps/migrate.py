"""One live migration end to end: validate, pre-check, start, monitor, record.

This is what ``lmcaps migrate`` runs, and what an embedding host without
its own monitor can call; :func:`resume` is what ``lmcaps watch`` runs to
take over migrations whose lmcaps process died.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from oslo_config import cfg

from lmcaps import checks
from lmcaps import events as lmcaps_events
from lmcaps import exception
from lmcaps import monitor as lmcaps_monitor
from lmcaps import policy as lmcaps_policy
from lmcaps import precheck as lmcaps_precheck
from lmcaps import registry
from lmcaps import request as lmcaps_request
from lmcaps.drivers import base

LOG = logging.getLogger(__name__)

#: Seconds an interrupted migration is given to show its abort took effect.
INTERRUPT_SETTLE = 30.0


class Interrupted(BaseException):
    """The process was asked to stop (SIGTERM, SIGHUP), like SIGINT."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


class MigrationContinues(exception.LmcapsException):
    """Interrupted where it cannot be aborted (in post-copy, or on a host
    whose driver cannot abort), or the abort did not take effect: the
    migration goes on without us."""

    msg_fmt = ('%(instance)s: interrupted (%(why)s) %(state)s: the '
               'migration goes on; "lmcaps watch" records its end')


def _iso(wall: float | None) -> str | None:
    if wall is None:
        return None
    return datetime.datetime.fromtimestamp(
        wall, datetime.timezone.utc).isoformat(timespec='milliseconds')


@dataclasses.dataclass(frozen=True)
class Summary:
    """How a migration ended, for people and scripts.

    :param instance: the name the operator gave; :attr:`instance_uuid` is
        what events are recorded under.
    :param policy: each value with its source, e.g.
        ``{'completion_timeout': {'value': 300, 'source': 'request'}}``.
    :param started_at, deadline: ISO 8601 UTC timestamps.
    :param attempts: one line per attempt of the timeout action.
    """

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
    instance_uuid: str = ''
    started_at: str | None = None
    deadline: str | None = None
    attempts: tuple[str, ...] = ()
    interrupted: str | None = None

    def line(self) -> str:
        forced = {'postcopy': ' (forced by post-copy)',
                  'pause': ' (forced by pausing the guest)'}
        text = f'{self.instance}: {self.outcome}'
        if self.interrupted:
            text += f' (interrupted by {self.interrupted})'
        if self.outcome == 'completed' and self.action in forced:
            text += forced[self.action]
        text += f' after {self.elapsed:.1f} s; guest: {self.guest_on}'
        if self.action_error:
            text += f'; timeout action failed: {self.action_error}'
        if self.message and self.outcome != 'completed':
            text += f'; {self.message}'
        return text

    def as_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data['policy'] = {k: dict(v) for k, v in self.policy.items()}
        data['attempts'] = list(self.attempts)
        return data


#: exit code per outcome, for scripts
EXIT_CODES = {'completed': 0, 'aborted': 3, 'cancelled': 3, 'failed': 4}
#: exit code when interrupted in post-copy (the migration goes on)
EXIT_CONTINUES = 5

_OUTCOME = {base.Phase.COMPLETED: 'completed', base.Phase.FAILED: 'failed',
            base.Phase.CANCELLED: 'cancelled'}


def policy_with_sources(pol: lmcaps_policy.EffectivePolicy) -> dict:
    """``{field: {'value': ..., 'source': ...}}`` for the JSON summary."""
    values = pol.as_dict()
    fields = ('completion_timeout', 'timeout_action', 'force_complete_mode')
    out = {f: {'value': values[f], 'source': pol.sources.get(f, 'config')}
           for f in fields}
    out['mode'] = {'value': values['mode'], 'source': 'host declaration'}
    out['permit_post_copy'] = {'value': pol.permit_post_copy,
                               'source': 'config'}
    return out


def precheck(conf: cfg.ConfigOpts, runner: checks.PreCheckRunner,
             driver: base.LiveMigrationDriver, spec: base.MigrationSpec,
             values: Mapping, store: lmcaps_events.EventStore,
             request_id: str, instance_uuid: str | None = None
             ) -> lmcaps_precheck.Verdict:
    """Resolve the policy and run the pre-checks; records the event.

    :param runner: the loaded checks (load them before touching a backend,
        so that a bad ``enabled_checks`` fails first).
    :param values: the request, already validated
        (:func:`lmcaps.request.validate`).
    :raises: MigrationPreCheckFailed (event recorded, report attached).
    """
    return lmcaps_precheck.run(
        conf, store, request_id, instance_uuid or spec.instance,
        lmcaps_precheck.request_layers(values), driver=driver, spec=spec,
        runner=runner)


OnProgress = Callable[[base.Migration, base.Progress, float | None], None]


def run(conf: cfg.ConfigOpts, driver: base.LiveMigrationDriver,
        spec: base.MigrationSpec, body: Mapping,
        store: lmcaps_events.EventStore, *,
        request_id: str | None = None,
        on_progress: OnProgress | None = None,
        progress_interval: float = 0.5) -> Summary:
    """Run one live migration under lmcaps's pre-checks and monitor.

    Events are recorded under the instance's UUID as the driver knows it
    (``instance_uuid``), the name given in their details.

    :param on_progress: called with (migration, last progress, seconds left
        to the deadline) about every ``progress_interval`` seconds, from the
        monitor's last reading (never a driver call).
    :raises: InvalidRequest, MonitorError (a bad monitor option),
        MigrationPreCheckFailed before anything starts; MigrationContinues
        when interrupted in post-copy.
    """
    request_id = request_id or f'req-{uuid.uuid4()}'
    values = lmcaps_request.validate(body)    # before touching the backend
    runner = checks.PreCheckRunner(conf)
    mon = lmcaps_monitor.TimeoutMonitor.from_conf(conf, store)  # validated
    driver.connect()
    instance_uuid = driver.instance_uuid(spec)
    verdict = precheck(conf, runner, driver, spec, values, store, request_id,
                       instance_uuid)
    pol = verdict.policy
    migration = start(conf, driver, spec, pol, store, request_id,
                      instance_uuid)
    with mon:
        watch = mon.watch(driver, migration, pol, instance_uuid=instance_uuid,
                          request_id=request_id, persist=True)
        outcome = follow(mon, watch, on_progress, progress_interval)
    if isinstance(store, lmcaps_events.InstanceKeyed):
        instance_uuid = store.key_of(instance_uuid)  # as its events say
    return summarize(spec.instance, instance_uuid, request_id, migration,
                     pol, outcome)


def start(conf: cfg.ConfigOpts, driver: base.LiveMigrationDriver,
          spec: base.MigrationSpec, pol: lmcaps_policy.EffectivePolicy,
          store: lmcaps_events.EventStore, request_id: str,
          instance_uuid: str) -> base.Migration:
    """Start a pre-checked migration ready for what ``pol`` may need.

    A start that fails gets an outcome event with the guest's observed
    location, then the error propagates.

    :raises: DriverError, UnsupportedOperation from the driver.
    """
    per_instance = pol.sources['completion_timeout'] != lmcaps_policy.CONFIG
    try:
        destination = driver.prepare_destination(spec)
        spec = dataclasses.replace(
            spec, destination=destination, prepare_for=pol.prepare_for,
            completion_timeout=pol.completion_timeout if per_instance
            else None)
        return driver.start_migration(spec)
    except Exception as exc:
        where = _observed_before_start(driver, spec)
        store.record(request_id, instance_uuid, lmcaps_events.OUTCOME,
                     lmcaps_events.ERROR, host=conf.lmcaps.host,
                     details=lmcaps_events.details_text({
                         'instance': spec.instance,
                         'error': f'the migration did not start: {exc}',
                         'guest': where}))
        raise


def follow(mon: lmcaps_monitor.TimeoutMonitor, watch: lmcaps_monitor.Watch,
           on_progress: OnProgress | None, interval: float
           ) -> lmcaps_monitor.Outcome:
    """Wait for the outcome, showing progress; an interruption aborts.

    SIGINT (KeyboardInterrupt) and :class:`Interrupted` abort through the
    monitor, as a recorded action, unless the migration is in post-copy.

    :raises: MigrationContinues when interrupted in post-copy.
    """
    why: str | None = None
    while True:
        try:
            outcome = watch.wait(interval)
            if outcome is not None:
                return outcome
            if on_progress is not None and watch.progress is not None:
                deadline = watch.deadline
                left = None if deadline is None else deadline - time.monotonic()
                note = getattr(on_progress, 'note', None)
                attempts = watch.attempts
                if note is not None and attempts:
                    last = attempts[-1]
                    note(f'{last.action} ' + (
                        'fired' if last.result.value == 'pending'
                        else 'took effect' if last.result.value ==
                        'effective' else last.result.value))
                try:
                    on_progress(watch.migration, watch.progress, left)
                except Exception:  # display only; the monitor decides
                    LOG.debug('progress display failed', exc_info=True)
        except (KeyboardInterrupt, Interrupted) as exc:
            why = getattr(exc, 'signal_name', 'SIGINT')
            break
    refused = mon.interrupt(watch, why)
    if refused is not None:
        LOG.warning('interrupted by %s %s: migration %s goes on', why,
                    refused, watch.migration.id)
        raise MigrationContinues(instance=watch.migration.spec.instance,
                                 why=why, state=refused)
    LOG.warning('interrupted by %s: aborting migration %s', why,
                watch.migration.id)
    outcome = None
    settle = time.monotonic() + INTERRUPT_SETTLE
    while outcome is None and time.monotonic() < settle:
        try:            # a second signal changes nothing: the abort is on
            outcome = watch.wait(min(0.5, max(0.0,
                                              settle - time.monotonic())))
        except (KeyboardInterrupt, Interrupted):
            LOG.warning('interrupted again: already aborting migration %s',
                        watch.migration.id)
    if outcome is None:
        raise MigrationContinues(instance=watch.migration.spec.instance,
                                 why=why, state=f'and the abort did not take '
                                 f'effect within {INTERRUPT_SETTLE:g} s')
    return outcome


def summarize(instance: str, instance_uuid: str, request_id: str,
              migration: base.Migration, pol: lmcaps_policy.EffectivePolicy,
              outcome: lmcaps_monitor.Outcome) -> Summary:
    """The summary of an outcome."""
    name = _OUTCOME.get(outcome.phase, outcome.phase.value)
    if outcome.phase is base.Phase.CANCELLED and outcome.action == 'abort':
        name = 'aborted'
    deadline = (None if pol.completion_timeout is None else
                migration.started_wall + pol.completion_timeout)
    return Summary(
        instance=instance, request_id=request_id, outcome=name,
        action=outcome.action, action_error=outcome.action_error,
        guest_on=str(outcome.location), policy=policy_with_sources(pol),
        elapsed=migration.elapsed,
        reaction=(None if outcome.fired_at is None or outcome.deadline is None
                  or outcome.interrupted
                  else outcome.fired_at - outcome.deadline),
        message=outcome.message, instance_uuid=instance_uuid,
        started_at=_iso(migration.started_wall), deadline=_iso(deadline),
        attempts=tuple(a.describe() for a in outcome.attempts),
        interrupted=outcome.interrupted)


def resume(conf: cfg.ConfigOpts, driver: base.LiveMigrationDriver,
           store: lmcaps_events.EventStore, *,
           on_line: Callable[[str], None] = LOG.info,
           on_progress: OnProgress | None = None,
           gone: list[tuple[str, str]] | None = None) -> list[Summary]:
    """Re-attach to this host's open watches of ``driver`` and enforce them.

    Each migration keeps its original deadline.  A migration the backend no
    longer has gets an outcome event saying so, with the guest's observed
    location, and ``(instance name, observed location)`` is appended to
    ``gone`` when given.

    :returns: one summary per migration re-attached (ended).
    """
    host = conf.lmcaps.host
    mon = lmcaps_monitor.TimeoutMonitor.from_conf(conf, store)
    driver.connect()
    taken: list[tuple[registry.OpenWatch, base.Migration, Any]] = []
    with mon:
        for found in registry.open_watches(store, host):
            if found.ref.driver != driver.name:
                continue
            try:
                migration = driver.reattach(found.ref)
            except exception.MigrationGone as exc:
                where = _observed_before_start(driver, found.ref.spec)
                store.record(found.request_id, found.instance_uuid,
                             lmcaps_events.OUTCOME, lmcaps_events.ERROR,
                             host=host, details=lmcaps_events.details_text({
                                 'error': exc.message, 'guest': where}))
                on_line(f'{found.ref.spec.instance}: {exc.message}; guest: '
                        f'{where}')
                if gone is not None:
                    gone.append((found.ref.spec.instance, where))
                continue
            watch = mon.watch(driver, migration, found.policy,
                              instance_uuid=found.instance_uuid,
                              request_id=found.request_id)
            on_line(f'{found.ref.spec.instance}: re-attached to '
                    f'{found.ref.reference}')
            taken.append((found, migration, watch))
        results = []
        for found, migration, watch in taken:
            outcome = follow(mon, watch, on_progress, 0.5)
            summary = summarize(found.ref.spec.instance, found.instance_uuid,
                                found.request_id, migration, found.policy,
                                outcome)
            on_line(summary.line())
            results.append(summary)
    return results


def _observed_before_start(driver: base.LiveMigrationDriver,
                           spec: base.MigrationSpec) -> str:
    """Where the guest is after a failed start: asked, when the driver can."""
    probe = base.Migration(spec=spec, data_gib=0.0)
    return str(driver.guest_location(probe))
