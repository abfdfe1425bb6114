"""The xapi object model the simulator serves, written from the XenAPI reference.

Sources (xapi-project/xen-api, ``ocaml/idl`` and ``doc/content/xen-api``):

* **Wire protocol** (doc/content/xen-api/wire-protocol.md, "XML-RPC"): every
  call but ``session.login_with_password`` takes the session reference
  first; replies are ``{Status: Success, Value}`` or ``{Status: Failure,
  ErrorDescription: [code, params...]}``; asynchronous forms live in the
  ``Async`` namespace and return a task reference.
* **Errors** (datamodel_errors.ml / api_errors.ml): SESSION_INVALID
  [handle], SESSION_AUTHENTICATION_FAILED [uname, msg], HANDLE_INVALID
  [class, handle], OPERATION_NOT_ALLOWED [reason], VM_BAD_POWER_STATE
  [vm, expected, actual], OTHER_OPERATION_IN_PROGRESS [class, object,
  operation_type, operation_ref], VM_MIGRATE_FAILED [vm, source,
  destination, msg], TASK_CANCELLED [task], MESSAGE_METHOD_UNKNOWN [method],
  MESSAGE_PARAMETER_COUNT_MISMATCH [method, expected, received].
* **task class** (datamodel.ml, "task"): ``status`` pending | success |
  failure | cancelling | cancelled ("cancelling is not being used"),
  ``progress`` float 0..1, ``allowed_operations`` ⊆ {cancel, destroy},
  ``current_operations``, ``result`` (XML-RPC encoded value), ``error_info``
  (set if the task failed), ``created``/``finished``.  ``task.cancel``:
  "Request that a task be cancelled. Note that a task may fail to be
  cancelled and may complete or fail normally"; a cancelled task ends with
  status cancelled and error_info [TASK_CANCELLED, task] (taskHelper.ml);
  'cancel' leaves allowed_operations just before the domain is suspended
  for the final copy (xenopsd prohibit_cancellation), after which xapi
  ignores a cancel.  A cancel of a task that has finished is refused with
  OPERATION_NOT_ALLOWED (the error task.cancel declares).
* **VM class** (datamodel_vm.ml): ``power_state`` Halted | Paused | Running
  | Suspended; ``resident_on`` the host it runs on, moved to the
  destination when the migration completes; ``VM.pool_migrate(vm, host,
  options)``; ``VM.migrate_send(vm, dest, live, vdi_map, vif_map,
  options)`` with ``dest`` the map ``Host.migrate_receive(host, network,
  options)`` returned (datamodel_host.ml); migrate_send's result is the new
  VM in the destination pool.
* **event.from** (datamodel.ml, "event"): ``event.from(classes, token,
  timeout) -> {events, token, valid_ref_counts}``; each event has id,
  timestamp, class, operation (add | del | mod), ref, obj_uuid, snapshot.

The migration itself runs on :class:`lmcaps.conformance.taskmodel.MigrationTask`
whose states map to the task class: QUEUED/RUNNING/CANCELLING -> pending
(CANCELLING shows ``current_operations`` [cancel]); SUCCESS -> success;
CANCELLED -> cancelled; ERROR -> failure.

Not modelled: RBAC, pools' HA, storage (vdi_map/vif_map are accepted and
ignored), real time stamps beyond ``created``/``finished``.  Two pools live
in one simulator process (cross-pool migration moves a VM between them).
"""

from __future__ import annotations

import datetime
import math
import threading
import time
import uuid
from typing import Any

from lmcaps.conformance import taskmodel

TS = taskmodel.TaskState


class XapiError(Exception):
    """A Failure reply: ``ErrorDescription`` = [code, *params]."""

    def __init__(self, code: str, *params: Any) -> None:
        super().__init__(code)
        self.description = [code] + [str(p) for p in params]


def new_ref() -> str:
    return f'OpaqueRef:{uuid.uuid4()}'


def _stamp(when: float | None) -> Any:
    import xmlrpc.client
    wall = time.time() - (time.monotonic() - (when or time.monotonic()))
    return xmlrpc.client.DateTime(datetime.datetime.fromtimestamp(
        wall, datetime.timezone.utc).strftime('%Y%m%dT%H:%M:%SZ'))


class Profile:
    """How the next migration of a VM behaves (set through sim.set_profile)."""

    def __init__(self, duration: float = 2.0, cancellable_until: float = 0.95,
                 cancel_delay: float = 0.1, queued: float = 0.0,
                 stuck_at: float = 0.9,
                 complete_on_cancel: float | None = None) -> None:
        self.duration = duration
        self.cancellable_until = cancellable_until
        self.cancel_delay = cancel_delay
        self.queued = queued
        self.stuck_at = stuck_at
        #: seconds after an accepted cancel in which the migration completes
        #: anyway (the race task.cancel's doc warns of); None: no race.
        self.complete_on_cancel = complete_on_cancel


class Task:
    """A task object; migration tasks carry a MigrationTask."""

    def __init__(self, name: str, session: str, vm: str, host: str,
                 dest_host: str, profile: Profile, model: Model,
                 new_vm: str | None = None) -> None:
        self.ref = new_ref()
        self.uuid = str(uuid.uuid4())
        self.name = name
        self.session = session
        self.vm, self.host, self.dest_host = vm, host, dest_host
        self.new_vm = new_vm
        self.model = model
        self.failure: list[str] | None = None
        duration = math.inf if profile.duration <= 0 else profile.duration
        self.complete_on_cancel = profile.complete_on_cancel
        delay = (10 ** 9 if profile.complete_on_cancel is not None
                 else profile.cancel_delay)
        self.engine = taskmodel.MigrationTask(
            self.ref, duration=duration, queued=profile.queued,
            cancel_delay=delay, cancellable_until=profile.cancellable_until,
            stuck_at=profile.stuck_at, on_success=model._migrated,
            on_error=model._migration_failed)
        self.engine.sim_task = self  # type: ignore[attr-defined]

    def record(self) -> dict[str, Any]:
        state = self.engine.state
        status = {TS.QUEUED: 'pending', TS.RUNNING: 'pending',
                  TS.CANCELLING: 'pending', TS.SUCCESS: 'success',
                  TS.CANCELLED: 'cancelled', TS.ERROR: 'failure'}[state]
        allowed = (['cancel'] if state in (TS.QUEUED, TS.RUNNING) and
                   self.engine.cancellable else [])
        current = {}
        if state is TS.CANCELLING:
            current = {new_ref(): 'cancel'}
        error: list[str] = []
        if state is TS.CANCELLED:
            error = ['TASK_CANCELLED', self.ref]
        elif state is TS.ERROR:
            error = self.failure or [
                'VM_MIGRATE_FAILED', self.vm, self.host, self.dest_host,
                self.engine.error or 'migration failed']
        result = ''
        if state is TS.SUCCESS and self.new_vm:
            result = f'<value>{self.new_vm}</value>'
        return {
            'uuid': self.uuid, 'name_label': self.name,
            'name_description': '', 'allowed_operations': allowed,
            'current_operations': current,
            'created': _stamp(self.engine.created),
            'finished': _stamp(self.engine.finished_at or 0.0),
            'status': status, 'resident_on': self.host,
            'progress': round(self.engine.progress, 4), 'type': '<none/>',
            'result': result, 'error_info': error, 'other_config': {},
            'subtask_of': 'OpaqueRef:NULL', 'subtasks': [], 'backtrace': '',
        }


class Model:
    """Sessions, hosts, VMs, tasks and events of one simulated xapi."""

    def __init__(self, username: str, password: str) -> None:
        self.username, self.password = username, password
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.sessions: dict[str, str] = {}
        self.hosts: dict[str, dict[str, Any]] = {}
        self.vms: dict[str, dict[str, Any]] = {}
        self.tasks: dict[str, Task] = {}
        self.tokens: dict[str, dict[str, Any]] = {}
        self.profiles: dict[str, Profile] = {}
        self.calls: dict[str, int] = {}
        self.events: list[dict[str, Any]] = []
        self._seen: dict[str, tuple] = {}
        self._event_id = 0

    # -- sessions -----------------------------------------------------------

    def login(self, uname: str, password: str) -> str:
        if uname != self.username or password != self.password:
            raise XapiError('SESSION_AUTHENTICATION_FAILED', uname,
                            'Authentication failure')
        ref = new_ref()
        with self.lock:
            self.sessions[ref] = uname
        return ref

    def check_session(self, ref: Any) -> None:
        with self.lock:
            if ref not in self.sessions:
                raise XapiError('SESSION_INVALID', ref)

    def logout(self, ref: str) -> None:
        with self.lock:
            self.sessions.pop(ref, None)

    def expire_sessions(self) -> int:
        with self.lock:
            count = len(self.sessions)
            self.sessions.clear()
            return count

    # -- objects ------------------------------------------------------------

    def add_host(self, name: str, pool: str = 'pool0') -> str:
        ref = new_ref()
        with self.lock:
            self.hosts[ref] = {'uuid': str(uuid.uuid4()), 'name_label': name,
                               'name_description': '', 'address': name,
                               'enabled': True, 'pool': pool,
                               'resident_VMs': []}
        return ref

    def add_vm(self, name: str, host: str, memory: int = 2 * 1024 ** 3,
               power_state: str = 'Running') -> str:
        ref = new_ref()
        with self.lock:
            self._host(host)
            self.vms[ref] = {
                'uuid': str(uuid.uuid4()), 'name_label': name,
                'power_state': power_state,
                'resident_on': host if power_state != 'Halted'
                else 'OpaqueRef:NULL',
                'memory_static_max': str(memory), 'is_a_template': False,
                'is_control_domain': False, 'allowed_operations': [],
                'current_operations': {}}
        return ref

    def _host(self, ref: Any) -> dict[str, Any]:
        host = self.hosts.get(ref)
        if host is None:
            raise XapiError('HANDLE_INVALID', 'host', ref)
        return host

    def vm(self, ref: Any) -> dict[str, Any]:
        vm = self.vms.get(ref)
        if vm is None:
            raise XapiError('HANDLE_INVALID', 'VM', ref)
        return vm

    def task(self, ref: Any) -> Task:
        task = self.tasks.get(ref)
        if task is None:
            raise XapiError('HANDLE_INVALID', 'task', ref)
        return task

    # -- migration ----------------------------------------------------------

    def _check_migratable(self, vm_ref: str) -> dict[str, Any]:
        vm = self.vm(vm_ref)
        if vm['power_state'] not in ('Running', 'Paused'):
            raise XapiError('VM_BAD_POWER_STATE', vm_ref, 'running',
                            vm['power_state'].lower())
        for op_ref, op in vm['current_operations'].items():
            raise XapiError('OTHER_OPERATION_IN_PROGRESS', 'VM', vm_ref, op,
                            op_ref)
        return vm

    def pool_migrate(self, session: str, vm_ref: str, host: str,
                     options: dict[str, str]) -> str:
        with self.lock:
            vm = self._check_migratable(vm_ref)
            dest = self._host(host)
            src = vm['resident_on']
            if self.hosts[src]['pool'] != dest['pool']:
                raise XapiError('OPERATION_NOT_ALLOWED',
                                'the host is in another pool')
            if host == src:
                raise XapiError('HOST_CANNOT_ATTACH_NETWORK', host,
                                'OpaqueRef:NULL')
            return self._begin('Async.VM.pool_migrate', session, vm_ref,
                               src, host, None)

    def migrate_receive(self, host: str, network: str,
                        options: dict[str, str]) -> dict[str, str]:
        with self.lock:
            self._host(host)
            token = str(uuid.uuid4())
            self.tokens[token] = {'host': host}
            return {'host': host, 'xenops': 'http://127.0.0.1/services/xenops',
                    'SM': 'http://127.0.0.1/services/SM', 'master':
                    'http://127.0.0.1/', 'session_id': token}

    def migrate_send(self, session: str, vm_ref: str, dest: dict[str, str],
                     live: bool, options: dict[str, str]) -> str:
        with self.lock:
            vm = self._check_migratable(vm_ref)
            token = self.tokens.pop(str(dest.get('session_id')), None)
            if token is None:
                raise XapiError('INVALID_VALUE', 'dest', 'unknown token')
            host = token['host']
            new_vm = new_ref()
            return self._begin('Async.VM.migrate_send', session, vm_ref,
                               vm['resident_on'], host, new_vm)

    def _begin(self, name: str, session: str, vm_ref: str, src: str,
               dst: str, new_vm: str | None) -> str:
        profile = self.profiles.pop(vm_ref, None) or Profile()
        task = Task(name, session, vm_ref, src, dst, profile, self, new_vm)
        self.tasks[task.ref] = task
        self.vms[vm_ref]['current_operations'] = {task.ref: 'migrate_send'
                                                  if new_vm else
                                                  'pool_migrate'}
        self.changed.notify_all()
        return task.ref

    def _migrated(self, engine: taskmodel.MigrationTask) -> None:
        task: Task = engine.sim_task  # type: ignore[attr-defined]
        with self.lock:
            vm = self.vms.get(task.vm)
            if vm is None:
                return
            vm['current_operations'] = {}
            if task.new_vm:
                self.vms[task.new_vm] = dict(vm, uuid=vm['uuid'],
                                             resident_on=task.dest_host)
                del self.vms[task.vm]
            else:
                vm['resident_on'] = task.dest_host
            self.changed.notify_all()

    def _migration_failed(self, engine: taskmodel.MigrationTask) -> None:
        task: Task = engine.sim_task  # type: ignore[attr-defined]
        with self.lock:
            vm = self.vms.get(task.vm)
            if vm is not None:
                vm['current_operations'] = {}
            self.changed.notify_all()

    def advance(self) -> None:
        """Bring every task to now (fires completion callbacks)."""
        for task in list(self.tasks.values()):
            state = task.engine.advance()
            if state is TS.CANCELLED and task.vm in self.vms:
                with self.lock:
                    self.vms[task.vm]['current_operations'] = {}

    def cancel(self, ref: str) -> None:
        task = self.task(ref)
        try:
            task.engine.cancel()
        except taskmodel.TaskFinished as exc:
            raise XapiError('OPERATION_NOT_ALLOWED',
                            f'task already {exc.state.value}') from exc
        except taskmodel.TaskNotCancellable:
            pass   # xapi ignores a cancel it cannot honour
        else:
            race = task.complete_on_cancel
            if race is not None:
                left = max(1e-3, 1.0 - task.engine.progress)
                task.engine.set_duration(max(1e-3, race) / left)
        with self.lock:
            self.changed.notify_all()

    def fail(self, ref: str, message: str) -> None:
        task = self.task(ref)
        task.failure = ['VM_MIGRATE_FAILED', task.vm, task.host,
                        task.dest_host, message]
        task.engine.fail(message)

    # -- events -------------------------------------------------------------

    def event_from(self, classes: list[str], token: str,
                   timeout: float) -> dict[str, Any]:
        """``event.from``; see :mod:`tests.functional.xenapi.sim.events`."""
        from tests.functional.xenapi.sim import events
        return events.event_from(self, classes, token, timeout)
