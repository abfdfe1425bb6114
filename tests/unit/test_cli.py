"""Tests of the ``lmcaps`` command line, run in-process through main()."""

from __future__ import annotations

import configparser
import io
import json
import logging
import os
import subprocess
import sys
import uuid

import ddt
import fixtures
from oslotest import base as test_base

from lmcaps import capabilities as caps
from lmcaps import checks
from lmcaps import drivers
from lmcaps import events
from lmcaps import report
from lmcaps import validation
from lmcaps.cmd import main as cli_main
from tests.unit import test_report

INSTANCE = str(uuid.UUID(int=42))


class CLITestCase(test_base.BaseTestCase):
    """Runs ``main(argv)`` on a config file in a temporary directory."""

    def setUp(self) -> None:
        super().setUp()
        self.dir = self.useFixture(fixtures.TempDir()).path
        self.config = os.path.join(self.dir, 'lmcaps.conf')
        self.write_config()

    def write_config(self, **sections: dict[str, str]) -> None:
        """Write the config file: ``[lmcaps]`` defaults plus ``sections``."""
        parser = configparser.ConfigParser(interpolation=None)
        parser['lmcaps'] = {'state_path': os.path.join(self.dir, 'state'),
                            'driver': 'fake', 'host': 'cli-host'}
        for name, values in sections.items():
            parser.setdefault(name, {})
            parser[name].update(values)
        with open(self.config, 'w') as f:
            parser.write(f)

    def lmcaps(self, *argv: str) -> tuple[int, str, str]:
        """Run the command; returns (exit code, stdout, stderr)."""
        out, err = io.StringIO(), io.StringIO()
        with fixtures.MonkeyPatch('sys.stdout', out), \
                fixtures.MonkeyPatch('sys.stderr', err):
            code = cli_main.main(['--config-file', self.config, *argv])
        return code, out.getvalue(), err.getvalue()

    def json_out(self, *argv: str) -> list[dict]:
        code, out, err = self.lmcaps(*argv, '-f', 'json')
        self.assertEqual(0, code, err)
        return json.loads(out)


class ReportTest(CLITestCase):
    def test_json_lists_every_installed_driver_and_operation(self) -> None:
        rows = self.json_out('report')
        classes = drivers.driver_classes()
        self.assertEqual(
            {(name, op.value, cls.declare().support(op).value)
             for name, cls in classes.items() for op in caps.Operation},
            {(r['Driver'], r['Operation'], r['Support']) for r in rows})
        self.assertEqual(len(classes) * len(caps.Operation), len(rows))
        self.assertEqual(set(drivers.available()),
                         {r['Driver'] for r in rows})
        self.assertEqual(list(report.COLUMNS), list(rows[0]))

    def test_driver_filter(self) -> None:
        rows = self.json_out('report', '--driver', 'fake')
        self.assertEqual({'fake'}, {r['Driver'] for r in rows})
        self.assertEqual(len(caps.Operation), len(rows))

    def test_ini(self) -> None:
        code, out, err = self.lmcaps('report', '--ini')
        self.assertEqual((0, ''), (code, err))
        test_report.assert_ini_matches(self, out, report.declarations())

    def test_other_formats(self) -> None:
        code, out, _ = self.lmcaps('report', '--driver', 'fake', '-f', 'csv')
        self.assertEqual(0, code)
        self.assertEqual('"Driver","Operation","Support","Notes","Requires",'
                         '"Condition"', out.splitlines()[0])
        self.assertEqual(1 + len(caps.Operation), len(out.splitlines()))
        code, out, _ = self.lmcaps('report', '--driver', 'fake', '-f',
                                   'value', '-c', 'Operation')
        self.assertEqual([op.value for op in caps.Operation],
                         out.split())
        code, out, _ = self.lmcaps('report', '--driver', 'fake', '-f',
                                   'yaml')
        self.assertIn('Driver: fake', out)
        code, out, _ = self.lmcaps('report', '--driver', 'fake')
        self.assertIn('| Driver', out)

    def test_unknown_driver(self) -> None:
        code, out, err = self.lmcaps('report', '--driver', 'nope')
        self.assertEqual((2, ''), (code, out))
        self.assertEqual(["lmcaps: error: Unknown lmcaps driver 'nope'; "
                          f"installed drivers: "
                          f"{', '.join(drivers.available())}"],
                         err.splitlines())

    def test_help_lists_the_commands(self) -> None:
        code, out, err = self.lmcaps('--help')
        self.assertEqual(0, code, err)
        for name in ('check', 'events', 'report'):
            self.assertIn(f'\n  {name} ', out)

    def test_no_command_is_a_usage_error(self) -> None:
        code, out, err = self.lmcaps()
        self.assertEqual(2, code)
        self.assertEqual('lmcaps: error: no command given',
                         err.splitlines()[0])

    def test_log_handlers_are_removed(self) -> None:
        logger = logging.getLogger('lmcaps')
        before = (list(logger.handlers), logger.level)
        self.lmcaps('report')
        self.lmcaps('report', '--driver', 'nope')
        self.assertEqual(before, (list(logger.handlers), logger.level))


class CheckAndEventsTest(CLITestCase):
    def test_passing_check_records_success_event(self) -> None:
        code, out, err = self.lmcaps(
            'check', '--instance', INSTANCE, '--request-id', 'req-1',
            '--completion-timeout', '600', '--timeout-action', 'abort',
            '-f', 'json')
        self.assertEqual((0, ''), (code, err))
        verdicts = json.loads(out)
        self.assertEqual(['driver_support', 'post_copy', 'timeout_bounds'],
                         [v['Check'] for v in verdicts])
        self.assertEqual({'pass'}, {v['Result'] for v in verdicts})
        [ev] = self.json_out('events', INSTANCE)
        self.assertEqual(('req-1', events.PRECHECK, events.SUCCESS,
                          'cli-host'),
                         (ev['Request ID'], ev['Event'], ev['Result'],
                          ev['Host']))
        self.assertEqual(
            '3 lmcaps pre-checks passed\neffective policy: completion_timeout '
            '600s (request); timeout_action abort (request); '
            'force_complete_mode auto (config)', ev['Details'])
        self.assertTrue(ev['Finish Time'])

    def test_refused_check_exits_1_and_records_why(self) -> None:
        self.write_config(lmcaps_fake={'abort': 'missing'})
        code, out, err = self.lmcaps(
            'check', '--instance', INSTANCE, '--request-id', 'req-2',
            '--request', '{"completion_timeout": 60, '
                         '"timeout_action": "abort"}')
        self.assertEqual(1, code)
        self.assertIn('| driver_support | fail', out)
        [line] = err.splitlines()
        self.assertTrue(line.startswith(
            f'lmcaps: error: Live migration of {INSTANCE} refused: '
            'driver_support: '), line)
        self.assertIn('abort is missing for driver fake', line)
        [ev] = self.json_out('events', INSTANCE, '--long')
        self.assertEqual(('req-2', events.ERROR),
                         (ev['Request ID'], ev['Result']))
        self.assertIn('abort is missing for driver fake', ev['Details'])
        # A refusal is a verdict, not a crash: there is no traceback.
        self.assertIsNone(ev['Traceback'])
        [short] = self.json_out('events', INSTANCE)
        self.assertNotIn('Traceback', short)

    def test_refusal_evaluates_the_checks_once(self) -> None:
        self.write_config(lmcaps_fake={'abort': 'missing'})
        evaluate = self.useFixture(fixtures.MockPatchObject(
            checks.PreCheckRunner, 'evaluate', autospec=True,
            side_effect=checks.PreCheckRunner.evaluate)).mock
        code, out, _err = self.lmcaps(
            'check', '--instance', INSTANCE, '--request',
            '{"completion_timeout": 60, "timeout_action": "abort"}',
            '-f', 'json')
        self.assertEqual(1, code)
        self.assertEqual(1, evaluate.call_count)
        self.assertEqual({'driver_support': 'fail', 'post_copy': 'pass',
                          'timeout_bounds': 'pass'},
                         {v['Check']: v['Result'] for v in json.loads(out)})

    def test_crash_event_shows_its_traceback_with_long(self) -> None:
        self.useFixture(fixtures.MockPatchObject(
            checks.PreCheckRunner, 'evaluate',
            side_effect=RuntimeError('checks broke')))
        code, _out, err = self.lmcaps('check', '--instance', INSTANCE,
                                      '--request-id', 'req-3')
        self.assertEqual(1, code)
        self.assertIn('RuntimeError: checks broke', err)
        [ev] = self.json_out('events', INSTANCE, '--long')
        self.assertEqual((events.ERROR, 'checks broke'),
                         (ev['Result'], ev['Details']))
        self.assertTrue(ev['Traceback'].startswith(
            'Traceback (most recent call last):'), ev['Traceback'])
        self.assertTrue(ev['Traceback'].rstrip().endswith(
            'RuntimeError: checks broke'), ev['Traceback'])

    def test_events_filter_by_request(self) -> None:
        for req in ('req-a', 'req-b'):
            self.assertEqual(0, self.lmcaps('check', '--instance', INSTANCE,
                                            '--request-id', req)[0])
        rows = self.json_out('events', INSTANCE, '--request-id', 'req-b')
        self.assertEqual(['req-b'], [r['Request ID'] for r in rows])
        self.assertEqual([], self.json_out('events', str(uuid.uuid4())))

    def test_events_none_recorded_is_said_on_stderr(self) -> None:
        other = str(uuid.uuid4())
        code, out, err = self.lmcaps('events', other, '-f', 'json')
        self.assertEqual((0, []), (code, json.loads(out)))
        self.assertEqual(f"lmcaps: no events recorded for '{other}'\n", err)
        # a name is looked up under its key, which the line shows
        code, out, err = self.lmcaps('events', 'no-such-vm')
        self.assertEqual((0, ''), (code, out.strip()))  # cliff's empty table
        self.assertEqual("lmcaps: no events recorded for 'no-such-vm' (%s)\n"
                         % validation.instance_key('no-such-vm'), err)
        # echoed like any input: at most 64 characters
        code, out, err = self.lmcaps('events', 'v' * 200)
        self.assertEqual(0, code, err)
        self.assertIn("'%s... (200 characters)'" % ('v' * 64), err)
        self.assertEqual(0, self.lmcaps('check', '--instance', INSTANCE,
                                        '--request-id', 'req-a')[0])
        code, out, err = self.lmcaps('events', INSTANCE, '--request-id',
                                     'req-z', '-f', 'json')
        self.assertEqual((0, []), (code, json.loads(out)))
        self.assertEqual(f"lmcaps: no events recorded for '{INSTANCE}' with "
                         "request id 'req-z'\n", err)
        # events found: nothing on stderr
        code, out, err = self.lmcaps('events', INSTANCE, '-f', 'json')
        self.assertEqual((0, ''), (code, err))


class WatchTest(CLITestCase):
    def test_nothing_open(self) -> None:
        code, _out, err = self.lmcaps('watch')
        self.assertEqual((0, 'lmcaps: no running migration to watch on this '
                             'host\n'), (code, err))

    def test_gone_migration_is_said_once(self) -> None:
        """A killed ``migrate``'s migration the backend no longer has: its
        line, not also "no running migration"."""
        from oslo_config import cfg

        from lmcaps import conf as lmcaps_conf
        from lmcaps import events_sql
        from lmcaps import monitor
        from lmcaps import policy
        from lmcaps.drivers import base
        from lmcaps.drivers import fake
        conf = cfg.ConfigOpts()
        lmcaps_conf.register_opts(conf)
        conf(['--config-file', self.config], project='lmcaps')
        driver = fake.FakeDriver(conf)
        migration = driver.start_migration(base.MigrationSpec('vm-9', 'dst'))
        pol = policy.resolve(conf, 2.0, [('request', {
            'completion_timeout': 60})],
            declaration=driver.host_declaration())
        store = events_sql.SQLEventStore.from_conf(conf)
        self.addCleanup(store.close)
        key = validation.instance_key('vm-9')
        monitor.TimeoutMonitor(store, host='cli-host').watch(
            driver, migration, pol, instance_uuid=key, request_id='req-9',
            persist=True)
        self.addCleanup(fake._worlds.clear)
        fake._worlds.clear()                    # that process's world died
        code, out, err = self.lmcaps('watch', '-f', 'json')
        self.assertEqual(0, code, err)
        [row] = json.loads(out)
        self.assertEqual(('vm-9', 'gone', '-'),
                         (row['Instance'], row['Outcome'], row['Action']))
        self.assertIn('unknown', row['Guest'])
        [said] = err.splitlines()
        self.assertTrue(said.startswith('vm-9: '), said)
        self.assertIn('no longer exists on the backend', said)
        # and a row, for scripts
        fake._worlds.clear()
        self.assertEqual([], self.json_out('watch'))     # recorded: closed
        rows = self.json_out('events', 'vm-9')
        self.assertEqual(events.ERROR, rows[-1]['Result'])
        self.assertEqual(events.OUTCOME, rows[-1]['Event'])


@ddt.ddt
class BadInputTest(CLITestCase):
    """Every user error: one line on stderr, non-zero, no traceback."""

    def assertOneLineError(self, code: int, err: str, expected_code: int,
                           fragment: str) -> None:
        self.assertEqual(expected_code, code, err)
        lines = err.splitlines()
        self.assertEqual(1, len(lines), err)
        self.assertTrue(lines[0].startswith('lmcaps: error: '), lines[0])
        self.assertIn(fragment, lines[0])
        self.assertNotIn('Traceback', err)

    @ddt.data(
        (['--request', '{"completion_timeout": 60,'], 'not valid JSON'),
        (['--request', '[1]'], 'must be a JSON object'),
        (['--request', '{"completion_timeout": 60, "completion_timeout": 5}'],
         "not valid JSON: field 'completion_timeout' is given twice"),
        (['--request', '{"completion_timeout": 60, "colour": "red"}'],
         "unknown field(s) 'colour'"),
        (['--timeout-action', 'explode'],
         "timeout_action: 'explode' is not allowed; allowed values: abort, "
         "force_complete"),
        (['--force-complete-mode', 'fast'], "'fast' is not allowed"),
        (['--completion-timeout', 'soon'], 'must be of type integer'),
        (['--completion-timeout', '-5'], 'out of range'),
        (['--request', '{}', '--timeout-action', 'abort'],
         'give either --request or'),
        (['--driver', 'nope'], "Unknown lmcaps driver 'nope'"),
    )
    @ddt.unpack
    def test_bad_request_or_driver(self, args: list[str],
                                   fragment: str) -> None:
        code, out, err = self.lmcaps('check', '--instance', INSTANCE, *args)
        self.assertOneLineError(code, err, 2, fragment)
        self.assertEqual('', out)

    @ddt.data(
        ({'lmcaps': {'enabled_checks': 'driver_support,nope'}},
         "Unknown pre-check 'nope'", 2),
        ({'lmcaps': {'timeout_action': 'explode'}},
         "bad value for [lmcaps] timeout_action in {config}: Valid values "
         "are [abort, force_complete], but found 'explode'", 2),
        ({'lmcaps': {'completion_timeout_per_gib': 'lots'}},
         'bad value for [lmcaps] completion_timeout_per_gib in {config}', 2),
        ({'lmcaps_fake': {'abort': 'sometimes'}},
         "bad value for [lmcaps_fake] abort in {config}: Valid values are "
         "[complete, partial, missing, unknown], but found 'sometimes'", 2),
    )
    @ddt.unpack
    def test_bad_configuration(self, sections: dict, fragment: str,
                               expected: int) -> None:
        self.write_config(**sections)
        code, out, err = self.lmcaps('check', '--instance', INSTANCE)
        self.assertOneLineError(code, err, expected,
                                fragment.format(config=self.config))

    def test_bad_config_value_fails_every_command(self) -> None:
        self.write_config(lmcaps={'max_completion_timeout': '-1'})
        code, _, err = self.lmcaps('report')
        self.assertOneLineError(code, err, 2, 'max_completion_timeout')

    def test_missing_config_file(self) -> None:
        missing = os.path.join(self.dir, 'missing.conf')
        out, err = io.StringIO(), io.StringIO()
        with fixtures.MonkeyPatch('sys.stdout', out), \
                fixtures.MonkeyPatch('sys.stderr', err):
            code = cli_main.main(['--config-file', missing, 'report'])
        self.assertOneLineError(code, err.getvalue(), 2, missing)

    def test_unparsable_config_file(self) -> None:
        with open(self.config, 'w') as f:
            f.write('[lmcaps\nthis is not ini\n')
        code, _, err = self.lmcaps('report')
        self.assertOneLineError(code, err, 2, self.config)

    @ddt.data('corrupt', 'directory', 'parent-is-a-file')
    def test_unusable_event_store(self, how: str) -> None:
        path = os.path.join(self.dir, 'events.sqlite')
        if how == 'corrupt':
            with open(path, 'wb') as f:
                f.write(b'garbage' * 200)
            reason = 'file is not a database'
        elif how == 'directory':
            os.mkdir(path)
            reason = 'is a directory'
        else:
            with open(path, 'w') as f:
                f.write('x')
            path = os.path.join(path, 'sub', 'ev.sqlite')
            reason = 'cannot create directory'
        self.write_config(lmcaps={'event_connection': f'sqlite:///{path}'})
        for argv in (['events', INSTANCE], ['check', '--instance', INSTANCE]):
            code, out, err = self.lmcaps(*argv)
            self.assertOneLineError(code, err, 1, reason)
            self.assertIn('Event store sqlite:///', err)

    def test_password_not_shown(self) -> None:
        self.write_config(lmcaps={
            'event_connection': 'mysql+nosuchdriver://lm:s3cret@db/lmcaps'})
        code, _, err = self.lmcaps('events', INSTANCE)
        self.assertOneLineError(code, err, 1, 'lm:***@db/lmcaps')
        self.assertNotIn('s3cret', err)

    def test_unexpected_error_one_line_and_traceback_with_debug(self) -> None:
        self.useFixture(fixtures.MockPatch(
            'lmcaps.report.survey', side_effect=RuntimeError('bug')))
        code, _, err = self.lmcaps('report')
        self.assertOneLineError(code, err, 1, 'RuntimeError: bug')
        self.assertIn('--debug', err)
        code, _, err = self.lmcaps('--debug', 'report')
        self.assertEqual(1, code)
        self.assertIn('Traceback', err)
        self.assertEqual('lmcaps: error: RuntimeError: bug (run with --debug '
                         'for the traceback)', err.splitlines()[-1])


class EntryScriptTest(CLITestCase):
    """``python -m lmcaps`` and the imports of ``lmcaps report``."""

    def run_python(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], capture_output=True,
                              text=True, timeout=60, cwd=self.dir)

    def test_python_m_lmcaps(self) -> None:
        proc = self.run_python('-m', 'lmcaps', '--config-file', self.config,
                               'report', '-f', 'json', '--driver', 'fake')
        self.assertEqual(0, proc.returncode, proc.stderr)
        self.assertEqual(len(caps.Operation), len(json.loads(proc.stdout)))
        proc = self.run_python('-m', 'lmcaps', '--version')
        self.assertEqual('lmcaps 0.1.0', proc.stdout.strip())

    def test_report_imports_no_client_nova_or_database(self) -> None:
        proc = self.run_python('-X', 'importtime', '-m', 'lmcaps.cmd.main',
                               '--config-file', self.config, 'report')
        self.assertEqual(0, proc.returncode, proc.stderr)
        modules = [line.split('|')[-1].strip()
                   for line in proc.stderr.splitlines()
                   if line.startswith('import time:')]
        self.assertIn('lmcaps.report', modules)
        self.assertEqual([], test_report.forbidden_modules(modules))
        heavy = [m for m in modules
                 if m.split('.')[0] in ('sqlalchemy', 'jsonschema', 'cmd2')]
        self.assertEqual([], heavy)


class QuietTest(CLITestCase):
    def test_quiet_migrate_prints_no_progress(self):
        argv = ('migrate', 'vm-q', '--dest', 'dst', '--completion-timeout',
                '1', '--timeout-action', 'abort', '-f', 'json')
        self.write_config(lmcaps_fake={'dirty_rate_mib': '5000',
                                       'time_scale': '20'})
        code, out, err = self.lmcaps(*argv)
        self.assertEqual(3, code, err)
        self.assertIn('vm-q: precopy', err)
        code, out, err = self.lmcaps('-q', *argv)
        self.assertEqual(3, code, err)
        self.assertEqual('aborted', json.loads(out)['outcome'])
        self.assertNotIn('precopy', err)
        self.assertIn('vm-q: aborted', err)   # the outcome line stays


class ProgressViewTest(test_base.BaseTestCase):
    """``lmcaps migrate``'s progress: rich on a terminal, lines off one."""

    class _Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    def _feed(self, stream: io.StringIO) -> None:
        from lmcaps.cmd import migrate as migrate_cmd
        from lmcaps.drivers import base

        class Migration:
            spec = base.MigrationSpec('vm-[bold]', 'dest')

        view = migrate_cmd.ProgressView(stream)
        view(Migration, base.Progress(
            phase=base.Phase.PRECOPY, data_total=100 * 2**20,
            data_remaining=10 * 2**20, data_processed=90 * 2**20), 3.0)
        view.note('abort fired')
        view(Migration, base.Progress(phase=base.Phase.CANCELLING), -1.0)
        view.close()

    def test_terminal_shows_fraction_and_literal_markers(self):
        stream = self._Tty()
        self._feed(stream)
        text = stream.getvalue()
        self.assertIn('90.0 %', text)
        self.assertIn('[abort fired]', text)      # not taken as markup
        self.assertIn('deadline passed', text)

    def test_off_a_terminal_one_line_per_reading_near_the_deadline(self):
        stream = io.StringIO()
        self._feed(stream)
        lines = stream.getvalue().splitlines()
        self.assertTrue(lines[0].startswith('vm-[bold]: precopy'), lines)
        self.assertNotIn('\x1b', stream.getvalue())
