"""A simulated driver: migrations computed from the clock, support by config.

Nothing runs in the background: each call advances the migration's model to
"now" (simulated seconds = wall seconds x ``[lmcaps_fake] time_scale``).
Pre-copy sends RAM, then passes of the pages dirtied during the previous
pass; it converges when a pass's dirty set fits the allowed downtime
(``downtime_mib``), never while ``dirty_rate_mib >= bandwidth_mib``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import threading
import time
from collections.abc import Callable

from oslo_config import cfg

from lmcaps import capabilities as caps
from lmcaps import conf as lmcaps_conf
from lmcaps import exception
from lmcaps.drivers import base

MIB = 1024 ** 2
SOURCE = base.GuestHost.SOURCE
DESTINATION = base.GuestHost.DESTINATION
RUNNING = base.RunState.RUNNING
PAUSED = base.RunState.PAUSED
Where = tuple[base.GuestHost, base.RunState]

# Convergence threshold floor (1 byte), so that downtime_mib = 0 with a
# small dirty rate still ends instead of halving towards zero forever.
_MIN_THRESHOLD_MIB = 1 / MIB

_SUPPORT_CHOICES = [s.value for s in caps.Support]

#: What decides at run time when an operation is configured ``partial``.
CONDITIONS = {
    caps.Operation.ABORT:
        'only before the switch to post-copy (a post-copy migration cannot '
        'be aborted)',
    caps.Operation.FORCE_COMPLETE_POSTCOPY:
        'only if the migration was started with postcopy=True',
    caps.Operation.FORCE_COMPLETE_PAUSE:
        'only while the migration is in pre-copy',
    caps.Operation.PER_INSTANCE_TIMEOUT:
        'timeouts are counted in wall-clock seconds while the migration '
        'runs in simulated time ([lmcaps_fake] time_scale)',
}

_NOTES = {
    caps.Operation.ABORT: 'Simulated; refused in post-copy.',
    caps.Operation.FORCE_COMPLETE_POSTCOPY:
        'Simulated; needs a migration started with postcopy=True.',
    caps.Operation.FORCE_COMPLETE_PAUSE:
        'Simulated; the dirty rate drops to 0 until the copy ends.',
    caps.Operation.PER_INSTANCE_TIMEOUT: 'Carried out by the lmcaps monitor.',
}


def _support_opt(op: caps.Operation) -> cfg.Opt:
    return cfg.StrOpt(
        op.value, default=caps.Support.COMPLETE.value,
        choices=_SUPPORT_CHOICES,
        help=f'Declared support for "{op.title}" (the host declaration of '
             f'the fake driver). partial means: {CONDITIONS[op]}. missing '
             f'and unknown make the operation raise UnsupportedOperation.')


fake_opts = [_support_opt(op) for op in caps.Operation] + [
    cfg.IntOpt('ram_mib', default=2048, min=1,
               help='Guest RAM of every simulated migration, in MiB.'),
    cfg.FloatOpt('bandwidth_mib', default=1000.0, min=0.001,
                 help='Pre-copy bandwidth, in MiB per simulated second; '
                      'a MigrationSpec.bandwidth_mib lowers it.'),
    cfg.FloatOpt('dirty_rate_mib', default=0.0, min=0.0,
                 help='Rate at which the running guest dirties memory, in '
                      'MiB per simulated second. Pre-copy never converges '
                      'when it is >= bandwidth_mib.'),
    cfg.FloatOpt('downtime_mib', default=30.0, min=0.0,
                 help='Data that fits the allowed downtime, in MiB: '
                      'pre-copy converges (final copy with the guest '
                      'paused) once the dirty set is at most this.'),
    cfg.FloatOpt('postcopy_bandwidth_mib', min=0.001,
                 help='Bandwidth after a switch to post-copy, in MiB per '
                      'simulated second; unset means bandwidth_mib.'),
    cfg.FloatOpt('time_scale', default=1.0, min=0.000001,
                 help='Simulated seconds per wall-clock second, so that '
                      'tests run long migrations fast.'),
    cfg.StrOpt('world', default='default',
               help='Name of the simulated hypervisor world (in this '
                    'process) the driver talks to; drivers on the same '
                    'world see the same guests and migrations, as two '
                    'clients of one backend would.'),
    cfg.ListOpt('guests', default=[],
                help='Guests the simulated host runs, listed by '
                     '"lmcaps drain" and its list_guests call: each NAME or '
                     'NAME:RAM_MIB (RAM in MiB; default ram_mib). Added to '
                     'the world when the driver connects.'),
    cfg.FloatOpt('cancel_delay', default=0.0, min=0.0,
                 help='Simulated seconds between an accepted abort and the '
                      'migration being cancelled (CANCELLING meanwhile).'),
]


@dataclasses.dataclass
class _Sim:
    """Model of one migration; times are simulated seconds since its start."""

    ram: float
    bandwidth: float
    dirty_rate: float
    threshold: float
    postcopy_bandwidth: float
    time_scale: float
    postcopy_capable: bool
    t0: float = 0.0               # monotonic start, in ``clock``
    clock: Callable[[], float] = time.monotonic
    instance: str = ''
    detail: str = ''               # backend words on the guest's state
    phase: base.Phase = base.Phase.PRECOPY
    location: Where = (SOURCE, RUNNING)
    cancel_at: float | None = None    # CANCELLING until then (simulated)
    complete_during_cancel: bool = False
    owner_paused: bool = False
    final_copy: bool = False      # converged: last pass, guest paused
    iteration: int = 1
    sent: float = 0.0             # MiB sent before the current transfer
    start: float = 0.0            # start of the current transfer
    size: float = 0.0             # MiB of the current transfer
    rate: float = 0.0             # MiB/s of the current transfer
    message: str = ''

    @property
    def dirtying(self) -> bool:
        return (self.phase in (base.Phase.PRECOPY, base.Phase.CANCELLING) and
                not self.final_copy and not self.owner_paused)

    def end(self) -> float:
        return self.start + self.size / self.rate

    def remaining(self, now: float) -> float:
        return max(0.0, self.size - self.rate * (now - self.start))

    def advance(self, now: float) -> None:
        """Bring the model to simulated time ``now``."""
        if (self.phase is base.Phase.CANCELLING and
                not self.complete_during_cancel and
                self.cancel_at is not None and now >= self.cancel_at):
            state = PAUSED if self.owner_paused else RUNNING
            self.end_as(self.cancel_at, base.Phase.CANCELLED, (SOURCE, state))
            return
        while not self.phase.terminal and self.end() <= now:
            end = self.end()
            self.sent += self.size
            if not self.dirtying:
                self.phase = base.Phase.COMPLETED
                self.location = (DESTINATION, PAUSED if self.owner_paused
                                 else RUNNING)
                self.final_copy = False
                return
            dirty = min(self.ram, self.dirty_rate * (end - self.start))
            self.iteration += 1
            if dirty <= self.threshold:
                self.final_copy = True
                self.location = (SOURCE, PAUSED)
                self.start, self.size = end, dirty
                continue
            if dirty >= self.size:
                # Steady state (dirty rate >= bandwidth): skip whole passes.
                skip = max(0, math.floor((now - end) * self.rate / dirty))
                self.sent += skip * dirty
                self.iteration += skip
                end += skip * dirty / self.rate
            self.start, self.size = end, dirty

    def outstanding(self, now: float) -> float:
        """Data still to send if the guest stopped dirtying at ``now``."""
        left = self.remaining(now)
        if self.dirtying:
            left += self.dirty_rate * (now - self.start)
        return min(self.ram, left)

    def restart(self, now: float, size: float, rate: float) -> None:
        self.sent += self.size - self.remaining(now)
        self.start, self.size, self.rate = now, size, rate

    def end_as(self, now: float, phase: base.Phase,
               location: Where) -> None:
        self.restart(now, 0.0, self.rate)
        self.phase, self.location, self.final_copy = phase, location, False

    def progress(self, now: float) -> base.Progress:
        processed = self.sent
        if not self.phase.terminal:
            processed += self.size - self.remaining(now)
        remaining = 0.0 if self.phase.terminal else self.remaining(now)
        fraction = (1.0 if self.phase is base.Phase.COMPLETED else
                    None if self.phase.terminal else
                    max(0.0, min(1.0, 1 - self.outstanding(now) / self.ram)))
        return base.Progress(
            phase=self.phase, fraction=fraction,
            raw_state=('final copy' if self.final_copy else self.phase.value),
            data_total=int(self.ram * MIB),
            data_processed=int(processed * MIB),
            data_remaining=int(remaining * MIB),
            # rates per wall second, as a client outside the world sees them
            memory_dirty_rate=int(self.dirty_rate * MIB * self.time_scale)
            if self.dirtying else 0,
            transfer_rate=0 if self.phase.terminal
            else int(self.rate * MIB * self.time_scale),
            iteration=self.iteration,
            message=self.message or ('final copy, guest paused'
                                     if self.final_copy else ''))


@dataclasses.dataclass(frozen=True)
class FakeGuest:
    """A guest of the simulated host (its inventory, what a hypervisor lists).

    :param ram_mib: its RAM in MiB (None: ``[lmcaps_fake] ram_mib``).
    :param dirty_rate_mib: MiB it dirties per simulated second while it
        runs (None: ``[lmcaps_fake] dirty_rate_mib``).
    """

    name: str
    ram_mib: int | None = None
    labels: tuple[tuple[str, str], ...] = ()
    dirty_rate_mib: float | None = None


class World:
    """The simulated backend: guests, where they are, and migrations.

    What a hypervisor (or a vCenter) would know.  Drivers reach it by name
    (``[lmcaps_fake] world``) as clients of one backend; the conformance
    kit's fake backend reads it directly, never through a driver.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.sims: dict[str, _Sim] = {}        # reference -> migration
        self.guests: dict[str, Where] = {}     # instance -> where, at rest
        self.busy: dict[str, str] = {}         # instance -> last reference
        self.session = 0                       # bumped when sessions drop
        self.inventory: dict[str, FakeGuest] = {}   # name -> defined guest
        self._refs = itertools.count(1)

    def new_reference(self) -> str:
        return f'fake-migration-{next(self._refs)}'

    def sim_of(self, instance: str) -> _Sim | None:
        """The last migration of ``instance``, advanced to now."""
        with self.lock:
            sim = self.sims.get(self.busy.get(instance, ''))
            if sim is not None:
                sim.advance((sim.clock() - sim.t0) * sim.time_scale)
            return sim

    def where(self, instance: str) -> tuple[Where, str] | None:
        """Where the guest is now, and the backend's words on it."""
        with self.lock:
            sim = self.sim_of(instance)
            if sim is not None:
                return sim.location, sim.detail
            found = self.guests.get(instance)
            return None if found is None else (found, '')

    def add_guest(self, name: str, ram_mib: int | None = None,
                  labels: dict[str, str] | None = None,
                  dirty_rate_mib: float | None = None) -> FakeGuest:
        """Define a running guest on the source host (kept if defined)."""
        with self.lock:
            found = self.inventory.get(name)
            if found is None:
                found = self.inventory[name] = FakeGuest(
                    name, ram_mib, tuple(sorted((labels or {}).items())),
                    dirty_rate_mib)
            return found

    def drop_sessions(self) -> None:
        """Invalidate every client's session (fault injection)."""
        with self.lock:
            self.session += 1


_worlds: dict[str, World] = {}
_worlds_lock = threading.Lock()


def world(name: str = 'default') -> World:
    """The simulated world called ``name`` in this process (made on demand)."""
    with _worlds_lock:
        found = _worlds.get(name)
        if found is None:
            found = _worlds[name] = World()
        return found


class FakeDriver(base.LiveMigrationDriver):
    """Simulated live migrations for tests, the conformance kit and demos.

    :param clock: a monotonic clock in seconds (injectable for tests).
    """

    name = 'fake'
    lists_guests = True

    def __init__(self, conf: cfg.ConfigOpts, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(conf)
        self._clock = clock
        self._session: int | None = None
        #: times the driver had to log in again after a lost session
        self.relogins = 0

    @classmethod
    def list_opts(cls) -> list[cfg.Opt]:
        return list(fake_opts)

    @classmethod
    def declare(cls) -> caps.Declaration:
        return caps.Declaration(
            driver=cls.name, title='Fake (simulated)',
            capabilities={op: caps.complete(notes=_NOTES[op])
                          for op in caps.Operation})

    def _refine(self, declaration: caps.Declaration) -> caps.Declaration:
        """Apply the support levels configured in ``[lmcaps_fake]``."""
        opts = self.options
        changes = {}
        for op in caps.Operation:
            support = caps.Support(opts[op.value])
            if support is caps.Support.PARTIAL:
                changes[op.value] = caps.partial(CONDITIONS[op],
                                                 notes=_NOTES[op])
            elif support is not caps.Support.COMPLETE:
                changes[op.value] = caps.Capability(
                    support, notes=f'[{self.group}] {op.value} = '
                                   f'{support.value}')
        facts = {key: str(opts[key]) for key in (
            'ram_mib', 'bandwidth_mib', 'dirty_rate_mib', 'downtime_mib',
            'postcopy_bandwidth_mib', 'time_scale')}
        return declaration.refine(self._host_name(), facts, **changes)

    def _host_name(self) -> str:
        try:
            return self.conf[lmcaps_conf.GROUP].host
        except (cfg.NoSuchOptError, cfg.NoSuchGroupError):
            return 'fake-host'

    @property
    def world(self) -> World:
        return world(self.options.world)

    def connect(self) -> None:
        with self.world.lock:
            self._session = self.world.session
            for entry in self.options.guests:
                name, _, ram = entry.partition(':')
                try:
                    ram_mib = int(ram) if ram else None
                except ValueError:
                    ram_mib = 0
                if not name or (ram_mib is not None and ram_mib < 1):
                    raise exception.InvalidConfig(
                        reason=f'[{self.group}] guests: {entry!r} is not '
                               f'allowed; allowed: NAME or NAME:RAM_MIB '
                               f'with RAM_MIB an integer >= 1')
                self.world.add_guest(name, ram_mib)

    def _list_guests(self) -> list[base.GuestInfo]:
        """The defined guests the world has on the source host; one that
        is migrating is ``busy``."""
        from lmcaps import validation
        out = []
        with self.world.lock:
            self._check_session()
            for guest in self.world.inventory.values():
                found = self.world.where(guest.name)
                host, state = (SOURCE, RUNNING) if found is None \
                    else found[0]
                if host is not SOURCE:
                    continue
                sim = self.world.sims.get(self.world.busy.get(guest.name, ''))
                if sim is not None:
                    sim.advance(self._now(sim))
                migrating = sim is not None and not sim.phase.terminal
                out.append(base.GuestInfo(
                    name=guest.name,
                    uuid=validation.instance_key(guest.name),
                    ram_mib=guest.ram_mib or self.options.ram_mib,
                    labels=dict(guest.labels), state=state,
                    busy='a migration of this guest is already running'
                    if migrating else ''))
        return out

    def _guest(self, instance: str) -> FakeGuest:
        found = self.world.inventory.get(instance)
        return found if found is not None else FakeGuest(instance)

    def _check_session(self, w: World | None = None) -> None:
        """Log in again once if the world (``w``: ours, looked up once by
        the caller) dropped our session."""
        current = (self.world if w is None else w).session
        if self._session != current:
            if self._session is not None:
                self.relogins += 1
            self._session = current

    # -- migrations -------------------------------------------------------

    def guest_data_gib(self, spec: base.MigrationSpec) -> float:
        """The simulated RAM (the guest's, else ``ram_mib``), counted as at
        least 2 GiB."""
        ram = self._guest(spec.instance).ram_mib or self.options.ram_mib
        return base.data_gib(ram * MIB)

    def _start(self, spec: base.MigrationSpec) -> base.Migration:
        opts = self.options
        bandwidth = opts.bandwidth_mib
        if spec.bandwidth_mib:
            bandwidth = min(bandwidth, float(spec.bandwidth_mib))
        w = self.world
        with w.lock:
            self._check_session()
            busy = w.sims.get(w.busy.get(spec.instance, ''))
            if busy is not None:
                busy.advance(self._now(busy))
                if not busy.phase.terminal:
                    raise exception.DriverError(
                        driver=self.name,
                        reason=f'instance {spec.instance} is already '
                               f'migrating')
            found = w.where(spec.instance)
            where = (SOURCE, RUNNING) if found is None else found[0]
            if where[0] is not SOURCE:
                where = (SOURCE, where[1])   # a new round from its new host
            guest = self._guest(spec.instance)
            dirty = guest.dirty_rate_mib
            sim = _Sim(ram=float(guest.ram_mib or opts.ram_mib),
                       bandwidth=bandwidth,
                       dirty_rate=(opts.dirty_rate_mib if dirty is None
                                   else dirty),
                       threshold=max(opts.downtime_mib, _MIN_THRESHOLD_MIB),
                       postcopy_bandwidth=(opts.postcopy_bandwidth_mib or
                                           opts.bandwidth_mib),
                       time_scale=opts.time_scale,
                       postcopy_capable=spec.postcopy, t0=self._clock(),
                       clock=self._clock, instance=spec.instance, location=where,
                       owner_paused=where[1] is PAUSED)
            sim.size, sim.rate = sim.ram, sim.bandwidth
            reference = w.new_reference()
            w.sims[reference] = sim
            w.busy[spec.instance] = reference
        return base.Migration(spec=spec, data_gib=self.guest_data_gib(spec),
                              reference=reference, started_at=sim.t0,
                              backend=sim)

    def _reattach(self, ref: base.MigrationRef) -> base.Migration:
        with self.world.lock:
            self._check_session()
            sim = self.world.sims.get(ref.reference)
        if sim is None:
            raise exception.MigrationGone(driver=self.name,
                                          reference=ref.reference)
        return base.Migration(spec=ref.spec, data_gib=ref.data_gib,
                              reference=ref.reference, started_at=sim.t0,
                              backend=sim)

    def _now(self, sim: _Sim) -> float:
        return (sim.clock() - sim.t0) * sim.time_scale

    def _sim(self, migration: base.Migration,
             w: World | None = None) -> tuple[_Sim, float]:
        """The advanced model and its simulated "now"; under the lock of
        ``w`` (our world, looked up once by the caller)."""
        w = self.world if w is None else w
        self._check_session(w)
        sim = w.sims.get(migration.reference)
        if sim is None:
            raise exception.MigrationNotFound(migration=migration.id,
                                              driver=self.name)
        now = self._now(sim)
        sim.advance(now)
        return sim, now

    def _progress(self, migration: base.Migration) -> base.Progress:
        w = self.world
        with w.lock:
            sim, now = self._sim(migration, w)
            return sim.progress(now)

    def _locate(self, migration: base.Migration) -> base.GuestLocation:
        """Where the world has the guest (a fresh read, not the phase)."""
        w = self.world
        with w.lock:
            self._check_session(w)
            found = w.where(migration.spec.instance)
        if found is None:
            return base.GuestLocation(base.GuestHost.NOWHERE,
                                      base.RunState.UNKNOWN,
                                      f'no guest {migration.spec.instance}')
        (host, state), detail = found
        return base.GuestLocation(host, state, detail)

    def _refuse(self, migration: base.Migration, operation: caps.Operation,
                reason: str) -> exception.OperationRefused:
        return exception.OperationRefused(
            driver=self.name, operation=operation.value,
            migration=migration.id, reason=reason)

    def _abort(self, migration: base.Migration) -> None:
        op = caps.Operation.ABORT
        w = self.world
        with w.lock:
            sim, now = self._sim(migration, w)
            if sim.phase is base.Phase.POSTCOPY:
                raise self._refuse(migration, op,
                                   'cannot abort migration in post-copy mode')
            if sim.phase.terminal:
                raise self._refuse(migration, op,
                                   f'migration already {sim.phase.value}')
            if sim.phase is base.Phase.CANCELLING:
                return      # one cancel request, as vSphere counts them
            delay = self.options.cancel_delay
            if delay > 0 or sim.complete_during_cancel:
                sim.phase = base.Phase.CANCELLING
                sim.cancel_at = now + delay
                if sim.complete_during_cancel:
                    # The copy goes on and finishes first: converge at once.
                    sim.dirty_rate = 0.0
                    sim.restart(now, min(sim.outstanding(now), 1.0),
                                sim.bandwidth)
                return
            # A guest paused by force-complete stays paused; the pause of
            # the final copy belongs to the migration and is undone.
            state = (PAUSED if sim.phase is base.Phase.PAUSED or
                     sim.owner_paused else RUNNING)
            sim.end_as(now, base.Phase.CANCELLED, (SOURCE, state))

    def _force_complete(self, migration: base.Migration,
                        mode: caps.ForceCompleteMode) -> None:
        op = mode.operation
        w = self.world
        with w.lock:
            sim, now = self._sim(migration, w)
            if sim.phase.terminal:
                raise self._refuse(migration, op,
                                   f'migration already {sim.phase.value}')
            if sim.phase is base.Phase.POSTCOPY:
                raise self._refuse(migration, op,
                                   'migration is already in post-copy mode')
            if sim.phase is base.Phase.CANCELLING:
                raise self._refuse(migration, op, 'migration is cancelling')
            if mode is caps.ForceCompleteMode.POSTCOPY:
                if not sim.postcopy_capable:
                    raise self._refuse(
                        migration, op, 'migration was not started with '
                                       'postcopy=True')
                left = sim.outstanding(now)
                sim.restart(now, left, sim.postcopy_bandwidth)
                sim.phase = base.Phase.POSTCOPY
                sim.location = (DESTINATION, RUNNING)
                sim.final_copy = False
                return
            if sim.phase is base.Phase.PAUSED or sim.owner_paused:
                raise self._refuse(migration, op, 'guest is already paused')
            if sim.final_copy:
                return      # already paused by the final copy: nothing to do
            left = sim.outstanding(now)
            sim.restart(now, left, sim.bandwidth)
            sim.phase, sim.location = base.Phase.PAUSED, (SOURCE, PAUSED)

    def _resume_source(self, migration: base.Migration) -> None:
        op = caps.Operation.FORCE_COMPLETE_PAUSE
        w = self.world
        with w.lock:
            sim, _now = self._sim(migration, w)
            if sim.phase not in (base.Phase.FAILED, base.Phase.CANCELLED):
                raise self._refuse(migration, op,
                                   f'migration is {sim.phase.value}, not '
                                   f'failed or cancelled')
            if sim.location != (SOURCE, PAUSED):
                raise self._refuse(migration, op,
                                   'guest is not paused on the source')
            sim.location = (SOURCE, RUNNING)

    # -- test helpers -----------------------------------------------------

    def fail_migration(self, migration: base.Migration,
                       message: str = 'simulated failure') -> None:
        """Make a running migration FAILED now (a test helper).

        The guest stays where it was: paused on the source after a pause,
        paused on the destination after a failure in post-copy.
        """
        w = self.world
        with w.lock:
            sim, now = self._sim(migration, w)
            if sim.phase.terminal:
                raise self._refuse(migration, caps.Operation.ABORT,
                                   f'migration already {sim.phase.value}')
            if sim.phase is base.Phase.POSTCOPY:
                where = (DESTINATION, PAUSED)
            elif sim.phase is base.Phase.PAUSED:
                where = (SOURCE, PAUSED)
            else:
                where = (SOURCE, RUNNING)
            sim.end_as(now, base.Phase.FAILED, where)
            sim.message = message

    def destination_dies(self, migration: base.Migration) -> None:
        """The destination host dies now (a test helper).

        In post-copy the guest's memory is split between the hosts: the
        source keeps it paused, post-copy failed (as libvirt shows it).
        Before, the guest runs on in the source.
        """
        w = self.world
        with w.lock:
            sim, now = self._sim(migration, w)
            if sim.phase.terminal:
                raise self._refuse(migration, caps.Operation.ABORT,
                                   f'migration already {sim.phase.value}')
            if sim.phase is base.Phase.POSTCOPY:
                where, sim.detail = (SOURCE, PAUSED), 'post-copy failed'
            else:
                where = (SOURCE, PAUSED if sim.owner_paused else RUNNING)
            sim.end_as(now, base.Phase.FAILED, where)
            sim.message = 'the destination host died'

    def owner_pause(self, migration: base.Migration) -> None:
        """The guest's owner pauses it during the migration (a test helper)."""
        w = self.world
        with w.lock:
            sim, now = self._sim(migration, w)
            sim.restart(now, sim.outstanding(now), sim.rate)
            sim.owner_paused = True
            sim.location = (sim.location[0], PAUSED)
