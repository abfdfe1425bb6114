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
    _list_guests() -> [GuestInfo] (optional, with lists_guests = True)
    _abort / _force_complete / _resume_source   for declared operations
    recover(migration)            (optional) after a failure

Every public method raises only :class:`~lmcaps.exception.LmcapsException`
subclasses for backend trouble (DriverError and its kin).
"""

from __future__ import annotations

import abc
import dataclasses
import time
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from oslo_config import cfg

from lmcaps import capabilities as caps
from lmcaps import conf as lmcaps_conf
from lmcaps import exception
from lmcaps.drivers import calls
from lmcaps.drivers import model

GIB = model.GIB
T = TypeVar('T')

#: Seconds a bounded driver call may take when no conf says otherwise.
DEFAULT_CALL_TIMEOUT = 20.0

# The API's data and call helpers, re-exported: ``base.Phase`` etc.
Phase = model.Phase
GuestHost = model.GuestHost
RunState = model.RunState
GuestLocation = model.GuestLocation
Destination = model.Destination
Progress = model.Progress
PREPARE_POSTCOPY = model.PREPARE_POSTCOPY
MigrationSpec = model.MigrationSpec
MigrationRef = model.MigrationRef
Migration = model.Migration
GuestInfo = model.GuestInfo
data_gib = model.data_gib
bounded = calls.bounded
BlockingCall = calls.BlockingCall


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
    #: Whether the driver lists the guests of its host (:meth:`list_guests`).
    lists_guests: ClassVar[bool] = False

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        self.conf = conf
        self.group = lmcaps_conf.driver_group(self.name)
        opts = self.list_opts()
        if opts:
            conf.register_opts(opts, group=self.group)
        self._host_declaration: caps.Declaration | None = None
        # oslo.config group views: each attribute read is a live look-up
        # (overrides and reloads show), the view itself is made once
        self._options: Any = None
        self._lmcaps_options: Any = None

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
        if self._options is None:
            self._options = self.conf[self.group]
        return self._options

    @property
    def call_timeout(self) -> float:
        """Seconds a bounded driver call may take (``[lmcaps]``)."""
        try:
            if self._lmcaps_options is None:
                self._lmcaps_options = self.conf[lmcaps_conf.GROUP]
            return float(self._lmcaps_options.driver_call_timeout)
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

    def instance_uuid(self, spec: MigrationSpec) -> str:
        """The UUID events are recorded under for ``spec.instance``.

        A driver whose guests have UUIDs returns the backend's (libvirt's
        domain UUID for a name); the default is ``spec.instance`` itself.

        :raises: DriverError if the guest is not found.
        """
        return spec.instance

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

    # -- listing ----------------------------------------------------------

    def source_names(self) -> set[str]:
        """Names and addresses of the source host (this host).

        A drain refuses a destination among them.  The default is
        ``[lmcaps] host``; drivers add their own addresses of it.
        """
        try:
            return {self.conf[lmcaps_conf.GROUP].host}
        except (cfg.NoSuchOptError, cfg.NoSuchGroupError):
            return set()

    def list_guests(self) -> list[GuestInfo]:
        """The active (running or paused) guests of the source host.

        What ``lmcaps drain`` selects from; asked of the backend (libvirt's
        ``listAllDomains(ACTIVE)``), sorted by name.

        :raises: UnsupportedOperation when the driver does not declare
            :attr:`lists_guests` (nothing is asked of the backend);
            DriverError for backend trouble.
        """
        if not self.lists_guests:
            raise exception.UnsupportedOperation(
                driver=self.name, operation='list_guests',
                reason='this driver cannot list the guests of its host; '
                       'drivers that can: fake, libvirt')
        self.connect()
        guests = self._bounded(self._list_guests, 'list_guests')
        if not isinstance(guests, list) or any(
                not isinstance(g, GuestInfo) for g in guests):
            raise exception.DriverError(
                driver=self.name, reason='list_guests returned something '
                                         'other than a list of GuestInfo')
        return sorted(guests, key=lambda g: g.name)

    def _list_guests(self) -> list[GuestInfo]:
        raise exception.UnsupportedOperation(
            driver=self.name, operation='list_guests',
            reason='declared but not implemented by the driver (a defect '
                   'of the driver)')

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
            # an end read while our abort call is still in flight is
            # classified once that call returned (briefly waited for)
            migration.abort_settled.wait(min(1.0, self.call_timeout / 2))
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
        migration.abort_settled.clear()
        try:
            self._bounded(lambda: self._abort(migration), 'abort')
            migration.abort_accepted_at = time.monotonic()
        finally:
            migration.abort_settled.set()

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
