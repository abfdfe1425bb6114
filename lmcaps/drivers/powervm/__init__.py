"""The PowerVM driver: Live Partition Mobility through pypowervm.

NovaLink or HMC REST API, pypowervm 1.1.27 (``Session``, ``Adapter``,
``pypowervm.tasks.migration``), imported only in :meth:`connect`.  Details,
decisions and pypowervm's Python hazards: doc/drivers/powervm.rst.

* start: ``migrate_lpar`` (Migrate job) blocks until the job ends, so it runs
  under :class:`~lmcaps.drivers.base.BlockingCall`; the start returns once
  the server created the job.  Reference: the JobID; ``extra``: the LPAR
  UUID and the source managed system's UUID.
* progress and location are asked of the REST API: the job's ``Status``,
  the LPAR's ``MigrationState``, ``ProgressPartitionData*``,
  ``AssociatedManagedSystem`` and ``PartitionState``.
* abort: ``migrate_abort`` (a separate MigrateAbort job); :meth:`_abort`
  returns once the server accepted that job, never waits for its end.
* recover: ``migrate_recover(force=True)`` when the LPAR is left with a
  MigrationState other than Not_Migrating.
* force-complete: LPM has neither post-copy nor pause; declared missing.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from typing import Any

from oslo_config import cfg

from lmcaps import capabilities as caps
from lmcaps import exception
from lmcaps.drivers import base
from lmcaps.drivers.powervm import opts
from lmcaps.drivers.powervm import states

LOG = logging.getLogger(__name__)
_UUID = re.compile(r'^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$')
MIGRATE_KWARGS = opts.MIGRATE_KWARGS


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
        return list(opts.OPTS)

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
        self._await_job(watch, call)
        what = f'Migrate {lpar.name} to {spec.destination.host}'
        if watch.job_id is None:
            verdict = call.verdict()
            reason = (verdict.message if verdict is not None else
                      f'the Migrate job was not created within '
                      f'{self.call_timeout:g} s')
            raise exception.DriverError(
                driver=self.name, reason=f'{what}: {states.first_line(reason)}')
        if watch.status in states.FINAL_STATUSES and \
                watch.status != states.COMPLETED_OK:
            verdict = call.verdict(wait=self.call_timeout)
            reason = verdict.message if verdict else watch.status
            raise exception.DriverError(
                driver=self.name, reason=f'{what}: refused: '
                f'{states.first_line(reason)}')
        return base.Migration(
            spec=spec, data_gib=base.data_gib(
                int(lpar.mem_config.current or 0) * 1024 ** 2),
            reference=watch.job_id,
            backend=_State(lpar.uuid, call, watch),
            extra={'lpar_uuid': lpar.uuid,
                   'source_system': lpar.assoc_sys_uuid})

    def _await_job(self, watch: Any, call: base.BlockingCall) -> None:
        """Until the job PUT was answered or the call ended (bounded)."""
        deadline = time.monotonic() + self.call_timeout
        while not watch.created.wait(0.02):
            if call.verdict() is not None or time.monotonic() > deadline:
                return

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
        verdict = self._verdict(state)
        if verdict is not None:
            return states.from_verdict(verdict)
        job = self._job(migration.reference)
        if job is None:
            if state.call is not None:   # pypowervm deletes it when it ends
                verdict = self._verdict(state, wait=self.call_timeout)
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

    def _verdict(self, state: _State, wait: float = 0.0
                 ) -> base.BlockingCall.Verdict | None:
        """migrate_lpar's verdict if it tells how the job ended, else None.

        Only a return (COMPLETED_OK) and JobRequestFailed (another final
        Status) say how the job ended.  Anything else (a connection error
        while polling, JobRequestTimedOut: pypowervm's cancel is still in
        flight) leaves the job to be read from the REST API from then on.
        """
        if state.call is None:
            return None
        verdict = state.call.verdict(wait)
        if verdict is None:
            return None
        from pypowervm import exceptions as pvmex
        if verdict.error is None or isinstance(verdict.error,
                                               pvmex.JobRequestFailed) and \
                not isinstance(verdict.error, pvmex.JobRequestTimedOut):
            return verdict
        LOG.warning('powervm: migrate_lpar for job %s ended with %s; '
                    'following the job on the REST API',
                    state.watch.job_id if state.watch else '?',
                    states.one_line(verdict.error))
        state.call = None
        return None

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
        if isinstance(migration.backend, _State):
            lpar = self._lpar(migration.backend.lpar_uuid)
            source = migration.extra.get('source_system')
        else:   # not started (a refused start): where it is, is the source
            lpar = self._lpar(migration.spec.instance)
            source = None if lpar is None else lpar.assoc_sys_uuid
        return states.locate(lpar, self.options.host, source,
                             migration.spec.destination.host,
                             self._system_name)

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
        self._await_job(watch, call)
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
