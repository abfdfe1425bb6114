"""The simulator's XML-RPC front end and its process.

Wire protocol as in the XenAPI reference (doc/content/xen-api/
wire-protocol.md, "XML-RPC"): one POST per call to ``/``; method names are
``<class>.<message>`` (``VM.get_power_state``) or ``Async.<class>.<message>``
for the asynchronous forms, which return a task reference; the first
parameter is the session reference except for ``session.login_with_password``;
the reply is a struct ``{'Status': 'Success', 'Value': v}`` or ``{'Status':
'Failure', 'ErrorDescription': [code, params...]}``.

Methods under ``sim.`` are the test harness's control channel (not XenAPI):
they need no session and reply with the plain value.

Run: ``python -m tests.functional.xenapi.sim.server --port-file F`` with the
account in the environment (``XAPISIM_USERNAME``, ``XAPISIM_PASSWORD``);
it binds 127.0.0.1 on a free port, writes the port to F, serves until
SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import signal
import socketserver
import ssl
import sys
import threading
import time
from collections.abc import Callable
from typing import Any
from xmlrpc import server as xmlrpc_server

from tests.functional.xenapi.sim import model as sim_model

XapiError = sim_model.XapiError


def _record(obj: dict[str, Any], hide: tuple[str, ...] = ('pool',)
            ) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in hide}


class Api:
    """Dispatches XenAPI method names onto the model."""

    def __init__(self, model: sim_model.Model) -> None:
        self.m = model
        m = model
        # name -> (parameter count after the session, handler)
        self.methods: dict[str, tuple[int, Callable[..., Any]]] = {
            'session.logout': (0, lambda s: m.logout(s) or ''),
            'session.get_this_host': (0, lambda s: next(iter(m.hosts))),
            'pool.get_all': (0, lambda s: ['OpaqueRef:pool0']),
            'pool.get_master': (1, lambda s, p: next(iter(m.hosts))),
            'host.get_API_version_major': (1, lambda s, r:
                                           m._host(r) and '2'),
            'host.get_API_version_minor': (1, lambda s, r:
                                           m._host(r) and '21'),
            'host.get_all': (0, lambda s: list(m.hosts)),
            'host.get_by_name_label': (1, lambda s, n: [
                r for r, h in m.hosts.items() if h['name_label'] == n]),
            'host.get_record': (1, lambda s, r: _record(m._host(r))),
            'host.get_name_label': (1, lambda s, r: m._host(r)['name_label']),
            'host.get_uuid': (1, lambda s, r: m._host(r)['uuid']),
            'host.migrate_receive': (3, lambda s, h, n, o:
                                     m.migrate_receive(h, n, o)),
            'network.get_all': (0, lambda s: ['OpaqueRef:network0']),
            'VM.get_all': (0, lambda s: list(m.vms)),
            'VM.get_by_name_label': (1, lambda s, n: [
                r for r, v in m.vms.items() if v['name_label'] == n]),
            'VM.get_by_uuid': (1, self._vm_by_uuid),
            'VM.get_record': (1, lambda s, r: _record(m.vm(r))),
            'VM.get_power_state': (1, lambda s, r: m.vm(r)['power_state']),
            'VM.get_resident_on': (1, lambda s, r: m.vm(r)['resident_on']),
            'VM.get_uuid': (1, lambda s, r: m.vm(r)['uuid']),
            'VM.get_memory_static_max': (1, lambda s, r:
                                         m.vm(r)['memory_static_max']),
            'VM.pool_migrate': (3, self._pool_migrate_sync),
            'Async.VM.pool_migrate': (3, lambda s, v, h, o:
                                      m.pool_migrate(s, v, h, o)),
            'Async.VM.migrate_send': (6, lambda s, v, d, live, vdi, vif, o:
                                      m.migrate_send(s, v, d, live, o)),
            'task.get_all': (0, lambda s: list(m.tasks)),
            'task.get_record': (1, lambda s, r: m.task(r).record()),
            'task.get_all_records': (0, lambda s: {
                r: t.record() for r, t in list(m.tasks.items())}),
            'task.cancel': (1, lambda s, r: m.cancel(r) or ''),
            'task.destroy': (1, self._task_destroy),
            'event.from': (3, lambda s, c, t, to: m.event_from(c, t, to)),
        }
        for field in ('status', 'progress', 'allowed_operations',
                      'current_operations', 'error_info', 'result',
                      'name_label', 'uuid', 'created', 'finished',
                      'resident_on'):
            self.methods[f'task.get_{field}'] = (
                1, lambda s, r, f=field: m.task(r).record()[f])

    def _vm_by_uuid(self, session: str, vm_uuid: str) -> str:
        for ref, vm in self.m.vms.items():
            if vm['uuid'] == vm_uuid:
                return ref
        raise XapiError('UUID_INVALID', 'VM', vm_uuid)

    def _pool_migrate_sync(self, session: str, vm: str, host: str,
                           options: dict[str, str]) -> str:
        """The synchronous form: returns when the task ended (void)."""
        ref = self.m.pool_migrate(session, vm, host, options)
        while True:
            rec = self.m.task(ref).record()
            if rec['status'] == 'success':
                return ''
            if rec['status'] in ('failure', 'cancelled'):
                raise XapiError(*rec['error_info'])
            time.sleep(0.02)

    def _task_destroy(self, session: str, ref: str) -> str:
        task = self.m.task(ref)
        if not task.engine.state.finished:
            raise XapiError('OPERATION_NOT_ALLOWED', 'task is pending')
        with self.m.lock:
            del self.m.tasks[ref]
        return ''

    def call(self, method: str, params: tuple) -> dict[str, Any]:
        """One XenAPI call; always an envelope (never an XML-RPC fault)."""
        with self.m.lock:
            self.m.calls[method] = self.m.calls.get(method, 0) + 1
        try:
            if method == 'session.login_with_password':
                if len(params) < 2:
                    raise XapiError('MESSAGE_PARAMETER_COUNT_MISMATCH',
                                    method, 2, len(params))
                return {'Status': 'Success',
                        'Value': self.m.login(params[0], params[1])}
            entry = self.methods.get(method)
            if entry is None:
                raise XapiError('MESSAGE_METHOD_UNKNOWN', method)
            count, handler = entry
            if len(params) != count + 1:
                raise XapiError('MESSAGE_PARAMETER_COUNT_MISMATCH', method,
                                count + 1, len(params))
            self.m.check_session(params[0])
            if not method.startswith('event.'):
                self.m.advance()
            return {'Status': 'Success', 'Value': handler(*params)}
        except XapiError as exc:
            return {'Status': 'Failure', 'ErrorDescription': exc.description}


class Control:
    """``sim.*``: set-up and fault injection for tests (not XenAPI)."""

    def __init__(self, model: sim_model.Model) -> None:
        self.m = model

    def add_host(self, name: str, pool: str = 'pool0') -> str:
        return self.m.add_host(name, pool)

    def add_vm(self, name: str, host: str, memory: int) -> str:
        return self.m.add_vm(name, host, int(memory))

    def set_profile(self, vm: str, profile: dict[str, Any]) -> bool:
        self.m.profiles[vm] = sim_model.Profile(**profile)
        return True

    def vm_state(self, vm: str) -> dict[str, str]:
        self.m.advance()
        with self.m.lock:
            rec = self.m.vms.get(vm)
            if rec is None:
                return {'exists': 'false'}
            return {'exists': 'true', 'power_state': rec['power_state'],
                    'resident_on': rec['resident_on']}

    def task_result(self, task: str) -> str:
        t = self.m.tasks.get(task)
        return t.new_vm or '' if t else ''

    def fail_task(self, task: str, message: str) -> bool:
        self.m.fail(task, message)
        return True

    def set_duration(self, task: str, duration: float) -> bool:
        self.m.task(task).engine.set_duration(float(duration))
        return True

    def close_cancel_window(self, task: str) -> bool:
        """The final copy begins: 'cancel' leaves allowed_operations."""
        self.m.task(task).engine.cancellable_until = 0.0
        return True

    def set_power_state(self, vm: str, state: str) -> bool:
        with self.m.lock:
            self.m.vm(vm)['power_state'] = state
        return True

    def expire_sessions(self) -> int:
        return self.m.expire_sessions()

    def calls(self) -> dict[str, int]:
        with self.m.lock:
            return dict(self.m.calls)

    def reset_calls(self) -> bool:
        with self.m.lock:
            self.m.calls.clear()
        return True


class _Server(socketserver.ThreadingMixIn, xmlrpc_server.SimpleXMLRPCServer):
    daemon_threads = True
    allow_reuse_address = True


class _Dispatch:
    def __init__(self, api: Api, control: Control) -> None:
        self.api, self.control = api, control

    def _dispatch(self, method: str, params: tuple) -> Any:
        if method.startswith('sim.'):
            name = method[4:]
            if name.startswith('_') or not hasattr(self.control, name):
                raise ValueError(f'no control method {name}')
            return getattr(self.control, name)(*params)
        return self.api.call(method, params)


def make_server(username: str, password: str, port: int = 0
                ) -> tuple[_Server, sim_model.Model]:
    """A server bound to 127.0.0.1 (not yet serving) and its model."""
    model = sim_model.Model(username, password)
    srv = _Server(('127.0.0.1', port), logRequests=False, allow_none=True)
    srv.register_instance(_Dispatch(Api(model), Control(model)))
    return srv, model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--port-file', required=True)
    parser.add_argument('--cert', help='PEM certificate + key: serve HTTPS')
    args = parser.parse_args(argv)
    srv, _model = make_server(os.environ.get('XAPISIM_USERNAME', 'root'),
                              os.environ.get('XAPISIM_PASSWORD', ''))
    if args.cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert)
        srv.socket = context.wrap_socket(srv.socket, server_side=True)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(
        target=srv.shutdown).start())
    tmp = args.port_file + '.tmp'
    with open(tmp, 'w') as f:
        f.write(str(srv.server_address[1]))
    os.rename(tmp, args.port_file)
    try:
        srv.serve_forever(poll_interval=0.2)
    finally:
        srv.server_close()
    return 0


if __name__ == '__main__':
    sys.exit(main())
