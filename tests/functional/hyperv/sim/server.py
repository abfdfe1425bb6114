"""The simulator's HTTP side: one WinRM listener per simulated host.

WinRM listens on ``POST /wsman`` (HTTP 5985 / HTTPS 5986) and takes SOAP
1.2 envelopes with ``Content-Type: application/soap+xml;charset=UTF-8``
([MS-WSMV] 2.1, transport).  A request without valid credentials gets
HTTP 401 with a ``WWW-Authenticate`` challenge per scheme the listener
accepts: ``Negotiate`` (NTLM here, then messages sealed as [MS-WSMV]
2.2.9.1.1 describes; see :mod:`.ntlm`) and ``Basic realm="WSMAN"``, which
Windows allows only when Basic (and, over http, AllowUnencrypted) is
enabled on the service, as for a test peer on the loopback.  A connection
authenticated by Negotiate stays authenticated; restarting the service
(``restart_service``) closes every connection and so every session.

``POST /lmcaps-sim/<operation>`` (JSON in, JSON out) controls the model for
tests: it is not WinRM and needs no credentials.

Run ``python -m tests.functional.hyperv.sim.server --port-file F`` (from
the repository root); the listeners bind 127.0.0.1 on free ports, written
as JSON ``{host: port}`` to F once they listen.  The password comes from
the environment (``HYPERVSIM_PASSWORD``), never from the command line.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hmac
import http.server
import json
import os
import shutil
import signal
import socket
import ssl
import sys
import threading
from typing import Any

from tests.functional.hyperv.sim import hyperv
from tests.functional.hyperv.sim import ntlm
from tests.functional.hyperv.sim import wsman

CONTROL = '/lmcaps-sim/'


class Credentials:
    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self.password = password

    def check(self, header: str | None) -> bool:
        if not header or not header.lower().startswith('basic '):
            return False
        try:
            user, _, password = base64.b64decode(
                header[6:].strip(), validate=True).decode('utf-8').partition(
                ':')
        except (binascii.Error, UnicodeDecodeError):
            return False
        return (hmac.compare_digest(user.encode(), self.username.encode()) &
                hmac.compare_digest(password.encode(),
                                    self.password.encode()))


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    # headers and body go out in two writes: without TCP_NODELAY the body
    # waits for the client's delayed ACK (40 ms on Linux)
    disable_nagle_algorithm = True
    server: Listener

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def setup(self) -> None:
        super().setup()
        self.ntlm: ntlm.Context | None = None   # this connection's context
        with self.server.lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.lock:
            self.server.connections.discard(self.connection)
        super().finish()

    def _reply(self, status: int, body: bytes, content_type: str,
               extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header('Content-Type', content_type)
        self.send_header('Content-Length', str(len(body)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        length = int(self.headers.get('Content-Length') or 0)
        body = self.rfile.read(length) if length else b''
        if self.path.startswith(CONTROL):
            self._control(self.path[len(CONTROL):], body)
            return
        if self.path.rstrip('/') != '/wsman':
            self._reply(404, b'', 'text/plain')
            return
        header = self.headers.get('Authorization') or ''
        scheme = header.split(None, 1)[0].lower() if header else ''
        if scheme in ntlm.SCHEMES and 'ntlm' in self.server.auth:
            if self.ntlm is None or self.ntlm.complete:
                self.ntlm = ntlm.Context()
            try:
                token = self.ntlm.step(header)
            except ntlm.AuthFailed:
                self.ntlm = None
                self._challenge()
                return
            if not self.ntlm.complete:
                self._reply(401, b'', 'text/plain', {
                    'WWW-Authenticate': f'Negotiate {token}'})
                return
        elif scheme == 'basic' and 'basic' in self.server.auth:
            if not self.server.credentials.check(header):
                self._challenge()
                return
        elif not (self.ntlm is not None and self.ntlm.complete):
            self._challenge()
            return
        encrypted = self.headers.get('Content-Type', '').startswith(
            'multipart/encrypted')
        if encrypted:
            if self.ntlm is None or not self.ntlm.complete:
                self._challenge()
                return
            try:
                body = self.ntlm.decrypt(body)
            except ntlm.AuthFailed:
                self.ntlm = None
                self._challenge()
                return
        if not body:
            # the empty POST a client sends to set up its security context
            self._reply(200, b'', 'application/soap+xml;charset=UTF-8')
            return
        self.server.requests += 1
        status, reply = self.server.service.handle(body)
        if encrypted:
            self._reply(status, self.ntlm.encrypt(reply),
                        ntlm.CONTENT_TYPE)
        else:
            self._reply(status, reply, 'application/soap+xml;charset=UTF-8')

    def _challenge(self) -> None:
        """401 naming the schemes this listener accepts (empty body)."""
        offers = []
        if 'ntlm' in self.server.auth:
            offers.append('Negotiate')
        if 'basic' in self.server.auth:
            offers.append('Basic realm="WSMAN"')
        self.send_response(401)
        for offer in offers:
            self.send_header('WWW-Authenticate', offer)
        self.send_header('Content-Length', '0')
        self.end_headers()

    def _control(self, operation: str, body: bytes) -> None:
        try:
            args = json.loads(body or b'{}')
            result = control(self.server.model, self.server.listeners,
                             operation, args, self.connection)
            self._reply(200, json.dumps(result).encode(), 'application/json')
        except (KeyError, ValueError, TypeError) as exc:
            self._reply(400, json.dumps({'error': repr(exc)}).encode(),
                        'application/json')


class Listener(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, model: hyperv.HostPair, host: str,
                 credentials: Credentials) -> None:
        super().__init__(('127.0.0.1', 0), Handler)
        self.model = model
        self.host = host
        self.credentials = credentials
        self.service = wsman.Service(model, host)
        self.requests = 0
        self.listeners: dict[str, Listener] = {}
        self.lock = threading.Lock()
        self.connections: set[socket.socket] = set()
        self.auth: tuple[str, ...] = ('basic',)

    def drop_connections(self, spare: socket.socket | None = None) -> int:
        """Close every client connection, as a restarted WinRM service does."""
        with self.lock:
            conns = [c for c in self.connections if c is not spare]
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        return len(conns)


def control(model: hyperv.HostPair, listeners: dict[str, Listener],
            operation: str, args: dict[str, Any],
            current: socket.socket | None = None) -> Any:
    """Carry out one control operation (see the module docstring)."""
    if operation == 'add_vm':
        vm = model.add_vm(args.pop('host'), args.pop('element_name'), **args)
        return {'name': vm.name}
    if operation == 'describe':
        return model.describe()
    if operation == 'fail_job':
        model.find_job(args['instance_id']).task.fail(
            args.get('message') or 'The virtual machine migration operation '
            'failed at the migration source.')
        return {}
    if operation == 'set_vm_state':
        with model.lock:
            model.vms[args['name']].enabled_state = int(args['enabled_state'])
        return {}
    if operation == 'set_job':
        task = model.find_job(args['instance_id']).task
        if 'cancellable_until' in args:
            task.cancellable_until = float(args['cancellable_until'])
        if 'seconds' in args:
            task.set_duration(float(args['seconds']))
        return {}
    if operation == 'set_credentials':
        for listener in listeners.values():
            listener.credentials.username = args['username']
            listener.credentials.password = args['password']
        return {}
    if operation == 'set_time_before_removal':
        model.time_before_removal = float(args['seconds'])
        return {}
    if operation == 'restart_service':
        # every client session is lost (not the control connection)
        return {host: lst.drop_connections(spare=current)
                for host, lst in listeners.items()}
    if operation == 'requests':
        return {host: lst.requests for host, lst in listeners.items()}
    raise KeyError(f'no control operation {operation!r}')


def serve(hosts: tuple[str, ...], username: str, password: str,
          context: ssl.SSLContext | None = None,
          auth: tuple[str, ...] = ('basic',)
          ) -> tuple[hyperv.HostPair, dict[str, Listener]]:
    """Start one listener per host in daemon threads; returns them.

    :param context: serve https (WinRM's HTTPS listener) with it.
    :param auth: the schemes accepted: ``basic``, ``ntlm`` (Negotiate).
    """
    model = hyperv.HostPair(hosts)
    listeners: dict[str, Listener] = {}
    for host in hosts:
        listener = Listener(model, host, Credentials(username, password))
        listener.auth = auth
        if context is not None:
            listener.socket = context.wrap_socket(listener.socket,
                                                  server_side=True)
        listeners[host] = listener
        listener.listeners = listeners
        threading.Thread(target=listener.serve_forever, daemon=True,
                         name=f'hypervsim-{host}').start()
    return model, listeners


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--hosts', default='hv-src,hv-dst')
    parser.add_argument('--username', default='lmcaps')
    parser.add_argument('--port-file', required=True)
    parser.add_argument('--tls-cert', help='serve https with this PEM '
                        'certificate (and --tls-key)')
    parser.add_argument('--tls-key')
    parser.add_argument('--auth', default='basic',
                        help='comma-separated schemes: basic, ntlm (NTLM '
                             'credentials from NTLM_USER_FILE)')
    parser.add_argument('--remove-on-exit', help='a directory of the '
                        'simulator\'s files, removed when it stops')
    args = parser.parse_args(argv)
    password = os.environ.get('HYPERVSIM_PASSWORD', '')
    context = None
    if args.tls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)
    _model, listeners = serve(tuple(args.hosts.split(',')), args.username,
                              password, context,
                              tuple(args.auth.split(',')))
    tmp = args.port_file + '.tmp'
    with open(tmp, 'w') as out:
        json.dump({h: lst.server_address[1] for h, lst in listeners.items()},
                  out)
    os.rename(tmp, args.port_file)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
    for listener in listeners.values():
        listener.shutdown()
        listener.server_close()
    if args.remove_on_exit:
        shutil.rmtree(args.remove_on_exit, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
