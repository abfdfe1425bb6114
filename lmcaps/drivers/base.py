"""The driver plugin API.

A driver *declares* what it supports (:meth:`LiveMigrationDriver.declare`,
refined per host by :meth:`LiveMigrationDriver.host_declaration`) and
*implements* exactly that.  Calling an operation the driver declares
``missing`` raises :class:`~lmcaps.exception.UnsupportedOperation` before
anything reaches the backend; drivers never raise NotImplementedError.

The API is deliberately small so that a driver over any transport fits it:
libvirt's RPC, XenAPI's XML-RPC tasks, vSphere SOAP tasks, WS-Man shells or
a REST job.  A driver that can only cancel a backend task implements
:meth:`_abort` and declares both force-complete operations missing.
"""

from __future__ import annotations

import abc
import dataclasses
import enum
import time
import uuid
from collections.abc import Mapping
from typing import Any, ClassVar

from oslo_config import cfg

from lmcaps import capabilities as caps
from lmcaps import conf as lmcaps_conf
from lmcaps import exception

GIB = 1024 ** 3


class Phase(enum.Enum):
    """Where a live migration is."""

    PREPARING = 'preparing'   # accepted, no guest data sent yet
    PRECOPY = 'precopy'       # guest runs on the source, memory copied
    PAUSED = 'paused'         # guest paused on the source, copy finishing
    POSTCOPY = 'postcopy'     # guest runs on the destination, pages pulled
    COMPLETED = 'completed'   # guest runs on the destination
    FAILED = 'failed'         # guest still (or again) on the source
    CANCELLED = 'cancelled'   # aborted; guest on the source

    @property
    def terminal(self) -> bool:
        return self in (Phase.COMPLETED, Phase.FAILED, Phase.CANCELLED)


@dataclasses.dataclass(frozen=True)
class Progress:
    """A snapshot of a running migration; byte counts may be unknown (None)."""

    phase: Phase
    data_total: int | None = None
    data_processed: int | None = None
    data_remaining: int | None = None
    memory_dirty_rate: int | None = None   # bytes per second
    transfer_rate: int | None = None       # bytes per second
    iteration: int | None = None
    message: str = ''


@dataclasses.dataclass(frozen=True)
class MigrationSpec:
    """What to migrate, where, and how.

    :param instance: the backend's name or id of the guest.
    :param destination: the backend's address of the destination host.
    :param postcopy: start the migration so that a later switch to
        post-copy is possible (libvirt's VIR_MIGRATE_POSTCOPY).
    :param block_migration: copy local disks too.
    :param bandwidth_mib: bandwidth cap in MiB/s, None for the default.
    :param completion_timeout: the timeout the monitor will enforce, in
        seconds (None = none), so a driver can shape downtime steps by it.
    :param options: driver-specific extras (strings only).
    """

    instance: str
    destination: str
    postcopy: bool = False
    block_migration: bool = False
    bandwidth_mib: int | None = None
    completion_timeout: float | None = None
    options: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Migration:
    """A handle on one running migration, returned by ``start_migration``.

    :param data_gib: data to transfer in GiB as nova counts it (RAM plus
        migrated disks, each at least 2 GiB); the base of per-GiB timeouts.
    :param backend: driver-private state (a thread, a task ref, a job id).
    """

    spec: MigrationSpec
    data_gib: float
    id: str = dataclasses.field(default_factory=lambda: str(uuid.uuid4()))
    started_at: float = dataclasses.field(default_factory=time.monotonic)
    backend: Any = None

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started_at


def data_gib(ram_bytes: int, disk_bytes: tuple[int, ...] = ()) -> float:
    """Data to transfer in GiB, each part counted as at least 2 GiB (nova)."""
    total = max(ram_bytes / GIB, 2.0)
    for size in disk_bytes:
        total += max(size / GIB, 2.0)
    return total


class LiveMigrationDriver(abc.ABC):
    """Base class of every lmcaps driver (entry points in ``lmcaps.drivers``).

    Subclasses set :attr:`name` to their entry-point name, implement
    :meth:`declare`, :meth:`start_migration`, :meth:`get_progress` and the
    private ``_abort`` / ``_force_complete`` / ``_resume_source`` methods for
    the operations they declare usable.  Hypervisor client libraries must be
    imported lazily (in :meth:`connect`), so that loading the entry point for
    ``lmcaps report`` costs nothing.
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

    # -- migrations -------------------------------------------------------

    def guest_data_gib(self, spec: MigrationSpec) -> float:
        """Data the migration of ``spec`` will move, in GiB, as nova counts it.

        The configured per-GiB timeout is multiplied by this before the
        migration starts.  The default is the 2 GiB floor; drivers that can
        see the guest's RAM (and disks) override it (see :func:`data_gib`).
        """
        return 2.0

    @abc.abstractmethod
    def start_migration(self, spec: MigrationSpec) -> Migration:
        """Start a live migration and return at once with its handle.

        :raises: DriverError if the backend refused to start it.
        """

    @abc.abstractmethod
    def get_progress(self, migration: Migration) -> Progress:
        """Observe a migration; cheap enough to call twice a second."""

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

    def abort(self, migration: Migration) -> None:
        """Cancel the migration; the guest keeps running on the source.

        :raises: UnsupportedOperation if declared missing (nothing is done);
            OperationRefused if the backend refuses now (e.g. in post-copy).
        """
        self.require(caps.Operation.ABORT)
        self._abort(migration)

    def force_complete(self, migration: Migration,
                       mode: caps.ForceCompleteMode) -> None:
        """Make the migration finish: switch to post-copy, or pause the guest.

        :raises: UnsupportedOperation if ``mode`` is declared missing;
            OperationRefused if the backend refuses now.
        """
        self.require(mode.operation)
        self._force_complete(migration, mode)

    def resume_source(self, migration: Migration) -> None:
        """Resume a guest paused by force-complete after the migration failed."""
        self.require(caps.Operation.FORCE_COMPLETE_PAUSE)
        self._resume_source(migration)

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
