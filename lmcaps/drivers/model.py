"""The data of driver API v2: phases, locations, destinations, handles.

Plain frozen data (and the mutable :class:`Migration` handle) shared by
drivers, the monitor, the orchestration and the conformance kit; no I/O.
Re-exported by :mod:`lmcaps.drivers.base`.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

from lmcaps import capabilities as caps

GIB = 1024 ** 3


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

    #: whether the migration has ended (completed, failed or cancelled);
    #: an attribute, read several times per reading
    terminal: bool

    def __init__(self, value: str) -> None:
        self.terminal = value in ('completed', 'failed', 'cancelled')


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


_COUNTS = ('data_total', 'data_processed', 'data_remaining',
           'memory_dirty_rate', 'transfer_rate', 'iteration')


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
        for name in _COUNTS:
            value = getattr(self, name)
            if value is None or (type(value) is int and value >= 0):
                continue            # the common case, checked first
            if (not isinstance(value, int) or isinstance(value, bool) or
                    value < 0):
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


def _settled() -> threading.Event:
    """An event that is set: no abort call in flight."""
    done = threading.Event()
    done.set()
    return done


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
    #: set while no abort call is in flight (cleared by abort() meanwhile)
    abort_settled: threading.Event = dataclasses.field(
        default_factory=_settled, repr=False, compare=False)
    #: the terminal progress once seen (terminal phases are sticky).
    final: Progress | None = None

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started_at

    def ref(self, driver: str) -> MigrationRef:
        return MigrationRef(driver=driver, reference=self.reference,
                            spec=self.spec, started_at=self.started_wall,
                            data_gib=self.data_gib, extra=dict(self.extra))


@dataclasses.dataclass(frozen=True)
class GuestInfo:
    """A guest the source host runs, as its backend lists it.

    :param name: the backend's name of the guest (a libvirt domain name).
    :param uuid: the backend's UUID of the guest.
    :param ram_mib: its memory, in MiB.
    :param labels: driver-visible labels or metadata, ``{key: value}``
        (libvirt: the ``lmcaps:labels`` element of the domain metadata).
    :param state: whether it runs, as the backend says.
    :param busy: why it cannot be migrated now, in the backend's terms
        (an incoming migration, a job already running), '' when it can;
        ``lmcaps drain`` refuses a busy guest.
    """

    name: str
    uuid: str
    ram_mib: int
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    state: RunState = RunState.RUNNING
    busy: str = ''

    def as_dict(self) -> dict[str, Any]:
        return {'name': self.name, 'uuid': self.uuid,
                'ram_mib': self.ram_mib, 'labels': dict(self.labels),
                'state': self.state.value, 'busy': self.busy}


def data_gib(ram_bytes: int, disk_bytes: tuple[int, ...] = ()) -> float:
    """Data to transfer in GiB, each part counted as at least 2 GiB (nova)."""
    total = max(ram_bytes / GIB, 2.0)
    for size in disk_bytes:
        total += max(size / GIB, 2.0)
    return total
