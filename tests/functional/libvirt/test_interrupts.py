"""``lmcaps migrate`` stopped by a signal, and ``lmcaps watch``, on real
libvirtd + QEMU.

What systemd, ``timeout`` and orchestrators send is SIGTERM (SIGHUP when a
terminal goes away): the running libvirt job must be aborted through the
monitor, with an outcome line and exit code 3.  SIGKILL leaves nothing to
react, so ``lmcaps watch`` re-attaches to the job from the event store and
aborts it at the *original* deadline.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import fixtures

import libvirt

from lmcaps import events
from lmcaps import events_sql
from lmcaps import migrate
from lmcaps import registry
from lmcaps.drivers import base
from tests.functional.libvirt import test_scenarios

RUNNING = libvirt.VIR_DOMAIN_RUNNING


class _CommandBase(test_scenarios._Base):

    def conf_file(self, **extra: str) -> str:
        self.state = self.useFixture(fixtures.TempDir()).path
        path = os.path.join(self.state, 'lmcaps.conf')
        lines = ''.join(f'{k} = {v}\n' for k, v in extra.items())
        with open(path, 'w') as f:
            f.write(f'[lmcaps]\nstate_path = {self.state}\ndriver = libvirt\n'
                    f'monitor_poll_interval = 0.2\n{lines}'
                    f'[lmcaps_libvirt]\nconnection_uri = {self.pair.src_uri}\n')
        return path

    def spawn(self, conf_file: str, *args: str) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, '-m', 'lmcaps', '--config-file', conf_file,
             *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        self.addCleanup(self._reap, proc)
        return proc

    def communicate(self, proc: subprocess.Popen,
                    timeout: float) -> tuple[str, str]:
        """Output of a process that must end within ``timeout`` s (else the
        test fails showing what it printed)."""
        try:
            return proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            self.fail(f'{proc.args[3:]} still running after {timeout} s; '
                      f'stdout: {out[-2000:]}; stderr: {err[:6000]} ... {err[-2000:]}')

    @staticmethod
    def _reap(proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()

    def migrate(self, conf_file: str, name: str, timeout: int,
                *extra: str) -> subprocess.Popen:
        return self.spawn(conf_file, 'migrate', name, '--dest',
                          self.pair.dst_uri, '--migrate-uri',
                          self.pair.dst_migrate_uri, '--bandwidth', '1',
                          '--completion-timeout', str(timeout),
                          '--timeout-action', 'abort', '-f', 'json', *extra)

    def wait_sending(self, name: str, proc: subprocess.Popen) -> float:
        """Wait until the source QEMU sends data; returns when (monotonic)."""
        deadline = time.monotonic() + 60
        while True:
            self.assertIsNone(proc.poll(), 'lmcaps migrate ended early')
            dom = self.pair._lookup('src', name)
            try:
                stats = dom.jobStats() if dom is not None else {}
            except libvirt.libvirtError:
                stats = {}
            if stats.get('memory_processed', 0) > 0:
                return time.monotonic()
            self.assertLess(time.monotonic(), deadline, 'never sent data')
            time.sleep(0.05)

    def store(self) -> events_sql.SQLEventStore:
        store = events_sql.SQLEventStore(
            f'sqlite:///{self.state}/lmcaps-events.sqlite')
        self.addCleanup(store.close)
        return store

    def named(self, store, name: str, event: str) -> list:
        return [e for e in store.list_events(self.uuid(name))
                if e.event == event]


class SignalTest(_CommandBase):
    """SIGTERM and SIGHUP abort through the monitor, like Ctrl-C."""

    def _interrupt(self, sig: signal.Signals) -> None:
        name = self.guest()
        proc = self.migrate(self.conf_file(), name, 120)
        self.wait_sending(name, proc)
        sent = time.monotonic()
        proc.send_signal(sig)
        out, err = self.communicate(proc, 60)
        took = time.monotonic() - sent
        self.assertEqual(3, proc.returncode, err)
        summary = json.loads(out)
        self.assertEqual('aborted', summary['outcome'], summary)
        self.assertEqual('source (running)', summary['guest_on'])
        last = err.strip().splitlines()[-1]
        self.assertIn(f'{name}: aborted', last)
        self.assertLess(took, 30, 'the abort took too long')
        # observed, not inferred: the guest runs on the source only
        self.assertEqual('src', self.pair.where(name))
        self.assertEqual(RUNNING, self.pair.states(name)['src'][0])
        store = self.store()
        action = self.named(store, name, events.TIMEOUT_ACTION)
        self.assertEqual(1, len(action), action)
        self.assertIn(sig.name, action[0].details or '')
        self.assertIn('effective', action[0].details or '')
        outcome = self.named(store, name, events.OUTCOME)
        self.assertEqual(1, len(outcome), outcome)

    def test_sigterm_aborts_and_exits_3(self):
        self._interrupt(signal.SIGTERM)

    def test_sighup_aborts_and_exits_3(self):
        self._interrupt(signal.SIGHUP)


class WatchAfterKillTest(_CommandBase):
    """SIGKILL: nothing reacts; ``lmcaps watch`` enforces the deadline."""

    TIMEOUT = 12

    def test_watch_reattaches_and_aborts_at_the_original_deadline(self):
        name = self.guest()
        conf_file = self.conf_file()
        proc = self.migrate(conf_file, name, self.TIMEOUT)
        started = self.wait_sending(name, proc)
        store = self.store()
        # the watch record is written before the migration starts
        self.assertEqual(1, len(self.named(store, name, registry.WATCH)))
        proc.kill()
        proc.communicate(timeout=30)
        time.sleep(1.0)
        # nothing enforces it now; libvirtd still migrates
        dom = self.pair._lookup('src', name)
        self.assertGreater(dom.jobStats().get('memory_processed', 0), 0)
        watch = self.spawn(conf_file, 'watch', '-f', 'json', '--debug')
        out, err = self.communicate(watch, 120)
        ended = time.monotonic()
        self.assertEqual(3, watch.returncode, err)
        rows = json.loads(out)
        self.assertEqual(1, len(rows), rows)
        self.assertEqual('aborted', rows[0]['Outcome'])
        self.assertEqual('source (running)', rows[0]['Guest'])
        self.assertEqual('src', self.pair.where(name))
        self.assertEqual(RUNNING, self.pair.states(name)['src'][0])
        # the original deadline counts from the migration's start, not
        # from the watch's: it ended near TIMEOUT s after sending began
        self.assertLess(ended - started, self.TIMEOUT + 10)
        action = self.named(store, name, events.TIMEOUT_ACTION)
        self.assertEqual(1, len(action), action)
        self.assertIn('effective', action[0].details or '')
        detail = dict(part.split(': ', 1) for part in
                      (action[0].details or '').split('; ') if ': ' in part)
        elapsed = float(detail['elapsed'].split()[0])
        self.assertGreaterEqual(elapsed, self.TIMEOUT)
        self.assertLess(elapsed, self.TIMEOUT + 2.0)
        self.assertEqual(1, len(self.named(store, name, events.OUTCOME)))
        # and nothing is left to watch
        again = self.spawn(conf_file, 'watch')
        _, err = again.communicate(timeout=60)
        self.assertEqual(0, again.returncode, err)
        self.assertIn('no running migration to watch', err)


class SilentDestinationTest(test_scenarios._Base):
    """A destination that accepts TCP and never answers a word.

    The source libvirtd's peer-to-peer connection to it hangs before any
    data moves; an abort libvirt would accept then changes nothing.  No
    attempt may be recorded as a Success: each is refused or found
    ineffective, says why in its event, and is retried with backoff; once
    the destination goes away the migration fails and the guest is
    observed running on the source.
    """

    def setUp(self):
        super().setUp()
        self.listener = socket.create_server(('127.0.0.1', 0))
        self.addCleanup(self.listener.close)
        self.accepted: list[socket.socket] = []
        self.stop = threading.Event()
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self.addCleanup(self._close_all)

    def _accept(self) -> None:
        self.listener.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except (socket.timeout, OSError):
                continue
            self.accepted.append(conn)     # read nothing, answer nothing

    def _close_all(self) -> None:
        self.stop.set()
        self.listener.close()      # from now on: connection refused
        for conn in self.accepted:
            conn.close()

    def test_ineffective_abort_is_detected_never_success(self):
        self.setup_driver(timeout_action_effect_timeout=1.0,
                          timeout_action_backoff=0.2)
        name = self.guest()
        port = self.listener.getsockname()[1]
        spec = base.MigrationSpec(
            instance=name, destination=base.Destination(
                'silent', f'qemu+tcp://127.0.0.1:{port}/system'),
            bandwidth_mib=1)
        results: list = []

        def run() -> None:
            results.append(migrate.run(
                self.conf, self.driver, spec,
                {'completion_timeout': 1, 'timeout_action': 'abort'},
                self.store, progress_interval=0.2))

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        # past the deadline and several effect bounds: still hanging
        thread.join(8)
        self.assertTrue(thread.is_alive(), results)
        self.assertTrue(self.accepted, 'libvirtd never connected')
        self.assertEqual(RUNNING, self.pair.states(name)['src'][0])
        # the destination goes away: the migration fails
        self._close_all()
        thread.join(120)
        self.assertFalse(thread.is_alive(), 'lmcaps migrate never returned')
        [summary] = results
        self.assertNotEqual('aborted', summary.outcome)
        self.assertEqual('source (running)', summary.guest_on)
        self.assertEqual('src', self.pair.where(name))
        self.assertEqual(RUNNING, self.pair.states(name)['src'][0])
        fired = self.events_named(name, events.TIMEOUT_ACTION)
        self.assertTrue(fired)
        # every attempt said why it did nothing (libvirt accepts an abort
        # of a job still preparing but it changes nothing, so the driver
        # refuses it) and enforcement went on, with backoff
        self.assertGreaterEqual(len(fired), 3, fired)
        for event in fired:
            self.assertEqual(events.ERROR, event.result)
            self.assertRegex(event.details or '',
                             r'result: (refused|ineffective|timed out)')
            self.assertNotIn('result: effective', event.details or '')
        [outcome] = self.events_named(name, events.OUTCOME)
        self.assertNotEqual(events.SUCCESS, outcome.result)
