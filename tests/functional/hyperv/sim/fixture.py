"""Start and stop the simulator process, and steer its model, for tests."""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import pathlib
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from typing import Any

import fixtures
import testtools

from tests import backend as test_backend

ROOT = pathlib.Path(__file__).resolve().parents[4]
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child: SIGTERM when the test process dies (no leftovers)."""
    try:
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


HOSTS = ('hv-src', 'hv-dst')
USERNAME = 'lmcaps-admin'
#: NTLM domain of the simulated hosts' local accounts.
DOMAIN = 'HV'


def require_client(test: testtools.TestCase) -> None:
    """Fail (CI) or skip loudly unless pywinrm >= 0.5 is installed."""
    try:
        from winrm import protocol
        ok = hasattr(protocol.Protocol, 'build_wsman_header')
        reason = 'pywinrm < 0.5 (no Protocol.build_wsman_header)'
    except ImportError as exc:
        ok, reason = False, f'pywinrm is not installed ({exc})'
    test_backend.require(test, ok, f'{reason}: pip install lmcaps[hyperv]')


class Simulator:
    """One simulator process: a WinRM listener per host on 127.0.0.1.

    :param hosts: the simulated hosts' names (DestinationHost values).
    :param tls: serve https with a certificate of a throwaway CA
        (:attr:`ca_path`).
    :param auth: the authentication schemes accepted (``basic``, ``ntlm``).
    """

    def __init__(self, hosts: tuple[str, ...] = HOSTS,
                 tls: bool = False,
                 auth: tuple[str, ...] = ('basic', 'ntlm')) -> None:
        self.hosts = hosts
        self.tls = tls
        self.auth = auth
        self.ca_path = ''
        self.username = USERNAME
        self.password = secrets.token_urlsafe(12)
        self.ports: dict[str, int] = {}
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir: str | None = None

    def start(self, timeout: float = 20.0) -> Simulator:
        self._dir = tempfile.mkdtemp(prefix='lmcaps-hypervsim-')
        port_file = os.path.join(self._dir, 'ports.json')
        users = os.path.join(self._dir, 'ntlm-users')
        with open(os.open(users, os.O_WRONLY | os.O_CREAT, 0o600),
                  'w') as out:
            out.write(f'{DOMAIN}:{self.username}:{self.password}\n')
        env = dict(os.environ, HYPERVSIM_PASSWORD=self.password,
                   PYTHONPATH=str(ROOT), NTLM_USER_FILE=users)
        tls_args: list[str] = []
        if self.tls:
            from tests.functional.hyperv.sim import tls
            self.ca_path, cert, key = tls.make(self._dir)
            tls_args = ['--tls-cert', cert, '--tls-key', key]
        self.proc = subprocess.Popen(
            [sys.executable, '-m', 'tests.functional.hyperv.sim.server',
             '--hosts', ','.join(self.hosts), '--username', self.username,
             '--port-file', port_file, '--remove-on-exit', self._dir,
             '--auth', ','.join(self.auth),
             *tls_args],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
            stdout=subprocess.DEVNULL, stderr=open(
                os.path.join(self._dir, 'stderr.log'), 'wb'))
        deadline = time.monotonic() + timeout
        while not os.path.exists(port_file):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = pathlib.Path(self._dir, 'stderr.log').read_text()
                self.stop()
                raise RuntimeError(f'the Hyper-V simulator did not start: '
                                   f'{log[-2000:]}')
            time.sleep(0.02)
        with open(port_file) as src:
            self.ports = json.load(src)
        return self

    def stop(self) -> None:
        """Stop the process by its PID and remove its files (idempotent)."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def endpoint(self, host: str) -> str:
        scheme = 'https' if self.tls else 'http'
        return f'{scheme}://127.0.0.1:{self.ports[host]}/wsman'

    def control(self, operation: str, **args: Any) -> Any:
        req = urllib.request.Request(
            self.endpoint(self.hosts[0]).replace(
                '/wsman', f'/lmcaps-sim/{operation}'),
            data=json.dumps(args).encode(), method='POST',
            headers={'Content-Type': 'application/json'})
        context = (ssl.create_default_context(cafile=self.ca_path)
                   if self.tls else None)
        with urllib.request.urlopen(req, timeout=10,
                                    context=context) as reply:
            return json.load(reply)

    # -- model helpers ------------------------------------------------------

    def add_vm(self, element_name: str, host: str | None = None,
               **behaviour: Any) -> str:
        """Create a running VM; returns its Name (GUID)."""
        return self.control('add_vm', host=host or self.hosts[0],
                            element_name=element_name, **behaviour)['name']

    def vm(self, name: str) -> dict[str, Any] | None:
        for vm in self.control('describe')['vms']:
            if vm['name'] == name:
                return vm
        return None

    def job(self, instance_id: str) -> dict[str, Any] | None:
        for job in self.control('describe')['jobs']:
            if job['instance_id'] == instance_id:
                return job
        return None

    def requests(self) -> dict[str, int]:
        return self.control('requests')


class SimulatorFixture(fixtures.Fixture):
    """A private simulator for one test (or test class)."""

    def _setUp(self) -> None:
        self.sim = Simulator().start()
        self.addCleanup(self.sim.stop)


_shared: Simulator | None = None
_shared_lock = threading.Lock()


def shared() -> Simulator:
    """The simulator shared by this test process, stopped at exit."""
    global _shared
    with _shared_lock:
        if _shared is None or _shared.proc is None or \
                _shared.proc.poll() is not None:
            _shared = Simulator().start()
            atexit.register(_shared.stop)
        return _shared
