"""The libvirt (KVM/QEMU) driver, over libvirt-python.

Each migration runs ``migrateToURI3`` on a connection of its own in a worker
thread; every control call (jobStats, abortJob, migrateStartPostCopy,
suspend, migrateSetMaxDowntime) goes through the driver's control
connection.  Sharing one connection between the blocked migrate call and the
control calls hangs or delays them with libvirt 9.0's client (seen here: a
hang in 3 runs of 8, or an exact 5 s delay with the event loop running).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid as uuid_mod
import xml.etree.ElementTree as ET
from typing import Any

from oslo_config import cfg

from lmcaps import capabilities as caps
from lmcaps import conf as lmcaps_conf
from lmcaps import exception
from lmcaps.drivers import base
from lmcaps.drivers.libvirt import downtime
from lmcaps.drivers.libvirt import jobstats

LOG = logging.getLogger(__name__)

MIN_LIBVIRT_POSTCOPY = (1, 3, 3)
MIN_QEMU_POSTCOPY = (2, 5, 0)
ERR_OPERATION_INVALID = 55
ERR_OPERATION_ABORTED = 78
ERR_NO_DOMAIN = 42
ERR_NO_DOMAIN_METADATA = 80
ERR_OPERATION_UNSUPPORTED = 84
#: Namespace of the labels ``lmcaps drain`` selects by, in a domain's
#: ``<metadata>``: ``<lmcaps:labels xmlns:lmcaps="..."><lmcaps:label
#: key="tier">db</lmcaps:label></lmcaps:labels>``.
LABELS_NS = 'http://openstack.org/xmlns/lmcaps/labels/1.0'

OPTS = [
    cfg.StrOpt('connection_uri', default='qemu:///system',
               help='libvirt URI of the source host (this host).'),
    cfg.IntOpt('live_migration_bandwidth', default=0, min=0,
               help='Maximum bandwidth of a live migration, in MiB/s; 0 '
                    'lets libvirt choose. A request may set its own.'),
    cfg.IntOpt('live_migration_postcopy_bandwidth', default=0, min=0,
               help='Maximum bandwidth in post-copy, in MiB/s; 0 = no cap.'),
    cfg.IntOpt('live_migration_downtime', default=500, min=100,
               help='Maximum downtime allowed at the end of pre-copy, in ms.'
                    ' Related: live_migration_downtime_steps, _delay.'),
    cfg.IntOpt('live_migration_downtime_steps', default=10, min=3,
               help='Number of steps up to live_migration_downtime.'),
    cfg.IntOpt('live_migration_downtime_delay', default=75, min=3,
               help='Seconds per GiB of data between two downtime steps; '
                    'with a per-instance timeout the steps are spread over '
                    'its first half instead.'),
    cfg.BoolOpt('live_migration_permit_auto_converge', default=False,
                help='Let QEMU throttle the guest CPU to converge; used only '
                     'when the migration is not post-copy capable.'),
]


def _version(number: int) -> tuple[int, int, int]:
    return (number // 1000000, number // 1000 % 1000, number % 1000)


def _fmt(version: tuple[int, int, int]) -> str:
    return '.'.join(map(str, version))


class _State:
    """Driver-private state of one migration (``Migration.backend``).

    :param call: the blocking migrateToURI3 call; None after a re-attach
        (the migrate call belonged to another process).
    """

    def __init__(self, domain: Any, flags: int,
                 call: base.BlockingCall | None = None) -> None:
        self.domain = domain
        self.flags = flags
        self.call = call
        self.paused_by_us = False
        self.cancel_tuning = threading.Event()
        self.last_phase = base.Phase.PREPARING
        self.last: base.Progress = base.Progress(base.Phase.PREPARING)
        self.ended: base.Progress | None = None   # seen without a call

    @property
    def finished(self) -> threading.Event:
        if self.call is not None:
            return self.call.finished
        done = threading.Event()
        if self.ended is not None:
            done.set()
        return done


class LibvirtDriver(base.LiveMigrationDriver):
    """Abort, post-copy and pause on KVM/QEMU through libvirt."""

    name = 'libvirt'
    lists_guests = True

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        super().__init__(conf)
        self._libvirt: Any = None
        self._conn: Any = None
        self._lock = threading.Lock()
        self._dest_conns: dict[str, Any] = {}

    @classmethod
    def list_opts(cls) -> list[cfg.Opt]:
        return list(OPTS)

    @classmethod
    def declare(cls) -> caps.Declaration:
        req = (f'libvirt>={_fmt(MIN_LIBVIRT_POSTCOPY)}, '
               f'QEMU>={_fmt(MIN_QEMU_POSTCOPY)}')
        return caps.Declaration('libvirt', 'libvirt (KVM/QEMU)', {
            caps.Operation.ABORT: caps.complete(
                'virDomainAbortJob; refused once the migration is in '
                'post-copy'),
            caps.Operation.FORCE_COMPLETE_POSTCOPY: caps.partial(
                condition='[lmcaps] permit_post_copy is True and the '
                          'migration was started with VIR_MIGRATE_POSTCOPY',
                notes='virDomainMigrateStartPostCopy', requires=req),
            caps.Operation.FORCE_COMPLETE_PAUSE: caps.complete(
                'virDomainSuspend; the guest is resumed on the source if '
                'the migration then fails'),
            caps.Operation.PER_INSTANCE_TIMEOUT: caps.complete(
                'downtime steps spread over the first half of the timeout'),
        })

    # -- connection -------------------------------------------------------

    def connect(self) -> None:
        if self._conn is not None:
            return
        try:
            import libvirt
        except ImportError as exc:
            raise exception.DriverLoadFailed(
                name=self.name, reason='libvirt-python is not installed '
                '(pip install lmcaps[libvirt])') from exc
        self._libvirt = libvirt
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        self._conn = self._open()

    def _open(self) -> Any:
        uri = self.options.connection_uri
        try:
            return self._libvirt.open(uri)
        except self._libvirt.libvirtError as exc:
            from lmcaps import masking
            masking.remember(uri)
            raise exception.DriverError(
                driver=self.name,
                reason=f'cannot connect to {masking.mask_url(uri)}: '
                       f'{masking.scrub(str(exc))}') from exc

    def close(self) -> None:
        with self._lock:
            dests, self._dest_conns = list(self._dest_conns.values()), {}
        for conn in dests:
            try:
                conn.close()
            except Exception:
                pass
        if self._conn is not None:
            try:
                self._conn.close()
            except self._libvirt.libvirtError:
                pass
            self._conn = None

    def _refine(self, declaration: caps.Declaration) -> caps.Declaration:
        self.connect()
        lib = _version(self._conn.getLibVersion())
        qemu = _version(self._conn.getVersion())
        permit = self.conf[lmcaps_conf.GROUP].permit_post_copy
        facts = {'libvirt': _fmt(lib), 'qemu': _fmt(qemu),
                 'permit_post_copy': str(permit)}
        postcopy = declaration[caps.Operation.FORCE_COMPLETE_POSTCOPY]
        if lib < MIN_LIBVIRT_POSTCOPY or qemu < MIN_QEMU_POSTCOPY:
            postcopy = caps.missing(f'needs {postcopy.requires}; this host '
                                    f'has libvirt {facts["libvirt"]}, QEMU '
                                    f'{facts["qemu"]}')
        elif permit:
            postcopy = caps.complete(
                'virDomainMigrateStartPostCopy; migrations that may need it '
                'are started with VIR_MIGRATE_POSTCOPY',
                requires=postcopy.requires)
        else:
            postcopy = caps.partial(
                condition='[lmcaps] permit_post_copy is False on this host',
                notes='post-copy is not permitted here',
                requires=postcopy.requires)
        return declaration.refine(self._conn.getHostname(), facts,
                                  force_complete_postcopy=postcopy)

    # -- migrations -------------------------------------------------------

    def _lookup(self, conn: Any, name: str) -> Any:
        try:
            uuid_mod.UUID(name)
            return conn.lookupByUUIDString(name)
        except ValueError:
            return conn.lookupByName(name)

    def _domain(self, spec: base.MigrationSpec) -> tuple[Any, float]:
        self.connect()
        try:
            dom = self._lookup(self._conn, spec.instance)
            size = base.data_gib(dom.info()[1] * 1024, self._disk_sizes(dom)
                                 if spec.block_migration else ())
        except self._libvirt.libvirtError as exc:
            raise exception.DriverError(
                driver=self.name,
                reason=f'domain {spec.instance}: {exc}') from exc
        return dom, size

    def source_names(self) -> set[str]:
        """``[lmcaps] host`` and ``connection_uri``."""
        return super().source_names() | {self.options.connection_uri}

    def _list_guests(self) -> list[base.GuestInfo]:
        """The active domains of the source (``listAllDomains(ACTIVE)``).

        A domain migrating in or already in a job is listed ``busy``
        (:meth:`_busy`).
        """
        lv = self._libvirt
        try:
            domains = self._conn.listAllDomains(
                lv.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
        except lv.libvirtError as exc:
            raise exception.DriverError(
                driver=self.name, reason=f'listAllDomains: {exc}') from exc
        out = []
        for dom in domains:
            try:
                state = dom.state()
                ram_kib = dom.info()[1]
                labels = self._labels(dom)
                busy = self._busy(dom, (state[0], state[1]))
                out.append(base.GuestInfo(
                    name=dom.name(), uuid=str(dom.UUIDString()),
                    ram_mib=int(ram_kib) // 1024, labels=labels,
                    state=jobstats.run_state((state[0], state[1])),
                    busy=busy))
            except lv.libvirtError as exc:
                if exc.get_error_code() == ERR_NO_DOMAIN:
                    continue        # gone since it was listed
                raise exception.DriverError(
                    driver=self.name, reason=f'domain listing: {exc}') from exc
        return out

    def _busy(self, dom: Any, state: tuple[int, int]) -> str:
        """Why the domain cannot be migrated now, '' when it can.

        The destination side of a migration to this host is paused for
        migration (pre-copy) or running in post-copy, and libvirt refuses
        its job stats (VIR_ERR_OPERATION_UNSUPPORTED, "available only on
        the source host"; libvirt 9.0).  A domain of this host with a job
        (``jobStats`` type bounded or unbounded: a migration out, a dump)
        cannot start a migration either.
        """
        lv = self._libvirt
        try:
            job = dom.jobStats().get('type', jobstats.JOB_NONE)
        except lv.libvirtError as exc:
            incoming = state in (
                (jobstats.STATE_PAUSED, jobstats.PAUSED_MIGRATION),
                (jobstats.STATE_RUNNING, jobstats.RUNNING_POSTCOPY))
            if incoming and exc.get_error_code() == \
                    ERR_OPERATION_UNSUPPORTED:
                return 'a migration to this host is in progress (incoming)'
            raise
        if job in (jobstats.JOB_BOUNDED, jobstats.JOB_UNBOUNDED):
            return ('a job is already running on the domain (libvirt job '
                    f'type {job}, e.g. a migration out)')
        return ''

    def _labels(self, dom: Any) -> dict[str, str]:
        """The domain's ``lmcaps:labels`` metadata, ``{}`` when it has none."""
        lv = self._libvirt
        try:
            text = dom.metadata(lv.VIR_DOMAIN_METADATA_ELEMENT, LABELS_NS, 0)
        except lv.libvirtError as exc:
            if exc.get_error_code() == ERR_NO_DOMAIN_METADATA:
                return {}
            raise
        root = ET.fromstring(text)
        return {el.get('key', ''): (el.text or '') for el in root
                if el.tag.rsplit('}', 1)[-1] == 'label' and el.get('key')}

    def instance_uuid(self, spec: base.MigrationSpec) -> str:
        """The domain's UUID, whatever name or UUID the operator typed."""
        dom, _size = self._domain(spec)
        return str(dom.UUIDString())

    def guest_data_gib(self, spec: base.MigrationSpec) -> float:
        return self._domain(spec)[1]

    def _start(self, spec: base.MigrationSpec) -> base.Migration:
        dom, size = self._domain(spec)
        lv = self._libvirt
        opts = self.options
        flags = (lv.VIR_MIGRATE_LIVE | lv.VIR_MIGRATE_PEER2PEER |
                 lv.VIR_MIGRATE_PERSIST_DEST | lv.VIR_MIGRATE_UNDEFINE_SOURCE)
        if spec.postcopy:
            flags |= lv.VIR_MIGRATE_POSTCOPY
        elif opts.live_migration_permit_auto_converge:
            flags |= lv.VIR_MIGRATE_AUTO_CONVERGE
        if spec.block_migration:
            flags |= lv.VIR_MIGRATE_NON_SHARED_DISK
        params: dict[str, Any] = {}
        bandwidth = spec.bandwidth_mib or opts.live_migration_bandwidth
        if bandwidth:
            params[lv.VIR_MIGRATE_PARAM_BANDWIDTH] = int(bandwidth)
        if spec.postcopy and opts.live_migration_postcopy_bandwidth:
            params[lv.VIR_MIGRATE_PARAM_BANDWIDTH_POSTCOPY] = int(
                opts.live_migration_postcopy_bandwidth)
        if spec.options.get('migrate_uri'):
            params[lv.VIR_MIGRATE_PARAM_URI] = spec.options['migrate_uri']
        # Its own connection: see the module docstring.
        mconn = self._open()
        try:
            mdom = self._lookup(mconn, spec.instance)
        except lv.libvirtError as exc:
            mconn.close()
            raise exception.DriverError(
                driver=self.name,
                reason=f'domain {spec.instance}: {exc}') from exc
        state = _State(dom, flags)
        dest = self._dest_uri(spec)

        def close() -> None:
            state.cancel_tuning.set()
            try:
                mconn.close()
            except Exception:
                pass

        state.call = base.BlockingCall(
            lambda: mdom.migrateToURI3(dest, params, flags), self._verdict,
            name=f'lmcaps-migrate-{spec.instance}', on_end=close)
        migration = base.Migration(spec=spec, data_gib=size,
                                   reference=dom.UUIDString(), backend=state)
        state.call.start()
        threading.Thread(target=self._tune, args=(migration,), daemon=True,
                         name=f'lmcaps-downtime-{spec.instance}').start()
        return migration

    @staticmethod
    def _dest_uri(spec: base.MigrationSpec) -> str:
        """The peer-to-peer destination URI (``Destination.address``)."""
        return spec.destination.address or spec.destination.host

    def _verdict(self, exc: BaseException) -> base.Phase:
        """How a migrateToURI3 error ended the migration."""
        code = getattr(exc, 'get_error_code', lambda: None)()
        return (base.Phase.CANCELLED if code == ERR_OPERATION_ABORTED
                else base.Phase.FAILED)

    def _disk_sizes(self, dom: Any) -> tuple[int, ...]:
        root = ET.fromstring(dom.XMLDesc(0))
        sizes = []
        for disk in root.findall("./devices/disk[@device='disk']/target"):
            sizes.append(dom.blockInfo(disk.get('dev'))[0])
        return tuple(sizes)

    def _tune(self, migration: base.Migration) -> None:
        """Apply the downtime steps until the migration ends."""
        opts, state = self.options, migration.backend
        for at, value in downtime.steps(
                opts.live_migration_downtime,
                opts.live_migration_downtime_steps,
                opts.live_migration_downtime_delay, migration.data_gib,
                migration.spec.completion_timeout):
            wait = migration.started_at + at - time.monotonic()
            if wait > 0 and state.cancel_tuning.wait(wait):
                return
            if state.finished.is_set():
                return
            try:
                state.domain.migrateSetMaxDowntime(value, 0)
            except self._libvirt.libvirtError as exc:
                LOG.debug('downtime %d ms not set: %s', value, exc)

    # -- where the guest is ------------------------------------------------

    def _locate(self, migration: base.Migration) -> base.GuestLocation:
        """Ask both daemons for the domain's state (virDomainGetState).

        During pre-copy the destination holds a paused incoming domain;
        after a switch to post-copy the source is paused (reason post-copy)
        and the destination runs; after a post-copy failure the source is
        paused with reason post-copy failed.  Which side *has* the guest is
        read from those states, never from the migration's phase.
        """
        self.connect()
        key = migration.reference or migration.spec.instance
        src, src_err = self._state_on(self._conn, key)
        dst_conn, dst_err = self._dest_conn(migration.spec)
        dst, dst_err2 = ((None, dst_err) if dst_conn is None else
                         self._state_on(dst_conn, key))
        return jobstats.location_of(src, dst, src_err, dst_err or dst_err2)

    def _state_on(self, conn: Any, key: str
                  ) -> tuple[tuple[int, int] | None, str]:
        """(state, reason) of the domain on ``conn``; None if it has none."""
        try:
            dom = self._lookup(conn, key)
            st = dom.state()
            return (st[0], st[1]), ''
        except self._libvirt.libvirtError as exc:
            if exc.get_error_code() == ERR_NO_DOMAIN:
                return None, ''
            return None, str(exc)

    def _dest_conn(self, spec: base.MigrationSpec) -> tuple[Any, str]:
        uri = self._dest_uri(spec)
        with self._lock:
            conn = self._dest_conns.get(uri)
            if conn is not None:
                try:
                    if conn.isAlive():
                        return conn, ''
                except self._libvirt.libvirtError:
                    pass
                self._dest_conns.pop(uri, None)
        try:
            conn = self._libvirt.open(uri)
        except self._libvirt.libvirtError as exc:
            return None, f'destination unreachable: {exc}'
        with self._lock:
            self._dest_conns[uri] = conn
        return conn, ''

    def _reattach(self, ref: base.MigrationRef) -> base.Migration:
        """Find the domain by UUID on the source and follow its job.

        The migrate call belonged to the process that started it; the
        end is read from the job stats and the domain's state.
        """
        self.connect()
        try:
            dom = self._conn.lookupByUUIDString(ref.reference)
            stats = dom.jobStats()
        except self._libvirt.libvirtError as exc:
            if exc.get_error_code() == ERR_NO_DOMAIN:
                raise exception.MigrationGone(
                    driver=self.name, reference=ref.reference,
                    detail='no such domain on the source') from exc
            raise exception.DriverError(
                driver=self.name, reason=f'reattach: {exc}') from exc
        if stats.get('type', jobstats.JOB_NONE) == jobstats.JOB_NONE:
            raise exception.MigrationGone(
                driver=self.name, reference=ref.reference,
                detail='the domain has no migration job')
        flags = self._libvirt.VIR_MIGRATE_POSTCOPY if ref.spec.postcopy else 0
        state = _State(dom, flags)
        # the job runs: a later reading without one means it ended
        state.last = jobstats.progress_of(stats, self._domain_state(state))
        state.last_phase = state.last.phase
        return base.Migration(spec=ref.spec, data_gib=ref.data_gib,
                              reference=ref.reference, backend=state)

    def _domain_state(self, state: _State) -> tuple[int, int] | None:
        try:
            st = state.domain.state()
            return (st[0], st[1])
        except self._libvirt.libvirtError:
            return None

    def _progress(self, migration: base.Migration) -> base.Progress:
        """One reading; never waits (the monitor's timers poll again).

        While the migrate call still runs, a job that looks gone or done
        gives the last reading: the call's verdict, read at the next poll,
        says how it ended.
        """
        state: _State = migration.backend
        final = self._final(state)
        if final is not None:
            return final
        try:
            stats = state.domain.jobStats()
        except self._libvirt.libvirtError as exc:
            final = self._final(state)
            if final is not None:
                return final
            gone = exc.get_error_code() in (ERR_NO_DOMAIN,
                                            ERR_OPERATION_INVALID)
            if gone and state.call is not None:
                return state.last
            if gone:
                # nova counts these as completed: the domain left the source
                return self._ended(state, base.Phase.COMPLETED, str(exc))
            raise exception.DriverError(driver=self.name,
                                        reason=f'jobStats: {exc}') from exc
        progress = jobstats.progress_of(stats, self._domain_state(state),
                                        state.paused_by_us)
        if progress.phase.terminal or (
                progress.phase is base.Phase.PREPARING and
                state.last_phase is not base.Phase.PREPARING):
            # Job gone (or done) before the call returned: its verdict wins.
            final = self._final(state)
            if final is not None:
                return final
            if state.call is not None:
                return state.last
            if progress.phase.terminal:
                return self._ended(state, progress.phase, progress.message)
            return self._vanished(migration, state)
        state.last_phase = progress.phase
        state.last = progress
        return progress

    def _vanished(self, migration: base.Migration,
                  state: _State) -> base.Progress:
        """A re-attached migration's job is gone (no migrate call here to
        give the verdict): how it ended, as libvirt and both daemons say.

        libvirt's completed-job statistics
        (``VIR_DOMAIN_JOB_STATS_COMPLETED``) give the end where it kept
        them; otherwise the domains' states: running on the destination is
        completed, still on the source is failed (an abort we made that
        libvirt accepted turns it into cancelled,
        :meth:`LiveMigrationDriver.get_progress`); where neither says, the
        last reading is kept and asked again.
        """
        lv = self._libvirt
        try:
            done = state.domain.jobStats(lv.VIR_DOMAIN_JOB_STATS_COMPLETED)
        except lv.libvirtError:
            done = {}
        phase = jobstats.phase_of(done, None, False) if done.get(
            'type') in (jobstats.JOB_COMPLETED, jobstats.JOB_FAILED,
                        jobstats.JOB_CANCELLED) else None
        if phase is not None:
            return self._ended(state, phase, str(done.get('errmsg') or ''))
        where = self._locate(migration)
        if where.host is base.GuestHost.DESTINATION:
            return self._ended(state, base.Phase.COMPLETED, '')
        if where.host is base.GuestHost.SOURCE:
            return self._ended(state, base.Phase.FAILED,
                               'the migration job ended without completing '
                               '(no job on the source, the guest is still '
                               'there)')
        return state.last

    def _final(self, state: _State, wait: float = 0.0) -> base.Progress | None:
        """The verdict of the migrate call, once it returned (or raised)."""
        if state.call is None:
            return state.ended
        return state.call.progress() if state.call.verdict(wait) else None

    @staticmethod
    def _ended(state: _State, phase: base.Phase,
               message: str) -> base.Progress:
        state.ended = base.Progress(phase, message=message)
        return state.ended

    def wait(self, migration: base.Migration, timeout: float | None = None,
             interval: float = 0.2) -> base.Progress:
        state: _State = migration.backend
        if state.call is not None and state.call.verdict(timeout or 0.0):
            return self.get_progress(migration)
        return super().wait(migration, timeout, interval)

    def _sending(self, state: _State) -> bool:
        """Whether QEMU sends data (control calls before act late or not)."""
        try:
            return bool(state.domain.jobStats().get('data_total'))
        except self._libvirt.libvirtError:
            return True   # no job to wait for: let the call decide

    def _control(self, migration: base.Migration, operation: caps.Operation,
                 call: Any) -> None:
        state: _State = migration.backend
        final = self._final(state)
        if final is not None:
            raise exception.OperationRefused(
                driver=self.name, operation=operation.value,
                migration=migration.id,
                reason=f'the migration already ended ({final.phase.value})')
        if not self._sending(state):
            # Acting in the prepare phase is lost or late (seen with
            # abortJob): refuse for now, the monitor retries shortly.
            raise exception.OperationRefused(
                driver=self.name, operation=operation.value,
                migration=migration.id,
                reason='the migration is still preparing (QEMU sends no '
                       'data yet); retry')
        try:
            call()
        except self._libvirt.libvirtError as exc:
            raise exception.OperationRefused(
                driver=self.name, operation=operation.value,
                migration=migration.id, reason=str(exc)) from exc

    def _abort(self, migration: base.Migration) -> None:
        self._control(migration, caps.Operation.ABORT,
                      migration.backend.domain.abortJob)

    def _force_complete(self, migration: base.Migration,
                        mode: caps.ForceCompleteMode) -> None:
        state: _State = migration.backend
        if self.get_progress(migration).phase is base.Phase.POSTCOPY:
            # QEMU accepts a second switch silently, and a pause would
            # stop the source side of a post-copy: refuse both here.
            raise exception.OperationRefused(
                driver=self.name, operation=mode.operation.value,
                migration=migration.id,
                reason='the migration is already in post-copy')
        if mode is caps.ForceCompleteMode.POSTCOPY:
            if not state.flags & self._libvirt.VIR_MIGRATE_POSTCOPY:
                raise exception.OperationRefused(
                    driver=self.name, operation=mode.operation.value,
                    migration=migration.id,
                    reason='the migration was not started with '
                           'VIR_MIGRATE_POSTCOPY')
            self._control(migration, mode.operation,
                          lambda: state.domain.migrateStartPostCopy(0))
            return

        def pause() -> None:
            st = self._domain_state(state)
            if st is not None and st[0] == jobstats.STATE_PAUSED:
                # Paused by its owner (or the migration): resuming it after
                # a failure would not be ours to do.
                raise exception.OperationRefused(
                    driver=self.name, operation=mode.operation.value,
                    migration=migration.id,
                    reason='the guest is already paused')
            state.domain.suspend()
            state.paused_by_us = True
        self._control(migration, mode.operation, pause)

    def _resume_source(self, migration: base.Migration) -> None:
        state: _State = migration.backend
        if not state.paused_by_us:
            return
        st = self._domain_state(state)
        if st is None:
            raise exception.DriverError(
                driver=self.name, reason=f'resume on the source: the state '
                f'of {migration.spec.instance} there is unknown')
        if st[0] != jobstats.STATE_PAUSED:
            state.paused_by_us = False     # libvirt resumed it already
            return
        try:
            state.domain.resume()
            state.paused_by_us = False
        except self._libvirt.libvirtError as exc:
            raise exception.DriverError(
                driver=self.name,
                reason=f'resume on the source: {exc}') from exc
