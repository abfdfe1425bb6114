"""HTTP front of the simulated NovaLink REST API (stdlib ThreadingHTTPServer).

Serves what pypowervm's ``adapter.Session``/``Adapter`` and
``pypowervm.tasks.migration`` use (paths as in pypowervm/const.py and
adapter.py; the REST API is documented in IBM's "HMC REST API" and
"PowerVM NovaLink REST API" references):

* ``PUT /rest/api/web/Logon`` (LogonRequest: UserID, Password) →
  LogonResponse with ``X-API-Session``; 401 HttpErrorResponse on bad
  credentials.  ``DELETE /rest/api/web/Logon`` logs off.  Every
  ``/rest/api/uom`` request needs a valid ``X-API-Session`` header, else
  401 (pypowervm then logs on again once).
* ``GET /rest/api/uom/ManagedSystem[/{uuid}]``,
  ``GET /rest/api/uom/LogicalPartition[/{uuid}]`` (also under
  ``ManagedSystem/{uuid}/``): Atom feed / entry.
* ``GET .../LogicalPartition/{uuid}/do/{Migrate|MigrateValidate|
  MigrateAbort|MigrateRecover}``: the JobRequest template; ``PUT`` the same
  path with a JobRequest (Content-Type ``...web+xml; type=JobRequest``) →
  JobResponse with its JobID.
* ``GET /rest/api/uom/jobs/{id}`` → JobResponse with Status;
  ``POST /rest/api/uom/jobs/{id}/cancel``; ``DELETE /rest/api/uom/jobs/{id}``
  (409 while the job runs).

Not part of the vendor's API: ``/sim/...`` JSON control endpoints for the
tests (create systems and LPARs, read the model, inject faults, expire the
sessions, drop every REST connection for a while), unauthenticated, on the
same loopback port.

Run: ``python -m tests.functional.powervm.sim --port-file F --user U
--password-file P`` binds 127.0.0.1 on a free port and writes it to F.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import re
import ssl
import sys
import time
import xml.etree.ElementTree as ET

from tests.functional.powervm.sim import documents as docs
from tests.functional.powervm.sim import model

ATOM_TYPE = 'application/atom+xml'
WEB_TYPE = 'application/vnd.ibm.powervm.web+xml; type=%s'
_LPAR = re.compile(r'^/rest/api/uom/(?:ManagedSystem/[^/]+/)?'
                   r'LogicalPartition(?:/([^/]+))?(?:/do/(\w+))?$')
_SYSTEM = re.compile(r'^/rest/api/uom/ManagedSystem(?:/([^/]+))?$')
_JOB = re.compile(r'^/rest/api/uom/jobs/(\d+)(/cancel)?$')


class Handler(http.server.BaseHTTPRequestHandler):
    server: Server
    protocol_version = 'HTTP/1.1'

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        if self.server.verbose:
            super().log_message(format, *args)

    # -- plumbing -----------------------------------------------------------

    @property
    def nl(self) -> model.Novalink:
        return self.server.novalink

    @property
    def base(self) -> str:
        host = self.headers.get('Host', '127.0.0.1')
        return f'{self.server.scheme}://{host}'

    def _body(self) -> bytes:
        length = int(self.headers.get('Content-Length') or 0)
        return self.rfile.read(length) if length else b''

    def _send(self, status: int, body: bytes = b'', ctype: str = ATOM_TYPE,
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if body:
            self.send_header('Content-Type', ctype)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _xml(self, element: ET.Element) -> None:
        self._send(200, docs.tostring(element))

    def _error(self, exc: model.RestError) -> None:
        self._send(exc.status, docs.http_error(
            exc.status, self.path, exc.reason, exc.message),
            WEB_TYPE % 'HttpErrorResponse')

    def _dispatch(self, method: str) -> None:
        path = self.path.split('?', 1)[0]
        body = self._body()
        with self.nl.lock:
            self.nl.requests.append((method, path))
            down = time.monotonic() < self.nl.outage_until
        if down and path.startswith('/rest/'):
            self.close_connection = True     # drop it: no response at all
            return None
        try:
            if path.startswith('/sim/'):
                return self._control(method, path, body)
            if path == '/rest/api/web/Logon':
                return self._logon(method, body)
            self.nl.check(self.headers.get('X-API-Session'))
            for pattern, handler in ((_LPAR, self._lpar),
                                     (_SYSTEM, self._system),
                                     (_JOB, self._job)):
                match = pattern.match(path)
                if match:
                    return handler(method, path, body, *match.groups())
            raise model.RestError(404, 'Not Found', f'no resource {path}')
        except model.RestError as exc:
            self._error(exc)

    def do_GET(self) -> None:
        self._dispatch('GET')

    def do_PUT(self) -> None:
        self._dispatch('PUT')

    def do_POST(self) -> None:
        self._dispatch('POST')

    def do_DELETE(self) -> None:
        self._dispatch('DELETE')

    # -- the REST API -------------------------------------------------------

    def _logon(self, method: str, body: bytes) -> None:
        if method == 'DELETE':
            self.nl.logoff(self.headers.get('X-API-Session'))
            return self._send(204)
        if method != 'PUT':
            raise model.RestError(405, 'Method Not Allowed', method)
        try:
            root = ET.fromstring(body)
        except ET.ParseError as exc:
            raise model.RestError(400, 'Bad Request', str(exc)) from exc
        user = root.findtext(f'{{{docs.WEB}}}UserID', '')
        password = root.findtext(f'{{{docs.WEB}}}Password', '')
        token = self.nl.logon(user, password)
        self._send(200, docs.logon_response(token), WEB_TYPE %
                   'LogonResponse', {'X-MC-Type': self.server.mc_type})

    def _lpar_entry(self, lpar: model.Lpar) -> ET.Element:
        view = self.nl.lpar_view(lpar)
        return docs.lpar_entry(
            self.base, uuid=lpar.uuid, name=lpar.name,
            system_uuid=view['system'], state=view['state'],
            migration_state=view['migration_state'],
            data_total=view['data_total'],
            data_remaining=view['data_remaining'], memory_mb=lpar.memory_mb)

    def _lpar(self, method: str, path: str, body: bytes, lpar_uuid: str | None,
              operation: str | None) -> None:
        if lpar_uuid is None:
            if method != 'GET':
                raise model.RestError(405, 'Method Not Allowed', method)
            with self.nl.lock:
                lpars = list(self.nl.lpars.values())
            for lpar in lpars:
                self.nl.advance(lpar)
            return self._xml(docs.feed(
                'fake_lpar_feed.txt', self.base, 'uom/LogicalPartition',
                [self._lpar_entry(lpar) for lpar in lpars]))
        lpar = self.nl.lpar(lpar_uuid)
        if operation is None:
            if method != 'GET':
                raise model.RestError(405, 'Method Not Allowed', method)
            return self._xml(self._lpar_entry(lpar))
        if method == 'GET':
            if operation not in ('Migrate', 'MigrateValidate', 'MigrateAbort',
                                 'MigrateRecover'):
                raise model.RestError(404, 'Not Found', f'no job {operation}')
            return self._xml(docs.job_request(operation))
        if method != 'PUT':
            raise model.RestError(405, 'Method Not Allowed', method)
        try:
            request = ET.fromstring(body)
        except ET.ParseError as exc:
            raise model.RestError(400, 'Bad Request', str(exc)) from exc
        named = request.findtext(f'{{{docs.WEB}}}RequestedOperation/'
                                 f'{{{docs.WEB}}}OperationName')
        if named != operation:
            raise model.RestError(400, 'Bad Request', f'JobRequest names '
                                  f'{named!r}, the path {operation!r}')
        job = self.nl.submit(lpar, operation, request, path,
                             docs.job_parameters(request))
        self._xml(self._job_entry(job))

    def _job_entry(self, job: model.Job) -> ET.Element:
        status, message = self.nl.status(job)
        completed = 0 if job.completed is None else int(job.completed * 1000)
        return docs.job_response(
            self.base, job_id=job.job_id, request_path=job.request_path,
            target_uuid=job.lpar.uuid, request=job.request, status=status,
            started_ms=int(job.started * 1000), completed_ms=completed,
            message=message)

    def _system(self, method: str, path: str, body: bytes,
                sys_uuid: str | None) -> None:
        if method != 'GET':
            raise model.RestError(405, 'Method Not Allowed', method)
        with self.nl.lock:
            systems = dict(self.nl.systems)
        if sys_uuid is None:
            return self._xml(docs.feed(
                'managedsystem.txt', self.base, 'uom/ManagedSystem',
                [docs.managed_system_entry(self.base, uuid=u, name=n)
                 for u, n in systems.items()]))
        if sys_uuid not in systems:
            raise model.RestError(404, 'Not Found', f'no system {sys_uuid}')
        self._xml(docs.managed_system_entry(self.base, uuid=sys_uuid,
                                            name=systems[sys_uuid]))

    def _job(self, method: str, path: str, body: bytes, job_id: str,
             cancel: str | None) -> None:
        job = self.nl.job(job_id)
        if cancel:
            if method not in ('POST', 'PUT'):
                raise model.RestError(405, 'Method Not Allowed', method)
            self.nl.cancel(job)
            return self._send(204)
        if method == 'GET':
            return self._xml(self._job_entry(job))
        if method == 'DELETE':
            self.nl.delete(job)
            return self._send(204)
        raise model.RestError(405, 'Method Not Allowed', method)

    # -- test control (not the vendor's API) ----------------------------------

    def _json(self, data: object, status: int = 200) -> None:
        self._send(status, json.dumps(data).encode(), 'application/json')

    def _control(self, method: str, path: str, body: bytes) -> None:
        data = json.loads(body or b'{}')
        parts = path.strip('/').split('/')[1:]
        nl = self.nl
        if parts == ['systems'] and method == 'POST':
            return self._json({'uuid': nl.add_system(data['name'])})
        if parts == ['lpars'] and method == 'POST':
            lpar = nl.add_lpar(data['name'], data['system'],
                               **model.behaviour(data))
            return self._json({'uuid': lpar.uuid})
        if parts == ['sessions', 'expire'] and method == 'POST':
            nl.expire_sessions()
            return self._json({})
        if parts == ['outage'] and method == 'POST':
            with nl.lock:
                nl.outage_until = time.monotonic() + float(data['seconds'])
            return self._json({})
        if parts == ['requests'] and method == 'GET':
            with nl.lock:
                return self._json(list(nl.requests))
        if len(parts) >= 2 and parts[0] == 'lpars':
            lpar = nl.lpar(parts[1])
            if len(parts) == 2 and method == 'GET':
                view = nl.lpar_view(lpar)
                view['source'] = lpar.source
                job = lpar.migrate_job
                view['job'] = None if job is None else {
                    'id': job.job_id, 'status': nl.status(job)[0],
                    'deleted': job.deleted,
                    'task': job.task.state.value if job.task else None}
                return self._json(view)
            if parts[2:] == ['fail'] and method == 'POST':
                nl.fail(lpar, data.get('message', 'simulated failure'))
                return self._json({})
            if parts[2:] == ['behaviour'] and method == 'POST':
                with nl.lock:
                    for key, value in model.behaviour(data).items():
                        setattr(lpar, key, value)
                job = lpar.migrate_job
                if 'duration' in data and job is not None and job.task:
                    job.task.set_duration(lpar.duration)
                return self._json({})
        raise model.RestError(404, 'Not Found', f'no control {path}')


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, novalink: model.Novalink, port: int = 0, *,
                 mc_type: str = 'PVM', verbose: bool = False) -> None:
        super().__init__(('127.0.0.1', port), Handler)
        self.novalink, self.mc_type, self.verbose = novalink, mc_type, verbose
        self.scheme = 'http'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--port-file', required=True)
    parser.add_argument('--user', default='neo')
    parser.add_argument('--password-file', required=True)
    parser.add_argument('--mc-type', default='PVM', choices=('PVM', 'HMC'))
    parser.add_argument('--tls-cert', help='PEM certificate: serve https')
    parser.add_argument('--tls-key', help='PEM key of --tls-cert')
    parser.add_argument('--verbose', action='store_true')
    args = parser.parse_args(argv)
    with open(args.password_file, encoding='utf-8') as f:
        password = f.read().strip()
    server = Server(model.Novalink(args.user, password),
                    mc_type=args.mc_type, verbose=args.verbose)
    if args.tls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        server.scheme = 'https'
    tmp = args.port_file + '.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
        f.write(str(server.server_address[1]))
    os.rename(tmp, args.port_file)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == '__main__':
    sys.exit(main())
