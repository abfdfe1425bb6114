"""The driver plugin API, version 2.

A driver *declares* what it supports (:meth:`LiveMigrationDriver.declare`,
refined per host by :meth:`LiveMigrationDriver.host_declaration`) and
*implements* exactly that.  Calling an operation the driver declares
``missing`` raises :class:`~lmcaps.exception.UnsupportedOperation` before
anything reaches the backend; drivers never raise NotImplementedError.

The API fits backends of two shapes:

* **control-channel backends** (libvirt): the migration runs inside a call
  that blocks, and other calls on the side steer it.  Such a driver runs
  the call under :class:`BlockingCall`, whose result is the authoritative
  verdict of how the migration ended.
* **task backends** (vSphere ``RelocateVM_Task``, XenAPI
  ``Async.VM.pool_migrate``, Hyper-V ``Msvm_MigrationJob``, a PowerVM LPM
  job): the migration is a server-side task with a reference, a state and a
  percentage; abort is a cancel request on it.

What a driver implements (``_`` methods are called by the public ones,
which check declarations, validate results and bound the time)::

    declare()                     static Declaration, no I/O
    _refine(declaration)          per-host refinement, after connect()
    connect() / close()
    guest_data_gib(spec)          GiB as nova counts it (per-GiB timeouts)
    prepare_destination(spec)     Destination with driver data (optional)
    _start(spec) -> Migration     start, return at once
    _progress(migration) -> Progress
    _locate(migration) -> GuestLocation     asked of the backend
    _reattach(ref) -> Migration   (optional) find a running migration again
    _abort / _force_complete / _resume_source   for declared operations
    recover(migration)            (optional) after a failure

Every public method raises only :class:`~lmcaps.exception.LmcapsException`
subclasses for backend trouble (DriverError and its kin).
"""

from __future__ import annotations

import abc
import dataclasses
import enum
import json
import math
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

from oslo_config import cfg

from lmcaps import capabilities as caps
from lmcaps import conf as lmcaps_conf
from lmcaps import exception

GIB = 1024 ** 3
T = TypeVar('T')

#: Seconds a bounded driver call may take when no conf says otherwise.
DEFAULT_CALL_TIMEOUT = 20.0


class Phase(enum.Enum):
    """Where a live migration is."""

    PREPARING = 'preparing'   # accepted / queued, no guest data sent yet
    PRECOPY = 'precopy'       # guest runs on the source, memory copied
    PAUSED = 'paused'         # guest paused on the source, copy finishing
    POSTCOPY = 'postcopy'     # guest runs on the destination, pages pulled
    CANCELLING = 'cancelling'  # a cancel was accepted, not finished yet
    COMPLETED = 'completed'   # the migration succeeded
    FAILED = 'failed'         # the migration failed
    CANCELLED = 'cancelled'   # the migration was cancelled

    @property
    def terminal(self) -> bool:
        return self in (Phase.COMPLETED, Phase.FAILED, Phase.CANCELLED)


class GuestHost(enum.Enum):
    """On which host the guest is, as the backend says."""

    SOURCE = 'source'
    DESTINATION = 'destination'
    NOWHERE = 'nowhere'       # no host has it (lost, or never existed)
    UNKNOWN = 'unknown'       # the backend could not be asked


class RunState(enum.Enum):
    """Whether the guest runs, as the backend says."""

    RUNNING = 'running'
    PAUSED = 'paused'
    SHUT_OFF = 'shut off'
    CRASHED = 'crashed'
    UNKNOWN = 'unknown'


@dataclasses.dataclass(frozen=True)
class GuestLocation:
    """Where the guest is and whether it runs, observed on the backend.

    :param host: the host that has the guest.
    :param state: its run state there.
    :param detail: backend words worth showing (``post-copy failed``,
        ``host-42``, why it is unknown).
    """

    host: GuestHost
    state: RunState
    detail: str = ''

    def __post_init__(self) -> None:
        if not isinstance(self.host, GuestHost) or not isinstance(
                self.state, RunState):
            raise TypeError('GuestLocation takes a GuestHost and a RunState')

    @classmethod
    def unknown(cls, detail: str = '') -> GuestLocation:
        return cls(GuestHost.UNKNOWN, RunState.UNKNOWN, detail)

    @property
    def pair(self) -> tuple[GuestHost, RunState]:
        return (self.host, self.state)

    def __str__(self) -> str:
        text = f'{self.host.value} ({self.state.value})'
        if self.host is GuestHost.UNKNOWN and self.state is RunState.UNKNOWN:
            text = 'unknown'
        return f'{text}: {self.detail}' if self.detail else text

    def as_dict(self) -> dict[str, str]:
        return {'host': self.host.value, 'state': self.state.value,
                'detail': self.detail}


@dataclasses.dataclass(frozen=True)
class Destination:
    """The target of a migration.

    :param host: the destination host's name as the operator knows it
        (nova's compute host name, an ESXi host name, a XenServer host's
        name_label, a managed system's name).
    :param address: how the backend reaches it: a libvirt URI, a vCenter
        HostSystem moref, an HMC address ... ('' = the driver finds it by
        ``host``).
    :param data: driver data, JSON-serialisable, usually obtained from the
        destination by :meth:`LiveMigrationDriver.prepare_destination`
        (XenAPI's ``Host.migrate_receive`` token, resource pool and
        datastore references, adapter mappings).
    """

    host: str
    address: str = ''
    data: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {'host': self.host, 'address': self.address,
                'data': dict(self.data)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Destination:
        return cls(host=str(data['host']), address=str(data.get('address', '')),
                   data=dict(data.get('data') or {}))


@dataclasses.dataclass(frozen=True)
class Progress:
    """A snapshot of a running migration; unknown values are None.

    :param phase: where the migration is.
    :param fraction: completed fraction 0..1 (None when unknown).
    :param raw_state: the backend's own state word (``running``, libvirt's
        job type, a JobState number ...), for people.
    :param data_total, data_processed, data_remaining: bytes.
    :param memory_dirty_rate, transfer_rate: bytes per second.
    :param iteration: pre-copy pass number.
    :param message: the backend's message (why it failed, ...).
    """

    phase: Phase
    fraction: float | None = None
    raw_state: str = ''
    data_total: int | None = None
    data_processed: int | None = None
    data_remaining: int | None = None
    memory_dirty_rate: int | None = None
    transfer_rate: int | None = None
    iteration: int | None = None
    message: str = ''

    def problems(self) -> list[str]:
        """What is malformed in this progress (empty when it is fine)."""
        found = []
        if not isinstance(self.phase, Phase):
            found.append(f'phase {self.phase!r} is not a Phase')
        frac = self.fraction
        if frac is not None and (not isinstance(frac, (int, float)) or
                                 isinstance(frac, bool) or
                                 not 0.0 <= frac <= 1.0):
            found.append(f'fraction {frac!r} is not within 0..1')
        for name in ('data_total', 'data_processed', 'data_remaining',
                     'memory_dirty_rate', 'transfer_rate', 'iteration'):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or
                                      isinstance(value, bool) or value < 0):
                found.append(f'{name} {value!r} is not a count >= 0')
        return found

    @property
    def completed(self) -> float | None:
        """The completed fraction, from the backend or from byte counts."""
        if self.fraction is not None:
            return self.fraction
        if self.data_total and self.data_remaining is not None:
            return max(0.0, min(1.0, 1 - self.data_remaining /
                                self.data_total))
        return None


#: The operations a migration must be started prepared for, by policy.
PREPARE_POSTCOPY = frozenset({caps.Operation.FORCE_COMPLETE_POSTCOPY})


@dataclasses.dataclass(frozen=True)
class MigrationSpec:
    """What to migrate, where, and how.

    :param instance: the backend's name or id of the guest.
    :param destination: where to (a plain string is taken as the address
        and the host name both).
    :param prepare_for: operations the migration must be started ready
        for; a migration prepared for ``force_complete_postcopy`` is
        started so that a later switch to post-copy is possible (libvirt's
        VIR_MIGRATE_POSTCOPY).
    :param block_migration: copy local disks too.
    :param bandwidth_mib: bandwidth cap in MiB/s, None for the default.
    :param completion_timeout: the per-instance timeout the monitor will
        enforce, in seconds (None = none), so a driver can shape downtime
        steps by it.
    :param options: driver-specific extras, JSON-serialisable.
    """

    instance: str
    destination: Destination
    prepare_for: frozenset[caps.Operation] = frozenset()
    block_migration: bool = False
    bandwidth_mib: int | None = None
    completion_timeout: float | None = None
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.destination, str):
            object.__setattr__(self, 'destination', Destination(
                host=self.destination, address=self.destination))
        if not isinstance(self.destination, Destination):
            raise TypeError('MigrationSpec.destination must be a Destination')
        ops = frozenset(self.prepare_for)
        if any(not isinstance(op, caps.Operation) for op in ops):
            raise TypeError('prepare_for takes capabilities.Operation members')
        object.__setattr__(self, 'prepare_for', ops)

    @property
    def postcopy(self) -> bool:
        """Whether the migration is started ready for a post-copy switch."""
        return caps.Operation.FORCE_COMPLETE_POSTCOPY in self.prepare_for

    def as_dict(self) -> dict[str, Any]:
        return {'instance': self.instance,
                'destination': self.destination.as_dict(),
                'prepare_for': sorted(op.value for op in self.prepare_for),
                'block_migration': self.block_migration,
                'bandwidth_mib': self.bandwidth_mib,
                'completion_timeout': self.completion_timeout,
                'options': dict(self.options)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MigrationSpec:
        return cls(instance=str(data['instance']),
                   destination=Destination.from_dict(data['destination']),
                   prepare_for=frozenset(caps.Operation(v) for v in
                                         data.get('prepare_for', ())),
                   block_migration=bool(data.get('block_migration')),
                   bandwidth_mib=data.get('bandwidth_mib'),
                   completion_timeout=data.get('completion_timeout'),
                   options=dict(data.get('options') or {}))


@dataclasses.dataclass(frozen=True)
class MigrationRef:
    """A serialisable reference to a running migration, to re-attach to it.

    :param driver: the driver's entry-point name.
    :param reference: the backend's id of the migration: a vSphere task
        moref, a XenAPI task OpaqueRef, a WMI job path, a PowerVM job id,
        the libvirt domain UUID.
    :param spec: what was started.
    :param started_at: wall-clock (epoch) seconds of the start.
    :param data_gib: the data size the timeout was based on.
    :param extra: driver data needed to re-attach (e.g. the LPAR UUID).
    """

    driver: str
    reference: str
    spec: MigrationSpec
    started_at: float
    data_gib: float = 2.0
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({'driver': self.driver, 'reference': self.reference,
                           'spec': self.spec.as_dict(),
                           'started_at': self.started_at,
                           'data_gib': self.data_gib,
                           'extra': dict(self.extra)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> MigrationRef:
        """:raises: ValueError for anything that is not such a reference."""
        try:
            data = json.loads(text)
            return cls(driver=str(data['driver']),
                       reference=str(data['reference']),
                       spec=MigrationSpec.from_dict(data['spec']),
                       started_at=float(data['started_at']),
                       data_gib=float(data.get('data_gib', 2.0)),
                       extra=dict(data.get('extra') or {}))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f'not a migration reference: {exc}') from exc


@dataclasses.dataclass(eq=False)
class Migration:
    """A handle on one running migration, returned by ``start_migration``.

    :param spec: what was started.
    :param data_gib: data to transfer in GiB as nova counts it (RAM plus
        migrated disks, each at least 2 GiB); the base of per-GiB timeouts.
    :param reference: the backend's id of the migration (see
        :class:`MigrationRef`).
    :param backend: driver-private state (a BlockingCall, a task ref ...).
    :param started_at: monotonic seconds of the start.
    :param started_wall: wall-clock (epoch) seconds of the start.
    """

    spec: MigrationSpec
    data_gib: float
    reference: str = ''
    backend: Any = None
    id: str = dataclasses.field(default_factory=lambda: str(uuid.uuid4()))
    started_at: float = dataclasses.field(default_factory=time.monotonic)
    started_wall: float = dataclasses.field(default_factory=time.time)
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    #: monotonic time our abort was accepted by the backend (set by abort()).
    abort_accepted_at: float | None = None
    #: the terminal progress once seen (terminal phases are sticky).
    final: Progress | None = None

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started_at

    def ref(self, driver: str) -> MigrationRef:
        return MigrationRef(driver=driver, reference=self.reference,
                            spec=self.spec, started_at=self.started_wall,
                            data_gib=self.data_gib, extra=dict(self.extra))


def data_gib(ram_bytes: int, disk_bytes: tuple[int, ...] = ()) -> float:
    """Data to transfer in GiB, each part counted as at least 2 GiB (nova)."""
    total = max(ram_bytes / GIB, 2.0)
    for size in disk_bytes:
        total += max(size / GIB, 2.0)
    return total


def bounded(call: Callable[[], T], timeout: float, what: str,
            driver: str) -> T:
    """Run ``call`` in a daemon thread and wait at most ``timeout`` seconds.

    A call that does not return in time is abandoned (its thread goes on
    and its result is dropped), so a hung backend never holds the caller.

    :raises: DriverCallTimeout when the time ran out; whatever ``call``
        raised otherwise.
    """
    if not timeout or math.isinf(timeout):
        return call()
    box: dict[str, Any] = {}
    done = threading.Event()

    def runner() -> None:
        try:
            box['value'] = call()
        except BaseException as exc:  # handed to the caller
            box['error'] = exc
        finally:
            done.set()

    threading.Thread(target=runner, name=f'lmcaps-call-{what}',
                     daemon=True).start()
    if not done.wait(timeout):
        raise exception.DriverCallTimeout(driver=driver, call=what,
                                          timeout=f'{timeout:g}')
    if 'error' in box:
        raise box['error']
    return box['value']


class BlockingCall:
    """Runs a backend's blocking migrate call; its result is the verdict.

    For backends whose migrate call returns only when the migration has
    ended (libvirt's ``migrateToURI3``, pypowervm's ``migrate_lpar``).  The
    call runs in a daemon thread; :meth:`verdict` is None while it runs,
    then the exception it raised (None inside a finished ``Verdict`` means
    success).

    :param call: the blocking call.
    :param classify: turns the exception the call raised into a terminal
        Phase (CANCELLED for the backend's "aborted" error, else FAILED).
    :param name: the thread's name.
    :param on_end: called in the thread after the call returned or raised.
    """

    @dataclasses.dataclass(frozen=True)
    class Verdict:
        phase: Phase
        error: BaseException | None = None

        @property
        def message(self) -> str:
            return '' if self.error is None else str(self.error) or type(
                self.error).__name__

    def __init__(self, call: Callable[[], object],
                 classify: Callable[[BaseException], Phase] = lambda _e:
                 Phase.FAILED, *, name: str = 'lmcaps-migrate',
                 on_end: Callable[[], None] | None = None) -> None:
        self._call = call
        self._classify = classify
        self._on_end = on_end
        self.finished = threading.Event()
        self._verdict: BlockingCall.Verdict | None = None
        self.thread = threading.Thread(target=self._run, name=name,
                                       daemon=True)

    def start(self) -> BlockingCall:
        self.thread.start()
        return self

    def _run(self) -> None:
        verdict = BlockingCall.Verdict(Phase.COMPLETED)
        try:
            self._call()
        except BaseException as exc:  # never lose the thread's outcome
            try:
                phase = self._classify(exc)
            except Exception:
                phase = Phase.FAILED
            verdict = BlockingCall.Verdict(phase, exc)
        finally:
            self._verdict = verdict
            self.finished.set()
            if self._on_end is not None:
                try:
                    self._on_end()
                except Exception:
                    pass

    def verdict(self, wait: float = 0.0) -> BlockingCall.Verdict | None:
        """The verdict, waiting up to ``wait`` seconds; None while running."""
        if wait > 0:
            self.finished.wait(wait)
        return self._verdict if self.finished.is_set() else None

    def progress(self) -> Progress | None:
        """The terminal Progress of a finished call, None while it runs."""
        verdict = self.verdict()
        if verdict is None:
            return None
        return Progress(verdict.phase, fraction=(
            1.0 if verdict.phase is Phase.COMPLETED else None),
            raw_state='returned' if verdict.error is None else 'raised',
            message=verdict.message)


class LiveMigrationDriver(abc.ABC):
    """Base class of every lmcaps driver (entry points in ``lmcaps.drivers``).

    Subclasses set :attr:`name` to their entry-point name, implement
    :meth:`declare`, :meth:`_start`, :meth:`_progress`, :meth:`_locate` and
    the private ``_abort`` / ``_force_complete`` / ``_resume_source`` methods
    for the operations they declare usable.  Hypervisor client libraries
    must be imported lazily (in :meth:`connect`), so that loading the entry
    point for ``lmcaps report`` costs nothing.

    **The _abort contract**: ``_abort`` returns once the backend has
    *accepted* the cancel (vSphere's CancelTask returned, xapi's
    ``task.cancel`` returned, RequestStateChange answered 0 or 4096,
    virDomainAbortJob returned); it never waits for the migration to end.
    The public :meth:`abort` bounds it by ``[lmcaps] driver_call_timeout``
    and records when it was accepted; a migration that then ends FAILED
    with the guest observed on the source is classified CANCELLED here, in
    one place, for every driver.
    """

    #: Entry-point name, also the suffix of the option group.
    name: ClassVar[str] = ''

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        self.conf = conf
        self.group = lmcaps_conf.driver_group(self.name)
        opts = self.list_opts()
        if opts:
            conf.register_opts(opts, group=self.group)
        self._host_declaration: caps.Declaration | None = None

    # -- declarations -----------------------------------------------------

    @classmethod
    def list_opts(cls) -> list[cfg.Opt]:
        """This driver's options, registered in ``[lmcaps_<name>]``."""
        return []

    @classmethod
    @abc.abstractmethod
    def declare(cls) -> caps.Declaration:
        """What the driver supports anywhere; static, no I/O, no client import."""

    @property
    def options(self) -> Any:
        """This driver's option group on the conf it was given."""
        return self.conf[self.group]

    @property
    def call_timeout(self) -> float:
        """Seconds a bounded driver call may take (``[lmcaps]``)."""
        try:
            return float(self.conf[lmcaps_conf.GROUP].driver_call_timeout)
        except (cfg.NoSuchOptError, cfg.NoSuchGroupError):
            return DEFAULT_CALL_TIMEOUT

    def host_declaration(self) -> caps.Declaration:
        """The declaration refined for this host; the static one by default.

        Drivers override :meth:`_refine` to look at versions and permits; it
        is called once, after :meth:`connect`.
        """
        if self._host_declaration is None:
            self._host_declaration = self._refine(self.declare())
        return self._host_declaration

    def _refine(self, declaration: caps.Declaration) -> caps.Declaration:
        return declaration

    # -- connection -------------------------------------------------------

    def connect(self) -> None:
        """Open the connection to the backend (idempotent)."""

    def close(self) -> None:
        """Release the connection."""

    # -- starting ---------------------------------------------------------

    def guest_data_gib(self, spec: MigrationSpec) -> float:
        """Data the migration of ``spec`` will move, in GiB, as nova counts it.

        The configured per-GiB timeout is multiplied by this before the
        migration starts.  The default is the 2 GiB floor; drivers that can
        see the guest's RAM (and disks) override it (see :func:`data_gib`).
        """
        return 2.0

    def prepare_destination(self, spec: MigrationSpec) -> Destination:
        """Ask the destination for what the start needs; before the start.

        XenAPI cross-pool migration takes a token from the destination
        (``Host.migrate_receive``); vSphere needs the target host's resource
        pool and datastore.  The default returns ``spec.destination``.

        :raises: DriverError if the destination refuses or is unreachable.
        """
        return spec.destination

    def start_migration(self, spec: MigrationSpec) -> Migration:
        """Start a live migration and return at once with its handle.

        :raises: UnsupportedOperation if ``spec.prepare_for`` names an
            operation that is not usable here; DriverError if the backend
            refused to start it.
        """
        for op in spec.prepare_for:
            self.require(op)
        migration = self._start(spec)
        if not isinstance(migration, Migration):
            raise exception.DriverError(
                driver=self.name, reason=f'_start returned {migration!r}, '
                                         f'not a Migration')
        return migration

    @abc.abstractmethod
    def _start(self, spec: MigrationSpec) -> Migration:
        """Start the migration (see :meth:`start_migration`)."""

    def reattach(self, ref: MigrationRef) -> Migration:
        """A handle on a migration started earlier (by another process).

        :raises: MigrationGone if the backend no longer has it;
            UnsupportedOperation if this driver cannot re-attach;
            DriverError for backend trouble.
        """
        if ref.driver != self.name:
            raise exception.DriverError(
                driver=self.name, reason=f'the reference belongs to driver '
                                         f'{ref.driver!r}')
        migration = self._reattach(ref)
        migration.started_at = time.monotonic() - max(
            0.0, time.time() - ref.started_at)
        migration.started_wall = ref.started_at
        return migration

    def _reattach(self, ref: MigrationRef) -> Migration:
        raise exception.UnsupportedOperation(
            driver=self.name, operation='reattach',
            reason='this driver cannot re-attach to a running migration')

    # -- observing --------------------------------------------------------

    def get_progress(self, migration: Migration) -> Progress:
        """Observe a migration; cheap enough to call twice a second.

        Terminal phases are sticky.  A FAILED end after our own accepted
        abort with the guest observed on the source is CANCELLED.

        :raises: DriverError (a malformed progress from the driver is one,
            naming the driver), MigrationGone.
        """
        if migration.final is not None:
            return migration.final
        try:
            progress = self._progress(migration)
        except exception.LmcapsException:
            raise
        except Exception as exc:
            raise exception.DriverError(
                driver=self.name,
                reason=f'get_progress: {type(exc).__name__}: {exc}') from exc
        if not isinstance(progress, Progress):
            raise exception.DriverError(
                driver=self.name, reason=f'get_progress returned '
                                         f'{progress!r}, not a Progress')
        problems = progress.problems()
        if problems:
            raise exception.DriverError(
                driver=self.name, reason='malformed progress: ' +
                '; '.join(problems))
        if progress.phase.terminal:
            progress = self._classify_end(migration, progress)
            migration.final = progress
        return progress

    def _classify_end(self, migration: Migration,
                      progress: Progress) -> Progress:
        if (progress.phase is Phase.FAILED and
                migration.abort_accepted_at is not None and
                self.guest_location(migration).host is GuestHost.SOURCE):
            return dataclasses.replace(progress, phase=Phase.CANCELLED)
        return progress

    @abc.abstractmethod
    def _progress(self, migration: Migration) -> Progress:
        """The backend's view of the migration (see :meth:`get_progress`)."""

    def guest_location(self, migration: Migration) -> GuestLocation:
        """Where the guest is and whether it runs, asked of the backend.

        Never raises: a backend that cannot be asked gives
        ``GuestLocation.unknown(why)``.
        """
        try:
            where = bounded(lambda: self._locate(migration),
                            self.call_timeout, 'locate', self.name)
        except Exception as exc:
            return GuestLocation.unknown(f'{type(exc).__name__}: {exc}')
        if not isinstance(where, GuestLocation):
            return GuestLocation.unknown(
                f'driver {self.name} returned {where!r}')
        return where

    @abc.abstractmethod
    def _locate(self, migration: Migration) -> GuestLocation:
        """Ask the backend where the guest is (see :meth:`guest_location`)."""

    def wait(self, migration: Migration, timeout: float | None = None,
             interval: float = 0.2) -> Progress:
        """Block until the migration reaches a terminal phase or ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            progress = self.get_progress(migration)
            if progress.phase.terminal:
                return progress
            if deadline is not None and time.monotonic() >= deadline:
                return progress
            time.sleep(interval)

    # -- acting -----------------------------------------------------------

    def abort(self, migration: Migration) -> None:
        """Request the cancel of the migration; returns once accepted.

        :raises: UnsupportedOperation if declared missing (nothing is done);
            OperationRefused if the backend refuses now (e.g. in post-copy,
            or already completed); DriverCallTimeout if the backend did not
            answer within ``[lmcaps] driver_call_timeout``.
        """
        self.require(caps.Operation.ABORT)
        self._bounded(lambda: self._abort(migration), 'abort')
        migration.abort_accepted_at = time.monotonic()

    def force_complete(self, migration: Migration,
                       mode: caps.ForceCompleteMode) -> None:
        """Make the migration finish: switch to post-copy, or pause the guest.

        :raises: UnsupportedOperation if ``mode`` is declared missing;
            OperationRefused if the backend refuses now; DriverCallTimeout.
        """
        self.require(mode.operation)
        self._bounded(lambda: self._force_complete(migration, mode),
                      f'force_complete({mode.value})')

    def resume_source(self, migration: Migration) -> None:
        """Resume a guest paused by force-complete after the migration failed."""
        self.require(caps.Operation.FORCE_COMPLETE_PAUSE)
        self._bounded(lambda: self._resume_source(migration), 'resume_source')

    def recover(self, migration: Migration) -> str | None:
        """Repair what a failed migration left (PowerVM's migrate_recover).

        Called by the orchestration once a migration ended FAILED; a no-op
        by default.

        :returns: what was done, for the outcome event, or None.
        :raises: DriverError if the recovery failed.
        """
        return None

    def _bounded(self, call: Callable[[], T], what: str) -> T:
        return bounded(call, self.call_timeout, what, self.name)

    def require(self, operation: caps.Operation) -> None:
        """Raise UnsupportedOperation unless ``operation`` is usable here."""
        cap = self.host_declaration()[operation]
        if not cap.support.usable:
            raise exception.UnsupportedOperation(
                driver=self.name, operation=operation.value,
                reason=cap.notes or f'declared {cap.support.value}')

    def _unimplemented(self, operation: caps.Operation) -> None:
        raise exception.UnsupportedOperation(
            driver=self.name, operation=operation.value,
            reason='declared usable but not implemented by the driver '
                   '(a defect of the driver)')

    def _abort(self, migration: Migration) -> None:
        self._unimplemented(caps.Operation.ABORT)

    def _force_complete(self, migration: Migration,
                        mode: caps.ForceCompleteMode) -> None:
        self._unimplemented(mode.operation)

    def _resume_source(self, migration: Migration) -> None:
        self._unimplemented(caps.Operation.FORCE_COMPLETE_PAUSE)
