"""Start the simulated NovaLink in a child process; stop it by its PID."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import fixtures

ROOT = Path(__file__).resolve().parents[4]


def pypowervm_available() -> tuple[bool, str]:
    """Whether pypowervm (client and recorded responses) is importable."""
    try:
        import pypowervm.adapter  # noqa: F401
        from tests.functional.powervm.sim import documents
        documents.recorded_body('fake_lpar_feed.txt')
    except Exception as exc:  # ImportError, missing data files
        return False, f'pypowervm: {type(exc).__name__}: {exc}'
    return True, ''


class NovalinkSim(fixtures.Fixture):
    """A simulated NovaLink REST server on 127.0.0.1, a free port.

    :ivar port: its port; :ivar username, password: its one account;
        :ivar source, target: uuids of its two managed systems (named
        :attr:`source_name`, :attr:`target_name`).
    """

    source_name = 'sim-source-sys'
    target_name = 'sim-target-sys'

    def __init__(self, username: str = 'neo', mc_type: str = 'PVM',
                 tls: bool = False) -> None:
        super().__init__()
        self.tls = tls
        self.ca_file: str | None = None
        self.username = username
        self.password = secrets.token_urlsafe(12)
        self.mc_type = mc_type
        self.proc: subprocess.Popen | None = None

    def _setUp(self) -> None:
        tmp = self.useFixture(fixtures.TempDir()).path
        port_file = os.path.join(tmp, 'port')
        pw_file = os.path.join(tmp, 'password')
        with open(pw_file, 'w', encoding='utf-8') as f:
            f.write(self.password)
        tls_args: list[str] = []
        if self.tls:
            tls_args = self._certificate(tmp)
        self.log_path = os.path.join(tmp, 'sim.log')
        log = open(self.log_path, 'wb')
        self.addCleanup(log.close)
        self.proc = subprocess.Popen(
            [sys.executable, '-m', 'tests.functional.powervm.sim',
             '--port-file', port_file, '--user', self.username,
             '--password-file', pw_file, '--mc-type', self.mc_type,
             *tls_args],
            cwd=str(ROOT), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True)
        self.addCleanup(self.stop)
        deadline = time.monotonic() + 30
        while not os.path.exists(port_file):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError('the NovaLink simulator did not start: ' +
                                   Path(self.log_path).read_text()[-2000:])
            time.sleep(0.02)
        self.port = int(Path(port_file).read_text())
        self.scheme = 'https' if self.tls else 'http'
        self.source = self.control('POST', 'systems',
                                   {'name': self.source_name})['uuid']
        self.target = self.control('POST', 'systems',
                                   {'name': self.target_name})['uuid']

    def _certificate(self, tmp: str) -> list[str]:
        """A self-signed certificate for 127.0.0.1 (openssl); its args."""
        openssl = shutil.which('openssl')
        if openssl is None:
            raise RuntimeError('openssl is needed for the https simulator')
        cert, key = os.path.join(tmp, 'cert.pem'), os.path.join(tmp, 'key.pem')
        subprocess.run(
            [openssl, 'req', '-x509', '-newkey', 'rsa:2048', '-nodes',
             '-keyout', key, '-out', cert, '-days', '2',
             '-subj', '/CN=127.0.0.1', '-addext',
             'subjectAltName=IP:127.0.0.1'],
            check=True, capture_output=True)
        self.ca_file = cert
        return ['--tls-cert', cert, '--tls-key', key]

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        """Stop the server by its PID (TERM, then KILL); safe twice."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()

    def control(self, method: str, path: str, data: dict | None = None
                ) -> dict:
        """Call the simulator's test-control endpoint ``/sim/<path>``."""
        req = urllib.request.Request(
            f'{self.scheme}://127.0.0.1:{self.port}/sim/{path}', method=method,
            data=json.dumps(data or {}).encode(),
            headers={'Content-Type': 'application/json'})
        context = None
        if self.ca_file:
            import ssl
            context = ssl.create_default_context(cafile=self.ca_file)
        with urllib.request.urlopen(req, timeout=10,
                                    context=context) as resp:
            return json.loads(resp.read() or b'{}')

    def add_lpar(self, name: str, **behaviour: object) -> str:
        """Create a running LPAR on the source system; returns its UUID."""
        return self.control('POST', 'lpars', dict(
            name=name, system=self.source, **behaviour))['uuid']

    def lpar(self, lpar_uuid: str) -> dict:
        """The model's view: migration_state, state, system, source, job."""
        return self.control('GET', f'lpars/{lpar_uuid}')
