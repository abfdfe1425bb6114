"""A TLS endpoint in front of vcsim, with a CA made for the test.

vcsim's own certificate is a 1024-bit one; this proxy terminates TLS with a
certificate for 127.0.0.1 signed by a throw-away CA (``openssl`` CLI) and
forwards the bytes to vcsim's plain-http port.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
from pathlib import Path

import fixtures


def make_ca(directory: str) -> tuple[Path, Path, Path]:
    """(ca.pem, server.pem, server.key) for 127.0.0.1, made with openssl."""
    d = Path(directory)

    def run(*args: str) -> None:
        subprocess.run(['openssl', *args], cwd=d, check=True,
                       capture_output=True)
    run('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2',
        '-subj', '/CN=lmcaps test CA', '-keyout', 'ca.key', '-out', 'ca.pem',
        '-addext', 'basicConstraints=critical,CA:TRUE',
        '-addext', 'keyUsage=critical,keyCertSign,cRLSign')
    run('req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=127.0.0.1',
        '-keyout', 'server.key', '-out', 'server.csr')
    (d / 'ext.cnf').write_text('subjectAltName=IP:127.0.0.1\n'
                               'extendedKeyUsage=serverAuth\n')
    run('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey',
        'ca.key', '-CAcreateserial', '-days', '2', '-out', 'server.pem',
        '-extfile', 'ext.cnf')
    return d / 'ca.pem', d / 'server.pem', d / 'server.key'


class TLSProxy(fixtures.Fixture):
    """127.0.0.1:<port> speaking TLS, forwarding to ``target`` (host, port)."""

    def __init__(self, target: tuple[str, int]) -> None:
        super().__init__()
        self.target = target

    def _setUp(self) -> None:
        if shutil.which('openssl') is None:
            raise RuntimeError('openssl is needed to make the test CA')
        tmp = tempfile.mkdtemp(prefix='lmcaps-tls-')
        self.addCleanup(shutil.rmtree, tmp, True)
        self.ca, cert, key = make_ca(tmp)
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        self.sock = socket.create_server(('127.0.0.1', 0))
        self.port = self.sock.getsockname()[1]
        self.addCleanup(self.sock.close)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,),
                             daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            tls = self.context.wrap_socket(client, server_side=True)
        except (ssl.SSLError, OSError):
            client.close()
            return
        upstream = socket.create_connection(self.target)
        threading.Thread(target=_pipe, args=(upstream, tls),
                         daemon=True).start()
        _pipe(tls, upstream)


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.close()
            except OSError:
                pass
