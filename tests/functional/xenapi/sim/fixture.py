"""A fixture running the xapi simulator as a child process on 127.0.0.1."""

from __future__ import annotations

import os
import secrets
import signal
import ssl
import subprocess
import sys
import time
import xmlrpc.client
from pathlib import Path

import fixtures

ROOT = Path(__file__).resolve().parents[4]


class XapiSim(fixtures.Fixture):
    """Starts ``tests.functional.xenapi.sim.server``; stops it by PID.

    Attributes once set up: ``url`` (http://127.0.0.1:PORT/), ``username``,
    ``password``, ``control`` (an xmlrpc ServerProxy for ``sim.*``), ``pid``,
    and a pool ``pool0`` with hosts ``src`` and ``dst`` (``src_host``,
    ``dst_host`` refs) and a second pool ``pool1`` with host ``remote``
    (``remote_host``).
    """

    def __init__(self, username: str = 'root', tls: bool = False) -> None:
        super().__init__()
        self.username = username
        self.password = secrets.token_hex(8)
        self.tls = tls
        #: with tls: the self-signed certificate (PEM) to verify against.
        self.ca_file = ''

    def _make_cert(self, tmp: str) -> str:
        pem = os.path.join(tmp, 'sim.pem')
        subprocess.run(
            ['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes',
             '-days', '1', '-subj', '/CN=127.0.0.1', '-addext',
             'subjectAltName=IP:127.0.0.1', '-keyout', pem, '-out', pem],
            check=True, capture_output=True, timeout=60)
        self.ca_file = pem
        return pem

    def _setUp(self) -> None:
        tmp = self.useFixture(fixtures.TempDir()).path
        port_file = os.path.join(tmp, 'port')
        env = dict(os.environ, XAPISIM_USERNAME=self.username,
                   XAPISIM_PASSWORD=self.password,
                   PYTHONPATH=str(ROOT))
        log = open(os.path.join(tmp, 'sim.log'), 'wb')
        self.addCleanup(log.close)
        argv = [sys.executable, '-m', 'tests.functional.xenapi.sim.server',
                '--port-file', port_file]
        if self.tls:
            argv += ['--cert', self._make_cert(tmp)]
        self.proc = subprocess.Popen(
            argv, cwd=str(ROOT), env=env,
            stdout=log, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        self.addCleanup(self._stop)
        deadline = time.monotonic() + 20
        while not os.path.exists(port_file):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError('the xapi simulator did not start: ' +
                                   Path(log.name).read_text()[-2000:])
            time.sleep(0.02)
        port = int(Path(port_file).read_text())
        scheme = 'https' if self.tls else 'http'
        self.url = f'{scheme}://127.0.0.1:{port}/'
        context = (ssl.create_default_context(cafile=self.ca_file)
                   if self.tls else None)
        self.control = xmlrpc.client.ServerProxy(self.url, allow_none=True,
                                                 context=context)
        self.src_host = self.control.sim.add_host('src', 'pool0')
        self.dst_host = self.control.sim.add_host('dst', 'pool0')
        self.remote_host = self.control.sim.add_host('remote', 'pool1')

    def _stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(5)

    def add_vm(self, name: str, memory: int = 2 * 1024 ** 3,
               host: str | None = None, **profile: float | bool) -> str:
        """A running VM on ``host`` (src); ``profile`` shapes its migration."""
        ref = self.control.sim.add_vm(name, host or self.src_host, str(memory))
        if profile:
            self.control.sim.set_profile(ref, profile)
        return ref
