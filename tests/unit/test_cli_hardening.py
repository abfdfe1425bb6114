"""Every malformed input is one line and exit 2; verdicts cannot be skipped."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import ddt
import fixtures
from oslotest import base as test_base

from lmcaps import events_sql
from lmcaps import validation
from tests.unit import test_cli

INSTANCE = test_cli.INSTANCE
CHECK = ('check', '--driver', 'fake', '--instance', INSTANCE)
LONG_NAME = 'web-frontend-production-eu-west-1-0042'


@ddt.ddt
class BadInputTest(test_cli.CLITestCase):

    def assertClean(self, code: int, err: str, fragment: str,
                    expected_code: int = 2) -> None:
        self.assertEqual(expected_code, code, err)
        lines = err.splitlines()
        self.assertEqual(1, len(lines), err[:2000])
        self.assertTrue(lines[0].startswith('lmcaps: error: '), lines[0])
        self.assertIn(fragment, lines[0])
        self.assertLess(len(lines[0]), 400, lines[0][:500])
        self.assertTrue(lines[0].isprintable(), ascii(lines[0]))

    @ddt.data(
        ('deep', ('--request', '[' * 10000 + ']' * 10000), 'nested deeper'),
        ('deep_obj', ('--request', '{"a": ' * 50 + '1' + '}' * 50),
         'nested deeper'),
        ('huge', ('--request', '"' + 'x' * (1 << 20) + '"'), 'longer than'),
        ('ram_digits', ('--ram-mib', '9' * 400), '--ram-mib'),
        ('ram_negative', ('--ram-mib', '-5'), 'from 0 to'),
        ('ram_text', ('--ram-mib', 'lots'), 'from 0 to'),
        ('reqid_long', ('--request-id', 'r' * 300), 'request id'),
        ('reqid_bidi', ('--request-id', 'req\u202e-1'), 'request id'),
        ('timeout_digits', ('--completion-timeout', '9' * 400),
         'out of range'),
        ('action_huge', ('--timeout-action', 'x\u202e\x00' * 100000),
         'is not allowed'),
    )
    @ddt.unpack
    def test_check_arguments(self, _label: str, args: tuple,
                             fragment: str) -> None:
        code, _out, err = self.lmcaps(*CHECK, *args)
        self.assertClean(code, err, fragment)

    @ddt.data(('empty', ''), ('padded', ' padded '), ('nul', 'nul\x00'),
              ('bidi', 'bidi\u202e'), ('long', 'x' * 256))
    @ddt.unpack
    def test_invalid_instance_names(self, _label: str, name: str) -> None:
        code, _out, err = self.lmcaps('check', '--driver', 'fake',
                                      '--instance', name)
        self.assertClean(code, err, 'Invalid --instance')
        code, _out, err = self.lmcaps('events', name)
        self.assertClean(code, err, 'Invalid INSTANCE')

    @ddt.data(('tab', '--dest', 'a\tb'), ('escape', '--dest', 'x\x1b[31mRED'),
              ('long', '--dest', 'x' * 256),
              ('uri_nul', '--migrate-uri', 'tcp://h\x00'))
    @ddt.unpack
    def test_invalid_destinations(self, _label: str, option: str,
                                  value: str) -> None:
        argv = ['migrate', 'dom', '--driver', 'fake', '--dest', 'dst']
        if option == '--dest':
            argv[-1] = value
        else:
            argv += [option, value]
        code, _out, err = self.lmcaps(*argv)
        self.assertClean(code, err, f'Invalid {option}')

    @ddt.data((('migrate', 'vm1'), 'required: --dest', 'lmcaps help migrate'),
              (('report', '-f', 'xml'), "invalid choice: 'xml'",
               'lmcaps help report'),
              (('migrate', 'vm1', '--dest', 'd', '--bandwidth', '0'),
               'an integer from 1 to', 'lmcaps help migrate'),
              (('db', 'upgrade', '--bogus'), 'unrecognized arguments',
               'lmcaps help db upgrade'),
              (('events', 'x', '--long', '--request-id'),
               'argument --request-id: expected one argument',
               'lmcaps help events'),
              (('report', '-f', 'x\x1b[31m'), 'x\\x1b[31m',
               'lmcaps help report'),
              (('--log-file',), 'argument --log-file', 'lmcaps --help'))
    @ddt.unpack
    def test_usage_errors_are_one_line(self, argv: tuple[str, ...],
                                       fragment: str, hint: str) -> None:
        # argparse would print the whole usage first
        code, out, err = self.lmcaps(*argv)
        self.assertClean(code, err, fragment)
        self.assertTrue(err.endswith(f' (see: {hint})\n'), err)
        self.assertEqual('', out)

    @ddt.data((('nosuchcmd',), "Invalid command 'nosuchcmd'"),
              (('evnets', 'x'), "Invalid command 'evnets'; allowed: check, "),
              (('db',), "(did you mean db upgrade or db version"),
              (('--bogus', 'report'), "Invalid command '--bogus'"))
    @ddt.unpack
    def test_unknown_command_is_one_line(self, argv: tuple[str, ...],
                                         fragment: str) -> None:
        code, out, err = self.lmcaps(*argv)
        self.assertClean(code, err, fragment)
        self.assertIn('db upgrade, db version, drain, events', err)
        self.assertEqual('', out)

    def test_help_still_shows_the_usage(self) -> None:
        code, out, _err = self.lmcaps('help', 'migrate')
        self.assertEqual(0, code)
        self.assertTrue(out.startswith('usage: lmcaps migrate '), out[:200])

    def test_source_host_as_destination(self) -> None:
        # CLITestCase's [lmcaps] host is cli-host; drain refuses it the same
        code, _out, err = self.lmcaps('migrate', 'dom', '--driver', 'fake',
                                      '--dest', 'cli-host')
        self.assertClean(code, err, 'Invalid --dest')
        self.assertIn('a host other than the source (cli-host)', err)
        self.assertEqual('\n', self.lmcaps('events', 'dom')[1])

    def test_long_name_is_recorded_under_its_uuid_with_the_name(self) -> None:
        code, _out, err = self.lmcaps('check', '--driver', 'fake',
                                      '--instance', LONG_NAME,
                                      '--request-id', 'req-long')
        self.assertEqual(0, code, err)
        rows = self.json_out('events', LONG_NAME)
        self.assertEqual(1, len(rows), rows)
        self.assertTrue(rows[0]['Details'].startswith(
            f'instance: {LONG_NAME}'), rows[0])
        store = events_sql.SQLEventStore(
            f'sqlite:///{self.dir}/state/lmcaps-events.sqlite')
        self.addCleanup(store.close)
        [ev] = store.list_events(validation.instance_key(LONG_NAME))
        self.assertEqual('req-long', ev.request_id)

    def test_relative_backend(self) -> None:
        code, _out, err = self.lmcaps('conformance', 'fake', '--backend',
                                      '.relative:Backend', '--no-save')
        self.assertClean(code, err, 'not module:Class')

    def test_bad_bandwidth_is_refused_without_overflow(self) -> None:
        code, _out, err = self.lmcaps('migrate', 'dom', '--dest', 'x://h',
                                      '--driver', 'fake',
                                      '--bandwidth', '9' * 400)
        self.assertEqual(2, code, err)
        self.assertIn('allowed: an integer from 1', err)
        self.assertNotIn('9' * 100, err)


@ddt.ddt
class ConfigFileTest(test_cli.CLITestCase):

    def run_with(self, path: str) -> tuple[int, str]:
        code, _out, err = self.lmcaps_config(path, 'report')
        return code, err

    def lmcaps_config(self, path: str, *argv: str) -> tuple[int, str, str]:
        self.config = path
        return self.lmcaps(*argv)

    def assertRefused(self, path: str, fragment: str) -> None:
        code, err = self.run_with(path)
        self.assertEqual(2, code, err)
        self.assertEqual(1, len(err.splitlines()), err[:2000])
        self.assertIn(fragment, err)

    def test_directory(self) -> None:
        self.assertRefused(self.dir, 'is a directory')

    def test_device(self) -> None:
        self.assertRefused('/dev/zero', 'not a regular file')

    def test_binary_file(self) -> None:
        path = os.path.join(self.dir, 'bin.conf')
        with open(path, 'wb') as f:
            f.write(b'[lmcaps]\n\x00\x01\x02' * 10)
        self.assertRefused(path, 'not a text file')

    def test_too_large(self) -> None:
        path = os.path.join(self.dir, 'big.conf')
        with open(path, 'w') as f:
            f.write('# ' + 'x' * (2 << 20) + '\n')
        self.assertRefused(path, 'larger than')

    def test_byte_order_mark(self) -> None:
        path = os.path.join(self.dir, 'bom.conf')
        with open(path, 'w', encoding='utf-8-sig') as f:
            f.write('[lmcaps]\ndriver = fake\n')
        self.assertRefused(path, 'starts with a byte order mark (BOM)')

    @ddt.data(('first_line', 'driver = fake\n[lmcaps]\n', 1),
              ('after_comments', '# lmcaps\n\n; x\nhost = h\n', 4))
    @ddt.unpack
    def test_option_before_any_section(self, _label: str, text: str,
                                       line: int) -> None:
        path = os.path.join(self.dir, 'nosection.conf')
        with open(path, 'w') as f:
            f.write(text)
        self.assertRefused(path, f'(line {line}) sets an option before any '
                                 'section; allowed: a [section] line first')

    def test_comments_before_the_first_section(self) -> None:
        path = os.path.join(self.dir, 'commented.conf')
        with open(path, 'w') as f:
            f.write(f'# lmcaps\n\n; other\n[lmcaps]\ndriver = fake\n'
                    f'state_path = {self.dir}\n')
        code, err = self.run_with(path)
        self.assertEqual(0, code, err)

    def write(self, text: str) -> str:
        path = os.path.join(self.dir, 'c.conf')
        with open(path, 'w') as f:
            f.write(textwrap.dedent(text).format(state=self.dir))
        return path

    @ddt.data(
        ('min_max', '[lmcaps]\nmin_completion_timeout = 600\n'
         'max_completion_timeout = 60\n', 'is larger than'),
        ('misspelt', '[lmcaps]\nmax_completion_timout = 60\n',
         'unknown option [lmcaps] max_completion_timout'),
        ('no_checks', '[lmcaps]\nenabled_checks =\n',
         'enabled_checks is empty'),
        ('nan', '[lmcaps]\nmonitor_poll_interval = nan\n', 'finite'),
        ('inf', '[lmcaps]\ndriver_call_timeout = inf\n',
         'allowed: a finite number from 0.1 to 3600'),
        ('int_nan', '[lmcaps]\ncompletion_timeout_per_gib = nan\n',
         'allowed: an integer >= 0'),
        ('bool', '[lmcaps]\npermit_post_copy = maybe\n',
         'allowed: true or false'),
        ('choice', '[lmcaps_fake]\nabort = sometimes\n',
         'allowed: complete, partial, missing, unknown'),
        ('section', '[lmcaps_fakee]\nabort = complete\n',
         'unknown section [lmcaps_fakee]'),
        ('host', '[lmcaps]\nhost = ' + 'h' * 300 + '\n', '[lmcaps] host'),
        ('option', '[lmcaps_fake]\nabrot = complete\n',
         'did you mean abort?'),
    )
    @ddt.unpack
    def test_whole_configuration_validated(self, _label: str, text: str,
                                           fragment: str) -> None:
        path = self.write('[DEFAULT]\n' + text +
                          '\n[lmcaps]\nstate_path = {state}\n')
        self.assertRefused(path, fragment)

    def test_other_projects_sections_are_left_alone(self) -> None:
        path = self.write('[nova]\nanything = 1\n[lmcaps]\n'
                          'state_path = {state}\ndriver = fake\n')
        code, err = self.run_with(path)
        self.assertEqual(0, code, err)


class VerdictTest(test_cli.CLITestCase):
    """A backend that exits never yields a pass."""

    def setUp(self) -> None:
        super().setUp()
        pkg = self.useFixture(fixtures.TempDir()).path
        with open(os.path.join(pkg, 'lmcaps_exit_backend.py'), 'w') as f:
            f.write(textwrap.dedent('''
                from lmcaps.conformance import fake

                class ExitsOnStart(fake.FakeBackend):
                    def start(self, *args, **kwargs):
                        raise SystemExit(0)

                class ExitsAtSetUp(fake.FakeBackend):
                    def _setUp(self):
                        raise SystemExit(0)

                class Interrupted(fake.FakeBackend):
                    def _setUp(self):
                        raise KeyboardInterrupt()

                def exits_when_made(*args, **kwargs):
                    raise SystemExit(0)
                exits_when_made.faults = frozenset()
            '''))
        self.useFixture(fixtures.MonkeyPatch('sys.path', [pkg] + sys.path))
        self.addCleanup(sys.modules.pop, 'lmcaps_exit_backend', None)

    def test_backend_that_exits_fails(self) -> None:
        for name in ('ExitsOnStart', 'ExitsAtSetUp', 'Interrupted',
                     'exits_when_made'):
            code, out, err = self.lmcaps(
                'conformance', 'fake', '--backend',
                f'lmcaps_exit_backend:{name}', '--no-save', '-f', 'value',
                '-c', 'Verdict')
            self.assertEqual(1, code, (name, err))
            self.assertIn('failed', out.split(), (name, out))
            self.assertNotIn('verified', out.split(), (name, out))


class LaterSignalsTest(test_base.BaseTestCase):
    """After the first SIGTERM/SIGINT, later ones change nothing: the
    abort goes on, the outcome is printed and the exit code is 3."""

    def _run(self, sig: int, fake: str = '',
             timeout: str = '60') -> tuple[int, str]:
        import time
        state = self.useFixture(fixtures.TempDir()).path
        conf = os.path.join(state, 'lmcaps.conf')
        with open(conf, 'w') as f:
            f.write(f'[lmcaps]\nstate_path = {state}\ndriver = fake\n'
                    'monitor_poll_interval = 0.05\n'
                    '[lmcaps_fake]\ndirty_rate_mib = 2000\n' + fake)
        proc = subprocess.Popen(
            [sys.executable, '-m', 'lmcaps', '--config-file', conf,
             'migrate', 'vm1', '--dest', 'other', '--completion-timeout',
             timeout, '--timeout-action', 'abort'],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # started and watched once the first progress line is printed
        first = proc.stderr.readline()
        self.assertIn('vm1: precopy', first)
        proc.send_signal(sig)
        for _ in range(60):         # keep signalling for 3 s
            time.sleep(0.05)
            if proc.poll() is not None:
                break
            proc.send_signal(sig)
        _out, err = proc.communicate(timeout=60)
        return proc.returncode, first + err

    def test_repeated_sigterm(self):
        import signal
        code, err = self._run(signal.SIGTERM)
        self.assertEqual(3, code, err)
        self.assertIn('aborted (interrupted by SIGTERM)', err)

    def test_sigint_before_anything_started(self):
        import signal
        code, err = self._stopped_before_anything_started(signal.SIGINT)
        self.assertEqual(130, code, err)
        self.assertEqual('lmcaps: error: interrupted by SIGINT\n', err)

    def _entry_interrupted_in(self, target, attribute):
        """Run the console script with ``target.attribute`` raising
        KeyboardInterrupt; returns (exit code, stderr)."""
        import io
        from unittest import mock

        from lmcaps.cmd import entry
        self.useFixture(fixtures.MockPatchObject(entry, '_guard_signals'))
        err = io.StringIO()
        with mock.patch.object(target, attribute,
                               side_effect=KeyboardInterrupt), \
                mock.patch.object(sys, 'stderr', err):
            code = entry.main()
        return code, err.getvalue()

    def test_sigint_while_the_command_line_loads(self):
        """Ctrl-C while the console script imports cliff and the
        commands: the one-line error and 130, no traceback."""
        import importlib
        code, err = self._entry_interrupted_in(importlib, 'import_module')
        self.assertEqual(130, code)
        self.assertEqual('lmcaps: error: interrupted by SIGINT\n', err)

    def test_sigint_while_the_commands_are_loaded(self):
        from lmcaps.cmd import main
        code, err = self._entry_interrupted_in(main.LmcapsApp, '__init__')
        self.assertEqual(130, code)
        self.assertEqual('lmcaps: error: interrupted by SIGINT\n', err)

    def test_sigint_while_options_are_parsed(self):
        """cliff answers 130 silently for a Ctrl-C before the command
        runs; lmcaps says why."""
        import io
        from unittest import mock

        from lmcaps.cmd import main
        err = io.StringIO()
        with mock.patch.object(main.LmcapsApp, 'initialize_app',
                               side_effect=KeyboardInterrupt), \
                mock.patch.object(sys, 'stderr', err), \
                mock.patch.object(sys, 'stdout', io.StringIO()):
            code = main.main(['report'])
        self.assertEqual(130, code)
        self.assertEqual('lmcaps: error: interrupted by SIGINT\n',
                         err.getvalue())

    def _stopped_before_anything_started(self, sig):
        state = self.useFixture(fixtures.TempDir()).path
        conf = os.path.join(state, 'lmcaps.conf')
        with open(conf, 'w') as f:
            f.write(f'[lmcaps]\nstate_path = {state}\n')
        proc = subprocess.Popen(
            [sys.executable, '-c',
             'import os, signal, sys, time\n'
             # as from a terminal: a shell's background job inherits
             # SIGINT ignored, and Python then keeps it ignored
             'signal.signal(signal.SIGINT, signal.default_int_handler)\n'
             # and SIGHUP/SIGTERM at their defaults: under nohup SIGHUP is
             # ignored, and lmcaps rightly leaves an ignored signal alone
             'signal.signal(signal.SIGHUP, signal.SIG_DFL)\n'
             'signal.signal(signal.SIGTERM, signal.SIG_DFL)\n'
             'from lmcaps.cmd import entry\n'
             'from lmcaps.cmd import report\n'
             'def stop(*_a, **_k):\n'
             f'    os.kill(os.getpid(), {int(sig)})\n'
             # Python runs the handler at a later check of the main
             # thread: wait for it here, as a command waiting on I/O would
             '    for _ in range(500):\n'
             '        time.sleep(0.01)\n'
             '    raise SystemExit("signal not delivered")\n'
             'report.Report.take_action = stop\n'
             'sys.exit(entry.main())\n',
             '--config-file', conf, 'report'],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=state)
        _out, err = proc.communicate(timeout=60)
        return proc.returncode, err

    def test_sigterm_before_anything_started(self):
        import signal
        code, err = self._stopped_before_anything_started(signal.SIGTERM)
        self.assertEqual(143, code, err)
        self.assertEqual('lmcaps: error: interrupted by SIGTERM\n', err)

    def test_sighup_before_anything_started(self):
        import signal
        code, err = self._stopped_before_anything_started(signal.SIGHUP)
        self.assertEqual(129, code, err)
        self.assertEqual('lmcaps: error: interrupted by SIGHUP\n', err)

    def test_sigterm_where_the_driver_cannot_abort(self):
        """The abort is declared missing: exit 5 at once, saying why, and
        no "aborting" line."""
        import signal
        code, err = self._run(signal.SIGTERM, fake='abort = missing\n',
                              timeout='0')
        self.assertEqual(5, code, err)
        self.assertIn('vm1: interrupted (SIGTERM) and driver fake cannot '
                      'abort here', err)
        self.assertNotIn('aborting', err)
        self.assertNotIn('post-copy', err)

    def test_repeated_sigint(self):
        import signal
        code, err = self._run(signal.SIGINT)
        self.assertEqual(3, code, err)
        self.assertIn('aborted (interrupted by SIGINT)', err)
