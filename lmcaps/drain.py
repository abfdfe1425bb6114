"""Draining a host: select its guests, plan, pre-check, order.

``lmcaps drain`` takes the active guests of the source host (the driver's
:meth:`~lmcaps.drivers.base.LiveMigrationDriver.list_guests`), selects
some, resolves each guest's policy (command line, then the winning rule of
the policy file, then ``[lmcaps]``), runs every pre-check before anything
starts, and orders the accepted guests: higher ``priority`` first, then the
smallest RAM first, then by name.  :mod:`lmcaps.drainer` runs the plan.

The plan is kept in the event store under the drain's id (action
``lmcaps-drain``), so that ``lmcaps drain --resume DRAIN_ID`` re-attaches.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from oslo_config import cfg

from lmcaps import checks
from lmcaps import conf as lmcaps_conf
from lmcaps import drainpolicy
from lmcaps import eventqueue
from lmcaps import events as lmcaps_events
from lmcaps import exception
from lmcaps import migrate as lmcaps_migrate
from lmcaps import policy as lmcaps_policy
from lmcaps import precheck as lmcaps_precheck
from lmcaps import validation
from lmcaps.drivers import base

#: Instance action of a drain's own events.
ACTION = 'lmcaps-drain'
PLAN = 'lmcaps_drain_plan'
START = 'lmcaps_drain_start'
GUEST = 'lmcaps_drain_guest'
END = 'lmcaps_drain_end'
#: Version of the plan document.
FORMAT = 1
#: Default of --max-parallel: KubeVirt's per-node outbound limit.
DEFAULT_PARALLEL = 2


@dataclasses.dataclass(frozen=True)
class Selection:
    """Which guests to drain; empty names and uuids select every guest.

    :param names: fnmatch globs on the guest name (any may match).
    :param uuids: guest UUIDs (any may match).
    :param labels: labels every selected guest must have, ``{key: value}``.
    """

    names: tuple[str, ...] = ()
    uuids: tuple[str, ...] = ()
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)


def select(guests: Sequence[base.GuestInfo],
           selection: Selection) -> list[base.GuestInfo]:
    """The guests ``selection`` picks, in listing order.

    :raises: InvalidInput for a ``--name``, ``--uuid`` or ``--label``
        that matches no guest of the host (bad input: nothing is started).
    """
    uuids = {u.lower() for u in selection.uuids}
    for pattern in selection.names:
        if not any(fnmatch.fnmatchcase(g.name, pattern) for g in guests):
            raise exception.InvalidInput(
                what='--name', value=validation.echo(pattern),
                allowed='a name or glob matching a guest of this host')
    known = {g.uuid.lower() for g in guests}
    for given in selection.uuids:
        if given.lower() not in known:
            raise exception.InvalidInput(
                what='--uuid', value=validation.echo(given),
                allowed='the UUID of a guest of this host')
    for key, value in selection.labels.items():
        if not any(g.labels.get(key) == value for g in guests):
            raise exception.InvalidInput(
                what='--label', value=validation.echo(f'{key}={value}'),
                allowed='KEY=VALUE, a label of a guest of this host')
    picked = []
    for g in guests:
        if (selection.names or uuids) and not (
                g.uuid.lower() in uuids or any(
                    fnmatch.fnmatchcase(g.name, p) for p in selection.names)):
            continue
        if any(g.labels.get(k) != v for k, v in selection.labels.items()):
            continue
        picked.append(g)
    return picked


@dataclasses.dataclass(eq=False)
class Item:
    """One guest of a drain: its plan, then how it went.

    :param request_id: the request id of its first attempt (later
        attempts add ``.rN``); its events are under :attr:`instance_uuid`.
    :param layers: its per-instance layers (``(source, values)``).
    :param priority, bandwidth_mib: ``(value, source)``.
    :param policy: the effective policy, None when refused.
    :param refused: the pre-check's reasons, None when accepted.
    :param refused_policy: the effective policy the pre-check refused (what
        the plan shows), when it was resolved.
    :param status: ``waiting``, ``running``, then ``completed``,
        ``aborted``, ``cancelled``, ``failed``, ``continues`` (interrupted
        in post-copy), ``not started`` (the drain stopped first) or
        ``refused``.
    :param interrupted: the signal that stopped the drain before this
        guest started, or whose abort ended its migration (``--resume``
        migrates such a guest again).
    """

    guest: base.GuestInfo
    request_id: str
    instance_uuid: str
    layers: tuple[tuple[str, Mapping[str, Any]], ...]
    priority: tuple[int, str]
    bandwidth_mib: tuple[int | None, str]
    data_gib: float
    policy: lmcaps_policy.EffectivePolicy | None = None
    refused: str | None = None
    order: int | None = None
    status: str = 'waiting'
    attempts: int = 0
    destination: str | None = None
    summary: lmcaps_migrate.Summary | None = None
    error: str | None = None
    location: str | None = None
    started_at: float | None = None     # monotonic, last attempt
    ended_at: float | None = None
    interrupted: str | None = None
    refused_policy: lmcaps_policy.EffectivePolicy | None = None

    @property
    def name(self) -> str:
        return self.guest.name

    @property
    def sort_key(self) -> tuple[int, int, str]:
        return (-self.priority[0], self.guest.ram_mib, self.guest.name)

    def policy_with_sources(self) -> dict[str, dict[str, Any]]:
        """Each value of the guest's policy with its source."""
        out: dict[str, dict[str, Any]] = {}
        shown = self.policy or self.refused_policy
        if shown is not None:
            out = lmcaps_migrate.policy_with_sources(shown)
        out['priority'] = {'value': self.priority[0],
                           'source': self.priority[1]}
        out['bandwidth_mib'] = {'value': self.bandwidth_mib[0],
                                'source': self.bandwidth_mib[1]}
        return out

    def plan_dict(self) -> dict[str, Any]:
        return {'guest': self.guest.as_dict(), 'request_id': self.request_id,
                'instance_uuid': self.instance_uuid,
                'layers': [[name, dict(values)] for name, values in
                           self.layers],
                'priority': list(self.priority),
                'bandwidth_mib': list(self.bandwidth_mib),
                'data_gib': self.data_gib, 'refused': self.refused,
                'order': self.order}

    def as_dict(self) -> dict[str, Any]:
        """The guest's line of the JSON summary."""
        s = self.summary
        return {'guest': self.name, 'uuid': self.guest.uuid,
                'ram_mib': self.guest.ram_mib, 'order': self.order,
                'outcome': self.status, 'refused': self.refused,
                'interrupted': self.interrupted, 'error': self.error,
                'destination': self.destination,
                'attempts': self.attempts,
                'guest_on': self.location,
                'action': None if s is None else s.action,
                'action_error': None if s is None else s.action_error,
                'timeout_attempts': [] if s is None else list(s.attempts),
                'started_at': None if s is None else s.started_at,
                'deadline': None if s is None else s.deadline,
                'elapsed': None if s is None else round(s.elapsed, 3),
                'reaction': None if s is None or s.reaction is None
                else round(s.reaction, 4),
                'request_id': None if s is None else s.request_id,
                'policy': self.policy_with_sources()}


def new_drain_id() -> str:
    return f'drain-{uuid.uuid4()}'


def drain_key(drain_id: str) -> str:
    """The instance key a drain's own events are recorded under."""
    return validation.instance_key(drain_id.removeprefix('drain-'))


def check_destinations(conf: cfg.ConfigOpts,
                       driver: base.LiveMigrationDriver,
                       dests: Sequence[str]) -> list[str]:
    """The destinations, each once; none may be the source host.

    :raises: InvalidInput (a destination equal to the source, or none).
    """
    if not dests:
        raise exception.InvalidInput(what='--dest', value="''",
                                     allowed='one or more destinations')
    source = driver.source_names()
    out: list[str] = []
    for dest in dests:
        if dest in source:
            raise exception.InvalidInput(
                what='--dest', value=validation.echo(dest),
                allowed='a host other than the source '
                        f'({conf[lmcaps_conf.GROUP].host})')
        if dest not in out:
            out.append(dest)
    return out


def plan_item(conf: cfg.ConfigOpts, driver: base.LiveMigrationDriver,
              store: lmcaps_events.EventStore,
              runner: checks.PreCheckRunner, guest: base.GuestInfo,
              request_id: str, layers: Sequence[tuple[str, Mapping]],
              priority: tuple[int, str],
              bandwidth: tuple[int | None, str], data_gib: float) -> Item:
    """Pre-check one guest (its event recorded); refused is not raised.

    A busy guest (:attr:`GuestInfo.busy`) is refused without running the
    checks.

    :raises: InvalidRequest for a value out of range (bad input).
    """
    key = guest.uuid if validation.is_uuid(guest.uuid) else \
        validation.instance_key(guest.name)
    item = Item(guest=guest, request_id=request_id, instance_uuid=key,
                layers=tuple(layers), priority=priority,
                bandwidth_mib=bandwidth, data_gib=data_gib,
                location=f'source ({guest.state.value})')
    if guest.busy:
        # refused before any check: its one pre-check event says why
        item.refused, item.status = guest.busy, 'refused'
        store.record(request_id, key, lmcaps_events.PRECHECK,
                     lmcaps_events.ERROR,
                     host=conf[lmcaps_conf.GROUP].host,
                     details=lmcaps_events.details_text({
                         'instance': guest.name, 'refused': guest.busy}))
        return item
    spec = base.MigrationSpec(guest.name, base.Destination(''))
    try:
        verdict = lmcaps_precheck.run(
            conf, lmcaps_events.InstanceKeyed(store, guest.name), request_id,
            key, layers, driver=driver, spec=spec, data_gib=data_gib,
            runner=runner)
    except exception.MigrationPreCheckFailed as exc:
        item.refused = '; '.join(exc.reasons) or exc.message
        item.status = 'refused'
        item.refused_policy = exc.policy
        return item
    item.policy = verdict.policy
    return item


def plan(conf: cfg.ConfigOpts, driver: base.LiveMigrationDriver,
         store: lmcaps_events.EventStore, guests: Sequence[base.GuestInfo],
         rules: Sequence[drainpolicy.Rule], command_line: Mapping[str, Any],
         drain_id: str) -> list[Item]:
    """Resolve and pre-check every guest, then number the accepted ones.

    :returns: every guest's item, accepted ones in drain order first
        (``order`` 0, 1 ...), refused ones after.
    :raises: InvalidRequest (a value out of range), CheckNotFound,
        DriverError; nothing is started.
    """
    runner = checks.PreCheckRunner(conf)
    items = []
    # every guest's pre-check event in one write (one transaction in SQL)
    buffered = lmcaps_events.Buffered(store)
    try:
        for n, guest in enumerate(guests):
            spec = base.MigrationSpec(guest.name, base.Destination(''))
            data = driver.guest_data_gib(spec)
            gp = drainpolicy.for_guest(rules, guest, data, command_line)
            items.append(plan_item(conf, driver, buffered, runner, guest,
                                   f'{drain_id}.{n}', gp.layers, gp.priority,
                                   gp.bandwidth_mib, data))
    finally:
        buffered.flush()     # what was checked is recorded, even on error
    return order(items)


def order(items: Sequence[Item]) -> list[Item]:
    """Accepted items sorted (priority, RAM, name) and numbered; refused
    ones after, unnumbered."""
    accepted = sorted((i for i in items if i.refused is None),
                      key=lambda i: i.sort_key)
    for n, item in enumerate(accepted):
        item.order = n
    return accepted + [i for i in items if i.refused is not None]


@dataclasses.dataclass(frozen=True)
class Options:
    """How to run a drain.

    :param max_parallel: migrations running at once (>= 1).
    :param per_dest: at most this many at once to one destination (None:
        no limit but ``max_parallel``).
    :param retries: times a failed migration is tried again (never one
        that failed in post-copy).
    :param finish_running: on SIGINT/SIGTERM, let running migrations end
        instead of aborting them.
    :param migrate_uris: ``{destination: address the guest data goes to}``
        (libvirt's ``migrate_uri``, e.g. ``tcp://10.0.0.2``); a destination
        without one lets the driver choose.
    """

    dests: tuple[str, ...]
    max_parallel: int = DEFAULT_PARALLEL
    per_dest: int | None = None
    retries: int = 0
    finish_running: bool = False
    migrate_uris: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def spec_options(self, dest: str) -> dict[str, str]:
        """``MigrationSpec.options`` of a migration to ``dest``."""
        uri = self.migrate_uris.get(dest)
        return {} if uri is None else {'migrate_uri': uri}

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def check_options(options: Options) -> None:
    """:raises: InvalidInput naming the option and what is allowed."""
    for name, value, low in (('--max-parallel', options.max_parallel, 1),
                             ('--max-per-dest', options.per_dest, 1),
                             ('--retries', options.retries, 0)):
        if value is not None and not low <= value <= 10000:
            raise exception.InvalidInput(
                what=name, value=str(value),
                allowed=f'an integer from {low} to 10000')


def pair_migrate_uris(dests: Sequence[str],
                      uris: Sequence[str]) -> dict[str, str]:
    """``{destination: migrate URI}``: the n-th ``--migrate-uri`` belongs
    to the n-th ``--dest``.

    :raises: InvalidInput when ``uris`` is neither empty nor one per
        destination, holds an empty URI, or gives one destination two.
    """
    if not uris:
        return {}
    if len(uris) != len(dests):
        raise exception.InvalidInput(
            what='--migrate-uri', value=validation.echo(', '.join(uris)),
            allowed=f'none, or one per --dest in the same order '
                    f'({len(dests)} given)')
    out: dict[str, str] = {}
    for dest, uri in zip(dests, uris):
        if not uri or out.get(dest, uri) != uri:
            raise exception.InvalidInput(
                what='--migrate-uri', value=validation.echo(uri),
                allowed='a non-empty URI, the same for a --dest given twice')
        out[dest] = uri
    return out


def record_plan(store: lmcaps_events.EventStore, conf: cfg.ConfigOpts,
                driver: base.LiveMigrationDriver, drain_id: str,
                options: Options, items: Sequence[Item]) -> None:
    """Keep the plan in the event store (what ``--resume`` reads)."""
    doc = {'format': FORMAT, 'drain_id': drain_id, 'driver': driver.name,
           'host': conf[lmcaps_conf.GROUP].host, 'pid': os.getpid(),
           'options': options.as_dict(),
           'items': [i.plan_dict() for i in items]}
    store.record(drain_id, drain_key(drain_id), PLAN, lmcaps_events.SUCCESS,
                 host=conf[lmcaps_conf.GROUP].host,
                 details=json.dumps(doc, sort_keys=True), action=ACTION)


def record(store: lmcaps_events.EventStore, conf: cfg.ConfigOpts,
           drain_id: str, event: str, data: Mapping[str, Any],
           ok: bool = True, queue: eventqueue.EventQueue | None = None
           ) -> None:
    """Record one of the drain's own events (through ``queue`` if given:
    the monitor's writer, off the drain's start path)."""
    item = eventqueue.Pending(
        drain_id, drain_key(drain_id), event,
        lmcaps_events.SUCCESS if ok else lmcaps_events.ERROR,
        conf[lmcaps_conf.GROUP].host, json.dumps(dict(data), sort_keys=True),
        None, action=ACTION)
    if queue is not None:
        queue.put(item)
        return
    store.record(item.request_id, item.instance_uuid, item.event,
                 item.result, host=item.host, details=item.details,
                 action=ACTION)


@dataclasses.dataclass
class Stored:
    """A drain read back from the event store (for ``--resume``).

    :param plan: the plan document (:func:`record_plan`).
    :param ended: guest name -> its ``lmcaps_drain_guest`` document.
    :param started: guest name -> its last ``lmcaps_drain_start`` document.
    """

    plan: dict[str, Any]
    ended: dict[str, dict[str, Any]]
    started: dict[str, dict[str, Any]]

    @property
    def options(self) -> Options:
        data = dict(self.plan['options'])
        data['dests'] = tuple(data['dests'])
        data['migrate_uris'] = dict(data.get('migrate_uris') or {})
        return Options(**data)


def load(store: lmcaps_events.EventStore, drain_id: str) -> Stored:
    """Read a drain's plan and progress from the store.

    :raises: InvalidInput when no drain of that id was recorded.
    """
    validation.request_id(drain_id)
    found: Stored | None = None
    for rec in store.list_events(drain_key(drain_id)):
        if rec.request_id != drain_id or rec.action != ACTION:
            continue
        try:
            doc = json.loads(rec.details or '')
        except ValueError:
            continue
        if rec.event == PLAN and isinstance(doc, dict) and \
                doc.get('format') == FORMAT:
            found = Stored(plan=doc, ended={}, started={})
        elif found is not None and rec.event == GUEST:
            found.ended[doc['guest']] = doc
        elif found is not None and rec.event == START:
            found.started[doc['guest']] = doc
    if found is None:
        raise exception.InvalidInput(
            what='--resume', value=validation.echo(drain_id),
            allowed='the id of a drain recorded in the event store '
                    '(printed when it started)')
    return found


def stored_item(data: Mapping[str, Any]) -> Item:
    """An item of a stored plan, before its pre-check is run again."""
    g = data['guest']
    guest = base.GuestInfo(name=g['name'], uuid=g['uuid'],
                           ram_mib=int(g['ram_mib']),
                           labels=dict(g.get('labels') or {}),
                           state=base.RunState(g.get('state', 'running')),
                           busy=str(g.get('busy') or ''))
    prio = data['priority']
    bandwidth = data['bandwidth_mib']
    return Item(guest=guest, request_id=data['request_id'],
                instance_uuid=data['instance_uuid'],
                layers=tuple((str(n), dict(v)) for n, v in data['layers']),
                priority=(int(prio[0]), str(prio[1])),
                bandwidth_mib=(bandwidth[0], str(bandwidth[1])),
                data_gib=float(data['data_gib']), refused=data.get('refused'),
                order=data.get('order'))
