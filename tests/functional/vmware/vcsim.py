"""govmomi's vcsim with the lmcaps extensions (tools/vcsim), for tests.

The program is built once per source hash from Debian's
golang-github-vmware-govmomi-dev in GOPATH mode, offline, into
``~/.cache/lmcaps/vcsim-<hash>/`` (``$LMCAPS_CACHE`` overrides the root),
then started on 127.0.0.1 on a free port with plain http and stopped by
PID.  Its datastores live in a private temp directory removed afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import fixtures

ROOT = Path(__file__).resolve().parents[3]
SOURCE = ROOT / 'tools' / 'vcsim'
GOVMOMI = Path('/usr/share/gocode/src/github.com/vmware/govmomi/simulator')
USERNAME = 'lmcaps'
PASSWORD = 'vcsim-Secret-42'


def available() -> tuple[bool, str]:
    """Whether vcsim can be built here, and why not."""
    if shutil.which('go') is None:
        return False, 'the Go toolchain (apt-get install golang-go)'
    if not GOVMOMI.is_dir():
        return False, ('govmomi sources (apt-get install '
                       'golang-github-vmware-govmomi-dev)')
    try:
        import oslo_vmware  # noqa: F401
    except ImportError:
        return False, 'oslo.vmware (pip install lmcaps[vmware])'
    return True, ''


def _cache() -> Path:
    root = Path(os.environ.get('LMCAPS_CACHE') or
                Path.home() / '.cache' / 'lmcaps')
    digest = hashlib.sha256()
    for path in sorted(SOURCE.glob('*.go')):
        digest.update(path.name.encode() + b'\0' + path.read_bytes())
    digest.update(subprocess.run(['go', 'version'], capture_output=True,
                                 check=True).stdout)
    return root / f'vcsim-{digest.hexdigest()[:16]}'


def build() -> tuple[Path, float]:
    """The vcsim binary (built if needed) and the seconds the build took."""
    out = _cache()
    binary = out / 'vcsim'
    if out.parent.is_dir():
        for stale in out.parent.glob('vcsim-*'):   # builds of older sources
            if stale != out:
                shutil.rmtree(stale, ignore_errors=True)
    if binary.exists():
        return binary, 0.0
    out.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix='lmcaps-gopath-') as gopath:
        env = dict(os.environ, GOPATH=f'{gopath}:/usr/share/gocode',
                   GO111MODULE='off', GOPROXY='off', GOFLAGS='',
                   GOCACHE=str(out / 'gocache'))
        tmp = out / f'vcsim.{os.getpid()}.tmp'
        proc = subprocess.run(['go', 'build', '-o', str(tmp), '.'],
                              cwd=SOURCE, env=env, capture_output=True,
                              text=True)
        if proc.returncode != 0:
            raise RuntimeError(f'go build of {SOURCE} failed:\n'
                               f'{proc.stderr[-3000:]}')
        os.replace(tmp, binary)
    shutil.rmtree(out / 'gocache', ignore_errors=True)
    return binary, time.monotonic() - began


def wsdl_dir(parent: str) -> Path:
    """tools/vcsim/wsdl/vimService.wsdl beside oslo.vmware's vim XSDs.

    Built under ``parent`` (the fixture's own temporary directory), so a
    run never sees links left by another checkout or virtualenv.
    """
    import oslo_vmware
    xsd = Path(oslo_vmware.__file__).parent / 'wsdl' / '8.0'
    out = Path(parent) / 'wsdl'
    out.mkdir()
    for name in ('vim-types.xsd', 'core-types.xsd', 'query-types.xsd',
                 'reflect-types.xsd'):
        (out / name).symlink_to(xsd / name)
    shutil.copyfile(SOURCE / 'wsdl' / 'vimService.wsdl',
                    out / 'vimService.wsdl')
    return out


class Vcsim(fixtures.Fixture):
    """One running vcsim; ``url`` is its SDK endpoint.

    :param relocate_time: seconds a RelocateVM_Task runs by default.
    :param cancelable: the default TaskInfo.cancelable.
    """

    def __init__(self, relocate_time: float = 5.0,
                 cancelable: bool = True, machines: int = 4) -> None:
        super().__init__()
        self.relocate_time = relocate_time
        self.cancelable = cancelable
        self.machines = machines
        self._turn = 0

    def _setUp(self) -> None:
        self.binary, self.build_seconds = build()
        self.tmp = tempfile.mkdtemp(prefix='lmcaps-vcsim-')
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.wsdl = (wsdl_dir(self.tmp) / 'vimService.wsdl').as_uri()
        url_file = Path(self.tmp) / 'url'
        began = time.monotonic()
        self.log = open(Path(self.tmp) / 'vcsim.log', 'wb')
        self.addCleanup(self.log.close)
        self.proc = subprocess.Popen(
            [str(self.binary), '-l', '127.0.0.1:0', '-url-file',
             str(url_file), '-username', USERNAME, '-password', PASSWORD,
             '-vm', str(self.machines), '-relocate-time', f'{self.relocate_time}s',
             f'-cancelable={str(self.cancelable).lower()}'],
            stdout=self.log, stderr=subprocess.STDOUT,
            env=dict(os.environ, TMPDIR=self.tmp), start_new_session=True)
        self.addCleanup(self.stop)
        deadline = time.monotonic() + 30
        while not url_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f'vcsim did not start: '
                                   f'{(Path(self.tmp) / "vcsim.log").read_text()}')
            time.sleep(0.02)
        self.url = url_file.read_text().strip()
        parsed = urllib.parse.urlparse(self.url)
        self.host, self.port = parsed.hostname, parsed.port
        self.base = f'http://{self.host}:{self.port}'
        self.inventory()  # answers
        self.start_seconds = time.monotonic() - began

    def stop(self) -> None:
        """SIGTERM by PID, SIGKILL after 5 s (idempotent)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    def kill(self) -> None:
        """SIGKILL now: vCenter lost."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    # -- the control endpoint (tools/vcsim/control.go) -----------------------

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(f'{self.base}{path}', timeout=10) as r:
            return json.load(r)

    def _post(self, path: str, body: dict) -> Any:
        req = urllib.request.Request(
            f'{self.base}{path}', data=json.dumps(body).encode(),
            headers={'Content-Type': 'application/json'}, method='POST')
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r)

    def inventory(self) -> dict:
        return self._get('/lmcaps-sim/inventory')

    def vm(self, ref: str) -> dict:
        return self._get(f'/lmcaps-sim/vm?ref={ref}')

    def task(self, ref: str) -> dict:
        return self._get(f'/lmcaps-sim/task?ref={ref}')

    def next_relocation(self, vm: str, duration: float, *,
                        cancelable: bool | None = None,
                        cancel_delay: float = 0.0,
                        complete_on_cancel: bool = False) -> None:
        body: dict[str, Any] = {'vm': vm, 'duration': duration,
                                'cancel_delay': cancel_delay,
                                'complete_on_cancel': complete_on_cancel}
        if cancelable is not None:
            body['cancelable'] = cancelable
        self._post('/lmcaps-sim/relocation', body)

    def set_cancelable(self, task: str, cancelable: bool) -> None:
        self._post('/lmcaps-sim/cancelable', {'task': task,
                                              'cancelable': cancelable})

    def fail(self, task: str) -> None:
        self._post('/lmcaps-sim/fail', {'task': task})

    def terminate_sessions(self) -> int:
        """End every other client's session with SessionManager
        .TerminateSession, from a session of our own; returns how many."""
        from oslo_vmware import api
        from oslo_vmware import vim_util
        own = api.VMwareAPISession(self.host, USERNAME, PASSWORD, 0, 0.1,
                                   scheme='http', port=self.port,
                                   wsdl_loc=self.wsdl, insecure=False)
        try:
            manager = own.vim.service_content.sessionManager
            listed = own.invoke_api(vim_util, 'get_object_property', own.vim,
                                    manager, 'sessionList')
            keys = [s.key for s in getattr(listed, 'UserSession', [])
                    if s.key != own._session_id]
            if keys:
                own.invoke_api(own.vim, 'TerminateSession', manager,
                               sessionId=keys)
            return len(keys)
        finally:
            own.logout()

    def pick(self) -> tuple[str, str, str]:
        """A VM of the cluster, its host and another host of the cluster
        (morefs); VMs are taken in turn."""
        inv = self.inventory()
        cluster = [h for h in inv['hosts'] if '_C0_' in h['name']]
        vms = sorted((v for v in inv['vms'] if '_C0_' in v['name']),
                     key=lambda v: v['name'])
        vm = vms[self._turn % len(vms)]
        self._turn += 1
        dest = next(h['ref'] for h in cluster if h['ref'] != vm['host'])
        return vm['ref'], vm['host'], dest

    def configure(self, conf: Any, group: str = 'lmcaps_vmware') -> None:
        """Point the vmware driver's options at this vcsim."""
        for name, value in (('host_ip', self.host), ('host_port', self.port),
                            ('host_scheme', 'http'),
                            ('host_username', USERNAME),
                            ('host_password', PASSWORD),
                            ('wsdl_location', self.wsdl),
                            ('task_poll_interval', 0.1),
                            ('api_retry_count', 0)):
            conf.set_override(name, value, group=group)
