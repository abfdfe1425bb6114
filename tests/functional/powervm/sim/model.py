"""The simulated NovaLink's objects: managed systems, LPARs and LPM jobs.

Every job runs on the shared migration-task engine
(:class:`lmcaps.conformance.taskmodel.MigrationTask`); this module only
translates its states into the PowerVM REST vocabulary:

=====================  =============================  ====================
MigrationTask          Migrate job ``Status``          LPAR MigrationState
=====================  =============================  ====================
QUEUED                 NOT_STARTED                     Migration_Starting
RUNNING / CANCELLING   RUNNING                         Migration_In_Progress
SUCCESS                COMPLETED_OK                    Not_Migrating (on the
                                                       target system)
ERROR                  COMPLETED_WITH_ERROR            Migration_Failed
CANCELLED              COMPLETED_WITH_ERROR            Not_Migrating
=====================  =============================  ====================

Job statuses are pypowervm's ``JobStatus`` (wrappers/job.py); a job's
failure text is its ``ResponseException/Message``.  ``Not_Migrating``,
``Migration_Starting`` and ``Migration_Failed`` are named by pypowervm's
LPAR wrapper; ``Migration_In_Progress`` follows the same enumeration
(``PartitionMigrationStateEnum``, not listed in full in any public source).

* ``MigrateAbort`` (HMC ``migrlpar -o s``) stops the LPAR's running
  Migrate job: it is a job of its own whose status follows the Migrate
  task it cancels: RUNNING while the cancel is in flight, COMPLETED_OK once
  the migration stopped (the LPAR runs on the source, Not_Migrating),
  COMPLETED_WITH_ERROR if the migration ended otherwise first or the LPAR
  was not migrating.
* ``POST jobs/{id}/cancel`` (what pypowervm does on its own timeout)
  cancels the same task.
* ``MigrateRecover`` (``migrlpar -o r``) repairs an LPAR left
  Migration_Failed: a short task whose success resets it to Not_Migrating,
  ``running``, on the source.  On an LPAR that needs no recovery it fails.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import threading
import time
import uuid as uuid_mod
import xml.etree.ElementTree as ET

from lmcaps.conformance import taskmodel

NOT_MIGRATING = 'Not_Migrating'
STARTING = 'Migration_Starting'
IN_PROGRESS = 'Migration_In_Progress'
FAILED = 'Migration_Failed'

NOT_STARTED = 'NOT_STARTED'
RUNNING = 'RUNNING'
COMPLETED_OK = 'COMPLETED_OK'
COMPLETED_WITH_ERROR = 'COMPLETED_WITH_ERROR'

_JOB_IDS = itertools.count(int(time.time() * 1000))
TaskState = taskmodel.TaskState


class RestError(Exception):
    """An HTTP error the REST API answers with."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


@dataclasses.dataclass
class Lpar:
    """A partition and how its next migration behaves (set by the tests)."""

    uuid: str
    name: str
    system: str
    source: str
    state: str = 'running'
    migration_state: str = NOT_MIGRATING
    memory_mb: int = 4096
    duration: float = 2.0
    cancel_delay: float = 0.0
    cancellable_until: float = 1.0
    complete_on_cancel: bool = False
    migrate_job: Job | None = None


@dataclasses.dataclass
class Job:
    """One job: the request that was PUT and the task that carries it out."""

    job_id: str
    operation: str
    lpar: Lpar
    request: ET.Element
    request_path: str
    parameters: dict[str, str]
    started: float = dataclasses.field(default_factory=time.time)
    task: taskmodel.MigrationTask | None = None
    aborts: Job | None = None        # a MigrateAbort: the Migrate job
    fixed: tuple[str, str] | None = None   # (status, message) decided
    completed: float | None = None
    deleted: bool = False


class Novalink:
    """The management console's state, shared by all request threads."""

    def __init__(self, username: str, password: str) -> None:
        self.username, self.password = username, password
        self.lock = threading.RLock()
        self.tokens: set[str] = set()
        self.systems: dict[str, str] = {}      # uuid -> SystemName
        self.lpars: dict[str, Lpar] = {}
        self.jobs: dict[str, Job] = {}
        self.requests: list[tuple[str, str]] = []   # (method, path) log
        self.outage_until = 0.0    # monotonic: REST connections dropped

    # -- sessions ----------------------------------------------------------

    def logon(self, user: str, password: str) -> str:
        if user != self.username or password != self.password:
            raise RestError(401, 'Unauthorized', 'Logon failed: invalid '
                            'user ID or password')
        token = uuid_mod.uuid4().hex + uuid_mod.uuid4().hex
        with self.lock:
            self.tokens.add(token)
        return token

    def check(self, token: str | None) -> None:
        with self.lock:
            if not token or token not in self.tokens:
                raise RestError(401, 'Unauthorized', 'The session is not '
                                'valid: log on again')

    def logoff(self, token: str | None) -> None:
        with self.lock:
            self.tokens.discard(token or '')

    def expire_sessions(self) -> None:
        with self.lock:
            self.tokens.clear()

    # -- objects ------------------------------------------------------------

    def add_system(self, name: str) -> str:
        sys_uuid = str(uuid_mod.uuid4())
        with self.lock:
            self.systems[sys_uuid] = name
        return sys_uuid

    def system_by_name(self, name: str) -> str | None:
        with self.lock:
            return next((u for u, n in self.systems.items() if n == name),
                        None)

    def add_lpar(self, name: str, system: str, **behaviour) -> Lpar:
        lpar_uuid = str(uuid_mod.uuid4()).upper()
        lpar = Lpar(uuid=lpar_uuid, name=name, system=system, source=system,
                    **behaviour)
        with self.lock:
            self.lpars[lpar_uuid] = lpar
        return lpar

    def lpar(self, lpar_uuid: str) -> Lpar:
        with self.lock:
            lpar = self.lpars.get(lpar_uuid) or self.lpars.get(
                lpar_uuid.upper())
        if lpar is None:
            raise RestError(404, 'Not Found', f'LogicalPartition '
                            f'{lpar_uuid} does not exist')
        self.advance(lpar)
        return lpar

    def advance(self, lpar: Lpar) -> None:
        """Bring the LPAR's migration task to now (fires its callbacks)."""
        job = lpar.migrate_job
        if job is not None and job.task is not None:
            job.task.advance()

    def lpar_view(self, lpar: Lpar) -> dict:
        """MigrationState, PartitionState, system and data counts now."""
        self.advance(lpar)
        job = lpar.migrate_job
        total = lpar.memory_mb
        with self.lock:
            view = {'migration_state': lpar.migration_state,
                    'state': lpar.state, 'system': lpar.system,
                    'data_total': 0, 'data_remaining': 0}
        if job is not None and job.task is not None and \
                not job.task.state.finished:
            task = job.task
            started = task.state is not TaskState.QUEUED
            view.update(migration_state=IN_PROGRESS if started else STARTING,
                        state='migrating running', data_total=total,
                        data_remaining=int(total * (1 - task.progress)))
        return view

    # -- jobs ---------------------------------------------------------------

    def submit(self, lpar: Lpar, operation: str, request: ET.Element,
               request_path: str, parameters: dict[str, str]) -> Job:
        """Accept a JobRequest PUT to ``LogicalPartition/{uuid}/do/{op}``."""
        job = Job(job_id=str(next(_JOB_IDS)), operation=operation, lpar=lpar,
                  request=request, request_path=request_path,
                  parameters=parameters)
        handler = {'Migrate': self._migrate, 'MigrateValidate':
                   self._validate, 'MigrateAbort': self._abort,
                   'MigrateRecover': self._recover}.get(operation)
        if handler is None:
            raise RestError(400, 'Bad Request', f'unknown operation '
                            f'{operation}')
        with self.lock:
            handler(job)
            self.jobs[job.job_id] = job
        return job

    def _validate(self, job: Job) -> None:
        job.fixed = self._preflight(job) or (COMPLETED_OK, '')

    def _preflight(self, job: Job) -> tuple[str, str] | None:
        lpar, target = job.lpar, job.parameters.get(
            'TargetManagedSystemName', '')
        self.advance(lpar)
        if lpar.migrate_job is not None and lpar.migrate_job.task and \
                not lpar.migrate_job.task.state.finished:
            return (COMPLETED_WITH_ERROR, f'HSCLA2CF Partition {lpar.name} '
                    f'is already migrating')
        if lpar.migration_state != NOT_MIGRATING:
            return (COMPLETED_WITH_ERROR, f'Partition {lpar.name} is in '
                    f'migration state {lpar.migration_state}: recover it')
        dest = self.system_by_name(target)
        if dest is None:
            return (COMPLETED_WITH_ERROR, f'Managed system {target!r} not '
                    f'found')
        if dest == lpar.system:
            return (COMPLETED_WITH_ERROR, f'Partition {lpar.name} is already '
                    f'on {target}')
        return None

    def _migrate(self, job: Job) -> None:
        refused = self._preflight(job)
        if refused:
            job.fixed = refused
            job.completed = time.time()
            return
        lpar = job.lpar
        dest = self.system_by_name(job.parameters['TargetManagedSystemName'])

        def moved(_task: taskmodel.MigrationTask) -> None:
            with self.lock:
                lpar.system, lpar.state = dest, 'running'
                lpar.migration_state = NOT_MIGRATING

        def stopped(_task: taskmodel.MigrationTask) -> None:
            with self.lock:
                lpar.state, lpar.migration_state = 'running', NOT_MIGRATING

        def failed(_task: taskmodel.MigrationTask) -> None:
            with self.lock:
                lpar.state, lpar.migration_state = 'migrating running', FAILED

        job.task = taskmodel.MigrationTask(
            job.job_id, duration=lpar.duration, queued=0.05,
            cancel_delay=lpar.cancel_delay,
            cancellable_until=lpar.cancellable_until,
            on_success=moved, on_cancelled=stopped, on_error=failed)
        lpar.source = lpar.system
        lpar.migrate_job = job

    def cancel(self, job: Job) -> None:
        """Stop a job's migration (cancel or MigrateAbort).

        :raises: RestError 409 if it can no longer be stopped.
        """
        task = job.task
        if task is None:
            raise RestError(409, 'Conflict', f'Job {job.job_id} has ended')
        try:
            task.cancel()
        except (taskmodel.TaskFinished, taskmodel.TaskNotCancellable) as exc:
            raise RestError(409, 'Conflict', str(exc)) from exc
        if job.lpar.complete_on_cancel and not task.state.finished:
            task.set_duration(min(task.duration, 1.0))

    def _abort(self, job: Job) -> None:
        lpar = job.lpar
        self.advance(lpar)
        target = lpar.migrate_job
        if target is None or target.task is None or \
                target.task.state.finished:
            job.fixed = (COMPLETED_WITH_ERROR, f'HSCL3653 Partition '
                         f'{lpar.name} is not migrating')
            job.completed = time.time()
            return
        job.aborts = target
        try:
            self.cancel(target)
        except RestError as exc:
            job.fixed = (COMPLETED_WITH_ERROR, exc.message)
            job.completed = time.time()

    def _recover(self, job: Job) -> None:
        lpar = job.lpar
        self.advance(lpar)
        if lpar.migration_state == NOT_MIGRATING:
            job.fixed = (COMPLETED_WITH_ERROR, f'Partition {lpar.name} needs '
                         f'no migration recovery')
            job.completed = time.time()
            return

        def repaired(_task: taskmodel.MigrationTask) -> None:
            with self.lock:
                lpar.system = lpar.source
                lpar.state, lpar.migration_state = 'running', NOT_MIGRATING

        job.task = taskmodel.MigrationTask(job.job_id, duration=0.3,
                                           on_success=repaired)

    def job(self, job_id: str) -> Job:
        with self.lock:
            job = self.jobs.get(job_id)
        if job is None or job.deleted:
            raise RestError(404, 'Not Found', f'Job {job_id} does not exist')
        return job

    def status(self, job: Job) -> tuple[str, str]:
        """(Status, ResponseException message) of a job now."""
        if job.fixed is not None:
            return job.fixed
        if job.aborts is not None:
            state = job.aborts.task.state
            if state is TaskState.CANCELLED:
                return self._ended(job, COMPLETED_OK, '')
            if state.finished:
                return self._ended(job, COMPLETED_WITH_ERROR, (
                    'HSCLA319 the migration ended before it could be '
                    f'stopped ({state.value})'))
            return RUNNING, ''
        state = job.task.state
        if state is TaskState.QUEUED:
            return NOT_STARTED, ''
        if state in (TaskState.RUNNING, TaskState.CANCELLING):
            return RUNNING, ''
        if state is TaskState.SUCCESS:
            return self._ended(job, COMPLETED_OK, '')
        if state is TaskState.CANCELLED:
            return self._ended(job, COMPLETED_WITH_ERROR,
                               'HSCLA27C The migration was stopped')
        return self._ended(job, COMPLETED_WITH_ERROR,
                           f'HSCLA24E The migration failed: {job.task.error}')

    def _ended(self, job: Job, status: str, message: str) -> tuple[str, str]:
        if job.completed is None:
            job.completed = time.time()
        return status, message

    def delete(self, job: Job) -> None:
        if self.status(job)[0] in (RUNNING, NOT_STARTED):
            raise RestError(409, 'Conflict', f'Job {job.job_id} is running')
        job.deleted = True

    # -- faults ---------------------------------------------------------------

    def fail(self, lpar: Lpar, message: str) -> None:
        job = lpar.migrate_job
        if job is None or job.task is None:
            raise RestError(409, 'Conflict', 'not migrating')
        try:
            job.task.fail(message)
        except taskmodel.TaskFinished as exc:
            raise RestError(409, 'Conflict', str(exc)) from exc


def behaviour(data: dict) -> dict:
    """LPAR behaviour keywords from a control request's JSON."""
    out = {}
    for key in ('duration', 'cancel_delay', 'cancellable_until'):
        if key in data:
            value = data[key]
            out[key] = math.inf if value in (None, 'inf') else float(value)
    if 'memory_mb' in data:
        out['memory_mb'] = int(data['memory_mb'])
    if 'complete_on_cancel' in data:
        out['complete_on_cancel'] = bool(data['complete_on_cancel'])
    if 'state' in data:
        out['state'] = str(data['state'])
    return out
