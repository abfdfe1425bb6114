"""A private PostgreSQL cluster on loopback, for the event-store tests.

``initdb`` into a temporary directory and ``postgres`` on 127.0.0.1 with a
free port and the socket in that directory; run as ``nobody`` when we are
root (PostgreSQL refuses to run as root); stopped by PID (fast shutdown,
SIGINT) and the directory removed.  The binaries are Debian's
(``/usr/lib/postgresql/<version>/bin``, package ``postgresql``), or those
on PATH, or ``$LMCAPS_PG_BINDIR``.

:func:`shared` starts one cluster per test process (stopped at exit);
:meth:`Cluster.new_database` gives each test an empty database.
"""

from __future__ import annotations

import atexit
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid

NOBODY = 65534
_LOCK = threading.Lock()
_SHARED: Cluster | None = None


def bindir() -> str | None:
    """Directory holding initdb and postgres, or None."""
    env = os.environ.get('LMCAPS_PG_BINDIR')
    candidates = ([env] if env else []) + sorted(
        glob.glob('/usr/lib/postgresql/*/bin'), reverse=True)
    for directory in candidates:
        if os.access(os.path.join(directory, 'initdb'), os.X_OK):
            return directory
    found = shutil.which('initdb')
    return os.path.dirname(found) if found else None


def available() -> tuple[bool, str]:
    """Whether a cluster can be started here, and why not."""
    if bindir() is None:
        return False, ('PostgreSQL server binaries (initdb, postgres) not '
                       'found: apt-get install postgresql')
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return False, "psycopg2 not installed: pip install -e '.[postgresql]'"
    return True, ''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class Cluster:
    """One running PostgreSQL server; ``url(db)`` gives SQLAlchemy URLs."""

    def __init__(self, max_connections: int = 400) -> None:
        self.max_connections = max_connections
        self.dir = ''
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.log_path = ''

    def _demote(self) -> dict:
        return {'user': NOBODY, 'group': NOBODY} if os.getuid() == 0 else {}

    def start(self) -> Cluster:
        bins = bindir()
        if bins is None:
            raise RuntimeError(available()[1])
        self.dir = tempfile.mkdtemp(prefix='lmcaps-pg-')
        os.chmod(self.dir, 0o700)
        if os.getuid() == 0:
            os.chown(self.dir, NOBODY, NOBODY)
        data = os.path.join(self.dir, 'data')
        subprocess.run(
            [os.path.join(bins, 'initdb'), '-D', data, '-A', 'trust',
             '-U', 'postgres', '--no-sync', '-E', 'UTF8', '--locale=C'],
            check=True, capture_output=True, cwd=self.dir, **self._demote())
        self.port = _free_port()
        self.log_path = os.path.join(self.dir, 'postgres.log')
        log = open(self.log_path, 'wb')
        self.proc = subprocess.Popen(
            [os.path.join(bins, 'postgres'), '-D', data, '-p', str(self.port),
             '-h', '127.0.0.1', '-k', self.dir, '-c', 'fsync=off',
             '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off',
             '-c', f'max_connections={self.max_connections}'],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.dir,
            start_new_session=True, **self._demote())
        log.close()
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 30.0) -> None:
        import psycopg2
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f'postgres exited: {self._log_tail()}')
            try:
                psycopg2.connect(host='127.0.0.1', port=self.port,
                                 user='postgres', dbname='postgres').close()
                return
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError('postgres did not accept connections '
                                       f'in {timeout} s: {self._log_tail()}')
                time.sleep(0.1)

    def _log_tail(self) -> str:
        try:
            with open(self.log_path, errors='replace') as f:
                return f.read()[-2000:]
        except OSError:
            return '(no log)'

    def admin(self):  # noqa: ANN201 - a psycopg2 connection, autocommit
        import psycopg2
        conn = psycopg2.connect(host='127.0.0.1', port=self.port,
                                user='postgres', dbname='postgres')
        conn.autocommit = True
        return conn

    def new_database(self, name: str | None = None) -> str:
        """Create an empty database; returns its name."""
        name = name or f'lmcaps_{uuid.uuid4().hex[:12]}'
        conn = self.admin()
        try:
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return name

    def drop_database(self, name: str) -> None:
        conn = self.admin()
        try:
            with conn.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            conn.close()

    def url(self, database: str, user: str = 'postgres',
            password: str | None = None) -> str:
        auth = f'{user}:{password}' if password else user
        return (f'postgresql+psycopg2://{auth}@127.0.0.1:{self.port}/'
                f'{database}')

    def terminate_backends(self, database: str) -> int:
        """``pg_terminate_backend`` every connection to ``database``."""
        conn = self.admin()
        try:
            with conn.cursor() as cur:
                cur.execute('SELECT count(pg_terminate_backend(pid)) FROM '
                            'pg_stat_activity WHERE datname = %s AND '
                            'pid <> pg_backend_pid()', (database,))
                return cur.fetchone()[0]
        finally:
            conn.close()

    def stop(self) -> None:
        """Fast shutdown by PID, then remove the directory."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = ''


def shared() -> Cluster:
    """The process's cluster, started on first use and stopped at exit."""
    global _SHARED
    with _LOCK:
        if _SHARED is None:
            _SHARED = Cluster().start()
            atexit.register(_SHARED.stop)
        return _SHARED
