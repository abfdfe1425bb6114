"""The simulated Hyper-V host pair: its WMI v2 objects and their methods.

Modelled from Microsoft's documentation of the Hyper-V WMI provider v2
(namespace ``root\\virtualization\\v2``):

* ``Msvm_ComputerSystem`` (https://learn.microsoft.com/en-us/windows/win32/
  hyperv_v2/msvm-computersystem): keys ``CreationClassName``, ``Name`` (the
  VM's GUID); ``ElementName`` is the friendly name, not unique;
  ``EnabledState`` 2 Enabled (running), 3 Disabled (off), 6 Enabled but
  Offline (saved), 9 Quiesce (paused).
* ``Msvm_VirtualSystemMigrationService.MigrateVirtualSystemToHost``
  (…/migratevirtualsystemtohost-msvm-virtualsystemmigrationservice): in
  ``ComputerSystem`` (REF), ``DestinationHost``, ``MigrationSettingData``
  (embedded ``Msvm_VirtualSystemMigrationSettingData``); out ``Job`` (REF);
  returns 4096 "Method Parameters Checked - Job Started", 32768 Failed,
  32773 Invalid parameter, 32775 Invalid state for this operation, 32777
  System not available.
* ``Msvm_MigrationJob`` (…/msvm-migrationjob), a ``CIM_ConcreteJob``: key
  ``InstanceID``; ``JobState`` 2 New, 3 Starting, 4 Running, 6 Shutting
  Down, 7 Completed, 8 Terminated, 9 Killed, 10 Exception;
  ``PercentComplete``, ``Cancellable``, ``ErrorCode``, ``ErrorDescription``,
  ``VirtualSystemName``, ``DestinationHost``, ``TimeBeforeRemoval`` (a
  finished job is deleted after it, 5 minutes by default).
* ``Msvm_MigrationJob.RequestStateChange`` (…/requeststatechange-msvm-
  migrationjob): ``RequestedState`` 4 Terminate or 5 Kill; returns 0 or
  one of 32768..32778 (32775 Invalid state for this operation).
* a VM's settings: ``Msvm_VirtualSystemSettingData`` (…/msvm-
  virtualsystemsettingdata; ``VirtualSystemType``
  ``Microsoft:Hyper-V:System:Realized`` for the running configuration),
  associated with the VM by ``Msvm_SettingsDefineState``, and its
  ``Msvm_MemorySettingData`` (…/msvm-memorysettingdata; ``VirtualQuantity``
  in ``AllocationUnits`` "byte * 2^20", i.e. MiB), associated with the
  settings by ``Msvm_VirtualSystemSettingDataComponent``.

What the documentation leaves open is modelled as live migration works
and said here: during the copy the VM keeps running on the source and the
destination holds only a planned VM (``Msvm_PlannedComputerSystem``, not
an ``Msvm_ComputerSystem``); the switch-over moves it at 100 %.  An
accepted Terminate/Kill takes effect after the VM's ``cancel_delay`` (the
job shows 6 Shutting Down meanwhile) and leaves the VM on the source, as it
was; a job may reach 100 % before that and then completes.  Cancellable
turns False from ``cancellable_until`` (the switch-over).

The life cycle of each job is :class:`lmcaps.conformance.taskmodel.
MigrationTask`; this module only maps it to the Hyper-V vocabulary.
"""

from __future__ import annotations

import dataclasses
import datetime
import threading
import time
import uuid
from typing import Any

from lmcaps.conformance import taskmodel

TaskState = taskmodel.TaskState

# Msvm_ComputerSystem.EnabledState (v2)
ENABLED, DISABLED, OFFLINE, QUIESCE = 2, 3, 6, 9
# CIM_ConcreteJob.JobState
JOB_NEW, JOB_STARTING, JOB_RUNNING, JOB_SHUTTING_DOWN = 2, 3, 4, 6
JOB_COMPLETED, JOB_TERMINATED, JOB_KILLED, JOB_EXCEPTION = 7, 8, 9, 10
# RequestStateChange.RequestedState of a job
TERMINATE, KILL = 4, 5
# Return codes
OK, JOB_STARTED = 0, 4096
FAILED, INVALID_PARAMETER = 32768, 32773
INVALID_STATE, NOT_AVAILABLE = 32775, 32777
#: MigrationType of Msvm_VirtualSystemMigrationSettingData: VirtualSystem.
MIGRATION_TYPE_VIRTUAL_SYSTEM = 32768
#: Seconds a finished job is kept (TimeBeforeRemoval's default, 5 min).
TIME_BEFORE_REMOVAL = 300.0


class MethodError(Exception):
    """A WMI method that returns a failure code (no job started)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclasses.dataclass
class VM:
    """One virtual machine and how its migrations behave.

    :param migration_seconds: seconds a migration takes (``inf``: a guest
        that dirties memory faster than the link; it never converges).
    :param cancel_delay: seconds from an accepted cancel to its effect.
    :param cancellable_until: progress from which Cancellable is False.
    :param complete_on_cancel: an accepted cancel lets the copy finish
        first (the switch-over wins the race).
    """

    element_name: str
    host: str
    name: str = dataclasses.field(
        default_factory=lambda: str(uuid.uuid4()).upper())
    enabled_state: int = ENABLED
    memory_mib: int = 1024
    migration_seconds: float = 2.0
    cancel_delay: float = 0.2
    cancellable_until: float = 0.95
    complete_on_cancel: bool = False
    migrating: bool = False
    memory_id: str = dataclasses.field(
        default_factory=lambda: str(uuid.uuid4()).upper())

    def settings(self) -> dict[str, Any]:
        return {'Caption': 'Virtual Machine Settings',
                'ElementName': self.element_name,
                'InstanceID': f'Microsoft:{self.name}',
                'VirtualSystemIdentifier': self.name,
                'VirtualSystemType': 'Microsoft:Hyper-V:System:Realized'}

    def memory(self) -> dict[str, Any]:
        return {'AllocationUnits': 'byte * 2^20', 'Caption': 'Memory',
                'ElementName': 'Memory',
                'InstanceID': f'Microsoft:{self.name}\\{self.memory_id}',
                'Reservation': self.memory_mib, 'ResourceType': 4,
                'VirtualQuantity': self.memory_mib}

    def properties(self) -> dict[str, Any]:
        return {
            'Caption': 'Virtual Machine',
            'CreationClassName': 'Msvm_ComputerSystem',
            'Description': 'Microsoft Virtual Machine',
            'ElementName': self.element_name,
            'EnabledState': self.enabled_state,
            'HealthState': 5,
            'Name': self.name,
            'OnTimeInMilliseconds': 1000,
            'ProcessID': 4242,
        }


class Job:
    """An ``Msvm_MigrationJob`` whose life cycle is a MigrationTask."""

    def __init__(self, host: HostPair, vm: VM, destination: str) -> None:
        self.instance_id = str(uuid.uuid4()).upper()
        self.vm = vm
        self.source = vm.host
        self.destination = destination
        self.submitted = datetime.datetime.now(datetime.timezone.utc)
        self.requested: int | None = None
        self.error_code = 0
        self.task = taskmodel.MigrationTask(
            self.instance_id, duration=vm.migration_seconds, queued=0.05,
            cancel_delay=vm.cancel_delay,
            cancellable_until=vm.cancellable_until,
            on_success=host.switch_over, on_cancelled=host.roll_back,
            on_error=host.roll_back)
        self.task.job = self   # type: ignore[attr-defined]

    @property
    def job_state(self) -> int:
        state = self.task.state
        if state is TaskState.QUEUED:
            return JOB_STARTING
        if state is TaskState.RUNNING:
            return JOB_RUNNING
        if state is TaskState.CANCELLING:
            return JOB_SHUTTING_DOWN
        if state is TaskState.SUCCESS:
            return JOB_COMPLETED
        if state is TaskState.CANCELLED:
            return JOB_KILLED if self.requested == KILL else JOB_TERMINATED
        return JOB_EXCEPTION

    def properties(self) -> dict[str, Any]:
        state = self.job_state
        task = self.task
        failed = state == JOB_EXCEPTION
        return {
            'Caption': 'Virtual System Migration',
            'Cancellable': task.cancellable,
            'DeleteOnCompletion': False,
            'Description': 'Migrating Virtual Machine',
            'DestinationHost': self.destination,
            'ElementName': 'Virtual System Migration',
            'ErrorCode': self.error_code if failed else 0,
            'ErrorDescription': (task.error or '') if failed else None,
            'ErrorSummaryDescription': ('Virtual machine migration operation '
                                        'failed' if failed else None),
            'InstanceID': self.instance_id,
            'JobState': state,
            'JobType': 2,
            'MigrationType': MIGRATION_TYPE_VIRTUAL_SYSTEM,
            'PercentComplete': task.percent,
            'TimeBeforeRemoval': datetime.timedelta(
                seconds=TIME_BEFORE_REMOVAL),
            'TimeSubmitted': self.submitted,
            'VirtualSystemName': self.vm.name,
        }


class HostPair:
    """Two (or more) Hyper-V hosts sharing one live-migration network.

    Thread-safe: the HTTP server answers from many threads.
    """

    def __init__(self, hosts: tuple[str, ...] = ('hv-src', 'hv-dst'),
                 time_before_removal: float = TIME_BEFORE_REMOVAL) -> None:
        self.hosts = hosts
        self.time_before_removal = time_before_removal
        self.lock = threading.RLock()
        self.vms: dict[str, VM] = {}
        self.jobs: dict[str, Job] = {}
        self.job_hosts: dict[str, str] = {}   # job id -> host that has it
        self.calls: list[tuple[str, str, str]] = []   # (host, class, method)

    # -- objects of one host -----------------------------------------------

    def computer_systems(self, host: str) -> list[dict[str, Any]]:
        """Msvm_ComputerSystem instances of one host (its own first)."""
        with self.lock:
            rows = [{'Caption': 'Hosting Computer System',
                     'CreationClassName': 'Msvm_ComputerSystem',
                     'ElementName': host, 'EnabledState': ENABLED,
                     'Name': host.upper(), 'Description': 'Microsoft Hosting '
                     'Computer System'}]
            rows += [vm.properties() for vm in self.vms.values()
                     if vm.host == host]
        return rows

    def migration_services(self, host: str) -> list[dict[str, Any]]:
        return [{'CreationClassName': 'Msvm_VirtualSystemMigrationService',
                 'ElementName': 'Virtual System Migration Service',
                 'EnabledState': ENABLED,
                 'Name': 'vsms', 'SystemCreationClassName':
                 'Msvm_ComputerSystem', 'SystemName': host.upper()}]

    def migration_jobs(self, host: str) -> list[dict[str, Any]]:
        self.expire()
        with self.lock:
            jobs = [j for i, j in self.jobs.items()
                    if self.job_hosts[i] == host]
        return [job.properties() for job in jobs]

    def _vms_of(self, host: str) -> list[VM]:
        with self.lock:
            return [vm for vm in self.vms.values() if vm.host == host]

    def instances(self, host: str, class_name: str) -> list[dict[str, Any]]:
        """Every instance of a class on a host; [] for unknown classes."""
        table = {'msvm_computersystem': self.computer_systems,
                 'msvm_virtualsystemmigrationservice':
                     self.migration_services,
                 'msvm_migrationjob': self.migration_jobs,
                 'msvm_concretejob': self.migration_jobs,
                 'msvm_virtualsystemsettingdata': lambda h: [
                     vm.settings() for vm in self._vms_of(h)],
                 'msvm_memorysettingdata': lambda h: [
                     vm.memory() for vm in self._vms_of(h)]}
        getter = table.get(class_name.casefold())
        return [] if getter is None else getter(host)

    def known_class(self, class_name: str) -> bool:
        return class_name.casefold() in (
            'msvm_computersystem', 'msvm_virtualsystemmigrationservice',
            'msvm_migrationjob', 'msvm_concretejob',
            'msvm_virtualsystemsettingdata', 'msvm_memorysettingdata')

    def associated(self, host: str, class_name: str, row: dict[str, Any],
                   association: str = '', result_class: str = ''
                   ) -> list[tuple[str, dict[str, Any]]]:
        """Instances associated with ``row`` (class, properties) pairs."""
        links = {
            'msvm_computersystem': ('Msvm_SettingsDefineState',
                                    'Msvm_VirtualSystemSettingData',
                                    'Name', VM.settings),
            'msvm_virtualsystemsettingdata': (
                'Msvm_VirtualSystemSettingDataComponent',
                'Msvm_MemorySettingData', 'VirtualSystemIdentifier',
                VM.memory),
        }
        link = links.get(class_name.casefold())
        if link is None:
            return []
        assoc, result, key, make = link
        if association and association.casefold() != assoc.casefold():
            return []
        if result_class and result_class.casefold() != result.casefold():
            return []
        return [(result, make(vm)) for vm in self._vms_of(host)
                if vm.name == row.get(key)]

    def expire(self) -> None:
        """Delete finished jobs older than TimeBeforeRemoval."""
        now = time.monotonic()
        with self.lock:
            for job_id, job in list(self.jobs.items()):
                task = job.task
                if (task.state.finished and task.finished_at is not None and
                        now - task.finished_at > self.time_before_removal):
                    del self.jobs[job_id]

    # -- methods -------------------------------------------------------------

    def migrate(self, host: str, vm_name: str, destination: str,
                migration_type: int = MIGRATION_TYPE_VIRTUAL_SYSTEM) -> Job:
        """MigrateVirtualSystemToHost on ``host``'s migration service.

        :raises: MethodError (32773 bad parameter, 32775 invalid state,
            32777 destination not available).
        """
        self.calls.append((host, 'Msvm_VirtualSystemMigrationService',
                           'MigrateVirtualSystemToHost'))
        with self.lock:
            vm = self.vms.get(vm_name)
            if vm is None or vm.host != host:
                raise MethodError(INVALID_PARAMETER, 'The virtual machine '
                                  'does not exist on this host')
            if migration_type != MIGRATION_TYPE_VIRTUAL_SYSTEM:
                raise MethodError(INVALID_PARAMETER, f'MigrationType '
                                  f'{migration_type} is not modelled')
            if destination.casefold() not in (h.casefold() for h in
                                              self.hosts) or \
                    destination.casefold() == host.casefold():
                raise MethodError(NOT_AVAILABLE, f'The destination host '
                                  f'{destination!r} is not available')
            if vm.migrating:
                raise MethodError(INVALID_STATE, 'The virtual machine is '
                                  'already being migrated')
            if vm.enabled_state not in (ENABLED, QUIESCE):
                raise MethodError(INVALID_STATE, 'Live migration needs a '
                                  'running virtual machine')
            destination = next(h for h in self.hosts
                               if h.casefold() == destination.casefold())
            job = Job(self, vm, destination)
            vm.migrating = True
            self.jobs[job.instance_id] = job
            self.job_hosts[job.instance_id] = host
        return job

    def request_job_state(self, host: str, job_id: str,
                          requested: int) -> int:
        """Msvm_MigrationJob.RequestStateChange; returns the return code."""
        self.calls.append((host, 'Msvm_MigrationJob', 'RequestStateChange'))
        job = self.job(host, job_id)
        if job is None:
            return NOT_AVAILABLE
        if requested not in (TERMINATE, KILL):
            return INVALID_PARAMETER
        task = job.task
        if job.vm.complete_on_cancel and task.cancellable:
            # the copy reaches 100 % before the cancel takes effect
            task.cancel_delay = max(task.cancel_delay, 5.0)
            task.set_duration(0.3 / max(0.01, 1.0 - task.progress))
        try:
            task.cancel()
        except (taskmodel.TaskFinished, taskmodel.TaskNotCancellable):
            return INVALID_STATE
        job.requested = requested
        return OK

    def job(self, host: str, job_id: str) -> Job | None:
        self.expire()
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None or self.job_hosts[job_id] != host:
                return None
            return job

    # -- task callbacks ------------------------------------------------------

    def switch_over(self, task: taskmodel.MigrationTask) -> None:
        job: Job = task.job   # type: ignore[attr-defined]
        with self.lock:
            job.vm.host = job.destination
            job.vm.migrating = False

    def roll_back(self, task: taskmodel.MigrationTask) -> None:
        job: Job = task.job   # type: ignore[attr-defined]
        with self.lock:
            if task.state is TaskState.ERROR:
                job.error_code = FAILED
            job.vm.migrating = False

    # -- simulator control (not WMI) ------------------------------------------

    def add_vm(self, host: str, element_name: str, **behaviour: Any) -> VM:
        if host not in self.hosts:
            raise ValueError(f'no host {host!r}')
        for key in ('migration_seconds', 'cancel_delay',
                    'cancellable_until'):
            if key in behaviour and behaviour[key] is not None:
                behaviour[key] = float(behaviour[key])
        vm = VM(element_name=element_name, host=host, **behaviour)
        with self.lock:
            self.vms[vm.name] = vm
        return vm

    def find_job(self, job_id: str) -> Job:
        with self.lock:
            return self.jobs[job_id]

    def describe(self) -> dict[str, Any]:
        """The whole model, JSON-serialisable, for tests."""
        with self.lock:
            vms = list(self.vms.values())
            jobs = list(self.jobs.values())
        return {
            'vms': [{'name': vm.name, 'element_name': vm.element_name,
                     'host': vm.host, 'enabled_state': vm.enabled_state,
                     'migrating': vm.migrating} for vm in vms],
            'jobs': [{'instance_id': j.instance_id, 'vm': j.vm.name,
                      'source': j.source, 'destination': j.destination,
                      'job_state': j.job_state, 'percent': j.task.percent,
                      'cancellable': j.task.cancellable,
                      'requested': j.requested} for j in jobs],
            'calls': [list(c) for c in self.calls],
        }
