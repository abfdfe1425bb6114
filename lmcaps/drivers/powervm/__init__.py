"""The PowerVM driver: Live Partition Mobility through pypowervm.

Talks to a NovaLink or HMC REST API with pypowervm 1.1.27 (``Session``,
``Adapter``, ``pypowervm.tasks.migration``).  pypowervm is imported only in
:meth:`PowerVMDriver.connect`.

* **start**: ``migrate_lpar(lpar, <target managed system name>)`` runs the
  ``Migrate`` job (GET ``LogicalPartition/{uuid}/do/Migrate`` template, PUT
  it, poll ``jobs/{id}`` every 1 s, DELETE) and blocks until it ends, so it
  runs under :class:`~lmcaps.drivers.base.BlockingCall`; the start returns
  once the REST server has accepted the job.  ``Migration.reference`` is
  the JobID; ``Migration.extra`` holds the LPAR UUID and the UUID of the
  source managed system.  pypowervm cancels the job itself (``POST
  jobs/{id}/cancel``) when ``[lmcaps_powervm] job_timeout`` runs out.
* **progress**: the job's ``Status`` (NOT_STARTED → preparing, RUNNING →
  pre-copy, or cancelling after our abort; COMPLETED_OK → completed; every
  other final status, COMPLETED_WITH_WARNINGS included as pypowervm counts
  it, → failed) and the LPAR's ``MigrationState`` and
  ``ProgressPartitionDataTotal``/``Remaining`` (the completed fraction).
* **locate**: GET the LPAR: ``AssociatedManagedSystem`` (the source system,
  or the system named as the destination) and ``PartitionState``.  An LPAR
  the console no longer shows (a NovaLink source after the partition left)
  is reported nowhere, with that detail: the source console cannot see the
  destination.
* **abort**: ``migrate_abort(lpar)``, a separate ``MigrateAbort`` job on the
  partition (not a cancel of the Migrate job).  :meth:`_abort` returns once
  the REST server accepted that job (its JobResponse came back NOT_STARTED
  or RUNNING) and never waits for it to end; a MigrateAbort job that comes
  back failed at once is an OperationRefused with its message.  pypowervm
  goes on polling and deleting the abort job in its thread; its failure, if
  it fails later, shows in the progress message.
* **recover**: after a failed migration that left the LPAR with
  ``MigrationState`` other than ``Not_Migrating``, ``migrate_recover(lpar,
  force=True)`` (as nova-powervm's rollback did).
* **force-complete**: LPM has neither post-copy nor a pause of the
  partition: both modes are missing.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from typing import Any

from oslo_config import cfg

from lmcaps import capabilities as caps
from lmcaps import exception
from lmcaps.drivers import base
from lmcaps.drivers.powervm import states

LOG = logging.getLogger(__name__)
_UUID = re.compile(r'^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$')
#: migrate_lpar keyword arguments a request may pass (spec.options or
#: Destination.data).
MIGRATE_KWARGS = ('tgt_mgmt_svr', 'tgt_mgmt_usr', 'virtual_fc_mappings',
                  'virtual_scsi_mappings', 'dest_msp_name', 'source_msp_name',
                  'spp_id', 'sdn_override', 'vlan_check_override',
                  'vlan_mappings', 'check_affinity_score')

OPTS = [
    cfg.HostAddressOpt('host', default='localhost',
                       help='NovaLink or HMC REST API server of the source '
                            'managed system.'),
    cfg.PortOpt('port', help='Its TCP port; default 12443 for https, '
                             '12080 for http.'),
    cfg.StrOpt('protocol', default='https', choices=('https', 'http'),
               help='https, or http (only for a REST server on this '
                    'host).'),
    cfg.StrOpt('username', default='',
               help='REST API user (an HMC/NovaLink user ID).'),
    cfg.StrOpt('password', default='', secret=True,
               help='Password of that user.'),
    cfg.BoolOpt('tls_verify', default=True,
                help='Verify the REST server certificate (against ca_file, '
                     'or the system CA bundle). False is insecure and only '
                     'for tests. Related: ca_file.'),
    cfg.StrOpt('ca_file',
               help='PEM CA bundle that signs the REST server certificate; '
                    'default: the system CA bundle.'),
    cfg.IntOpt('job_timeout', default=7200, min=1,
               help='Seconds a Migrate job may run before pypowervm cancels '
                    'it (POST jobs/{id}/cancel); also the limit of a '
                    'MigrateRecover job. pypowervm default: 7200.'),
    cfg.FloatOpt('http_timeout', default=60.0, min=1.0,
                 help='Seconds one REST request may take.'),
]


class _State:
    """Driver-private state of one migration (``Migration.backend``)."""

    def __init__(self, lpar_uuid: str, call: base.BlockingCall | None,
                 watch: Any) -> None:
        self.lpar_uuid = lpar_uuid
        self.call = call
        self.watch = watch
        self.abort_call: base.BlockingCall | None = None
        self.deleted = False


class PowerVMDriver(base.LiveMigrationDriver):
    """Live Partition Mobility through pypowervm (NovaLink / HMC REST)."""

    name = 'powervm'

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        super().__init__(conf)
        self._session: Any = None
        self._lock = threading.Lock()

    @classmethod
    def list_opts(cls) -> list[cfg.Opt]:
        return list(OPTS)

    @classmethod
    def declare(cls) -> caps.Declaration:
        why = ('Live Partition Mobility copies memory while the partition '
               'runs on the source and has no {}: pypowervm has no '
               'force-complete')
        return caps.Declaration('powervm', 'PowerVM (NovaLink/HMC, LPM)', {
            caps.Operation.ABORT: caps.complete(
                'MigrateAbort job on the partition (pypowervm '
                'migrate_abort); accepted once the REST server created the '
                'job; OperationRefused when the job fails at once (the '
                'migration ended or cannot be stopped)',
                requires='pypowervm>=1.1.27'),
            caps.Operation.FORCE_COMPLETE_POSTCOPY: caps.missing(
                why.format('post-copy phase')),
            caps.Operation.FORCE_COMPLETE_PAUSE: caps.missing(
                why.format('pause of a migrating partition (suspend is not '
                           'allowed during LPM)')),
            caps.Operation.PER_INSTANCE_TIMEOUT: caps.complete(
                'enforced by the lmcaps monitor with the abort action; the '
                'Migrate job runs with [lmcaps_powervm] job_timeout'),
        })

    # -- connection -------------------------------------------------------

    def _verify(self) -> bool | str:
        if self.options.protocol == 'http' or not self.options.tls_verify:
            return False
        return self.options.ca_file or True

    def connect(self) -> None:
        with self._lock:
            if self._session is not None:
                return
            try:
                from lmcaps.drivers.powervm import rest
            except ImportError as exc:
                raise exception.DriverLoadFailed(
                    name=self.name, reason=f'pypowervm is not installed '
                    f'(pip install lmcaps[powervm]): {exc}') from exc
            self._rest = rest
            opts = self.options
            self._warn_env_bundle()
            try:
                self._session = rest.session(
                    opts.host, opts.port, opts.protocol, opts.username,
                    opts.password, self._verify(), opts.http_timeout)
            except Exception as exc:
                raise exception.DriverError(
                    driver=self.name, reason=self._logon_error(exc)) from None

    def _warn_env_bundle(self) -> None:
        """requests prefers REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE to a Session's
        ``verify`` (pypowervm sets only ``Session.verify``): say so."""
        verify = self._verify()
        for name in ('REQUESTS_CA_BUNDLE', 'CURL_CA_BUNDLE'):
            bundle = os.environ.get(name)
            if bundle and self.options.protocol == 'https' and \
                    verify is not True:
                LOG.warning('powervm: %s=%s is set: requests verifies the '
                            'REST server against it instead of '
                            '[lmcaps_powervm] %s', name, bundle,
                            'ca_file' if verify else 'tls_verify=False')
                return

    def _logon_error(self, exc: BaseException) -> str:
        opts = self.options
        where = f'{opts.protocol}://{opts.host}:{opts.port or "default"}'
        status = getattr(getattr(exc, 'response', None), 'status', None)
        if status == 401:
            return (f'log-on to {where} as {opts.username!r} refused (HTTP '
                    f'401): check [lmcaps_powervm] username and password')
        return f'cannot log on to {where}: {states.one_line(exc)}'

    def close(self) -> None:
        with self._lock:
            sess, self._session = self._session, None
        if sess is not None:
            try:
                sess._logoff()   # pypowervm logs off only when collected
            except Exception:
                LOG.debug('powervm: log-off failed', exc_info=True)

    def _adapter(self, watch: Any = None) -> Any:
        self.connect()
        return self._rest.adapter_for(self._session, watch)

    # -- REST reads ---------------------------------------------------------

    def _lpar(self, key: str, adapter: Any = None) -> Any:
        """The LPAR wrapper by UUID or PartitionName; None if absent."""
        from pypowervm import exceptions as pvmex
        from pypowervm.wrappers import logical_partition as wlpar
        adapter = adapter or self._adapter()
        try:
            if _UUID.match(key):
                return wlpar.LPAR.wrap(adapter.read('LogicalPartition', key))
            found = [lp for lp in wlpar.LPAR.wrap(adapter.read(
                'LogicalPartition')) if lp.name == key]
        except pvmex.HttpNotFound:
            return None
        except pvmex.Error as exc:
            raise self._error('reading LogicalPartition', exc) from None
        return found[0] if found else None

    def _job(self, job_id: str) -> Any:
        """The Job wrapper of ``jobs/{job_id}``; None once deleted."""
        from pypowervm import exceptions as pvmex
        from pypowervm.wrappers import job as wjob
        try:
            return wjob.Job.wrap(self._adapter().read_job(job_id))
        except pvmex.HttpNotFound:
            return None
        except pvmex.Error as exc:
            raise self._error(f'reading job {job_id}', exc) from None

    def _system_name(self, sys_uuid: str) -> str | None:
        from pypowervm import exceptions as pvmex
        from pypowervm.wrappers import managed_system as wms
        try:
            return wms.System.wrap(self._adapter().read(
                'ManagedSystem', sys_uuid)).system_name
        except pvmex.Error:
            return None

    def _error(self, what: str, exc: BaseException) -> exception.DriverError:
        return exception.DriverError(
            driver=self.name, reason=f'{what}: {states.one_line(exc)}')

    # -- starting ---------------------------------------------------------

    def guest_data_gib(self, spec: base.MigrationSpec) -> float:
        try:
            lpar = self._lpar(spec.instance)
            memory_mb = lpar.mem_config.current if lpar is not None else 0
        except Exception:
            return 2.0
        return base.data_gib(int(memory_mb or 0) * 1024 ** 2)

    def _start(self, spec: base.MigrationSpec) -> base.Migration:
        from pypowervm.tasks import migration as pvm_migration
        lpar = self._lpar(spec.instance)
        if lpar is None:
            raise exception.DriverError(
                driver=self.name, reason=f'no LogicalPartition '
                f'{spec.instance!r} on {self.options.host}')
        if lpar.migration_state != states.NOT_MIGRATING:
            raise exception.DriverError(
                driver=self.name, reason=f'LPAR {lpar.name} is in migration '
                f'state {lpar.migration_state}; recover it first')
        kwargs = {k: v for src in (spec.destination.data, spec.options)
                  for k, v in src.items() if k in MIGRATE_KWARGS}
        watch = self._rest.JobWatch('Migrate')
        lpar = self._lpar(lpar.uuid, self._adapter(watch))
        call = base.BlockingCall(
            lambda: pvm_migration.migrate_lpar(
                lpar, spec.destination.host,
                timeout=self.options.job_timeout, **kwargs),
            name=f'lmcaps-powervm-{lpar.name}').start()
        watch.created.wait(self.call_timeout)
        verdict = call.verdict()
        if watch.job_id is None:
            reason = (verdict.message if verdict is not None else
                      f'the Migrate job was not created within '
                      f'{self.call_timeout:g} s')
            raise exception.DriverError(
                driver=self.name, reason=f'Migrate {lpar.name} to '
                f'{spec.destination.host}: {states.first_line(reason)}')
        return base.Migration(
            spec=spec, data_gib=base.data_gib(
                int(lpar.mem_config.current or 0) * 1024 ** 2),
            reference=watch.job_id,
            backend=_State(lpar.uuid, call, watch),
            extra={'lpar_uuid': lpar.uuid,
                   'source_system': lpar.assoc_sys_uuid})

    def _reattach(self, ref: base.MigrationRef) -> base.Migration:
        lpar_uuid = str(ref.extra.get('lpar_uuid') or '')
        if not lpar_uuid:
            raise exception.DriverError(
                driver=self.name, reason='the reference has no lpar_uuid')
        if self._job(ref.reference) is None:
            raise exception.MigrationGone(
                driver=self.name, reference=ref.reference,
                detail='no such job on the REST server')
        return base.Migration(spec=ref.spec, data_gib=ref.data_gib,
                              reference=ref.reference,
                              backend=_State(lpar_uuid, None, None),
                              extra=dict(ref.extra))

    # -- observing --------------------------------------------------------

    def _state(self, migration: base.Migration) -> _State:
        state = migration.backend
        if not isinstance(state, _State):
            raise exception.MigrationNotFound(migration=migration.id,
                                              driver=self.name)
        return state

    def _progress(self, migration: base.Migration) -> base.Progress:
        state = self._state(migration)
        if state.call is not None and state.call.verdict() is not None:
            return states.from_verdict(state.call.verdict())
        job = self._job(migration.reference)
        if job is None:
            if state.call is not None:   # pypowervm deletes it when it ends
                verdict = state.call.verdict(wait=self.call_timeout)
                if verdict is not None:
                    return states.from_verdict(verdict)
            return self._job_gone(migration)
        status = job.job_status
        if status in states.FINAL_STATUSES:
            if state.call is None and not state.deleted:
                self._delete_job(migration.reference)
                state.deleted = True
            return states.from_job(status, job.get_job_message(''))
        lpar = self._lpar(state.lpar_uuid)
        return states.running(status, lpar, self._abort_note(migration))

    def _abort_note(self, migration: base.Migration) -> str | None:
        """None without an abort; '' while it stands; the error once failed."""
        if migration.abort_accepted_at is None:
            return None
        call = self._state(migration).abort_call
        verdict = call.verdict() if call is not None else None
        if verdict is not None and verdict.error is not None:
            return states.first_line(verdict.message)
        return ''

    def _job_gone(self, migration: base.Migration) -> base.Progress:
        """The job was deleted by someone else: judge by the LPAR."""
        lpar = self._lpar(self._state(migration).lpar_uuid)
        source = migration.extra.get('source_system')
        if lpar is not None and lpar.assoc_sys_uuid != source:
            return base.Progress(base.Phase.COMPLETED, 1.0, 'job deleted',
                                 message='the partition is on another system')
        return base.Progress(base.Phase.FAILED, raw_state='job deleted',
                             message='the job was deleted before it '
                                     'completed; the partition is on the '
                                     'source')

    def _delete_job(self, job_id: str) -> None:
        from pypowervm import exceptions as pvmex
        try:
            self._adapter().delete('jobs', job_id)
        except pvmex.Error:
            LOG.debug('powervm: deleting job %s failed', job_id,
                      exc_info=True)

    def _locate(self, migration: base.Migration) -> base.GuestLocation:
        lpar = self._lpar(self._state(migration).lpar_uuid)
        if lpar is None:
            return base.GuestLocation(
                base.GuestHost.NOWHERE, base.RunState.UNKNOWN,
                f'LPAR not known to {self.options.host}')
        run = states.run_state(lpar.state)
        detail = f'{lpar.state}, {lpar.migration_state}'
        if lpar.assoc_sys_uuid == migration.extra.get('source_system'):
            return base.GuestLocation(base.GuestHost.SOURCE, run, detail)
        name = self._system_name(lpar.assoc_sys_uuid)
        if name is not None and name == migration.spec.destination.host:
            return base.GuestLocation(base.GuestHost.DESTINATION, run,
                                      f'{detail} on {name}')
        return base.GuestLocation(base.GuestHost.UNKNOWN, run,
                                  f'{detail} on system {name or "?"} '
                                  f'({lpar.assoc_sys_uuid})')

    # -- acting -----------------------------------------------------------

    def _abort(self, migration: base.Migration) -> None:
        from pypowervm.tasks import migration as pvm_migration
        state = self._state(migration)
        watch = self._rest.JobWatch('MigrateAbort')
        lpar = self._lpar(state.lpar_uuid, self._adapter(watch))
        if lpar is None:
            raise exception.OperationRefused(
                driver=self.name, operation='abort', migration=migration.id,
                reason='the LPAR is gone')
        call = base.BlockingCall(
            lambda: pvm_migration.migrate_abort(
                lpar, timeout=self.options.job_timeout),
            name=f'lmcaps-powervm-abort-{lpar.name}').start()
        while not watch.created.wait(0.05):
            if call.verdict() is not None:
                break
        if watch.status in (None, *self._rest.FINAL):
            verdict = call.verdict(wait=self.call_timeout)
            if verdict is not None and verdict.error is not None:
                raise exception.OperationRefused(
                    driver=self.name, operation='abort',
                    migration=migration.id,
                    reason=states.first_line(verdict.message))
        state.abort_call = call
        LOG.info('powervm: MigrateAbort job %s accepted for LPAR %s',
                 watch.job_id, lpar.name)

    def recover(self, migration: base.Migration) -> str | None:
        """MigrateRecover (Force=true) if the LPAR is left migrating.

        :returns: what was done, or None when the LPAR needs nothing.
        :raises: DriverError if the MigrateRecover job failed.
        """
        from pypowervm.tasks import migration as pvm_migration
        lpar = self._lpar(self._state(migration).lpar_uuid)
        if lpar is None or lpar.migration_state == states.NOT_MIGRATING:
            return None
        before = lpar.migration_state
        try:
            pvm_migration.migrate_recover(
                lpar, force=True, timeout=self.options.job_timeout)
        except Exception as exc:
            raise self._error(f'MigrateRecover of {lpar.name}', exc) from None
        after = self._lpar(lpar.uuid)
        now = 'gone' if after is None else (f'{after.migration_state}, '
                                            f'{after.state}')
        return (f'MigrateRecover (Force=true) of LPAR {lpar.name} '
                f'(was {before}): now {now}')
