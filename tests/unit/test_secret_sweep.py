"""No secret in any output: every command x {plain, --debug, --log-file} x URL.

Each run starts with no remembered secret (:func:`lmcaps.masking.forget`),
and stdout, stderr, the log file and the event database file are searched
for the secret in every form (raw and percent-decoded).
"""

from __future__ import annotations

import glob
import os

import ddt

from lmcaps import masking
from tests.unit import test_cli

SECRET = 'S3cr3tXyzzy'
#: event_connection forms (``{dir}`` is the test's directory).
DB_URLS = {
    'plain': f'postgresql+psycopg2://lmcaps:{SECRET}@127.0.0.1:1/lmcaps',
    'at_and_slash': f'postgresql://lmcaps:p@ss/{SECRET}@127.0.0.1:1/lmcaps',
    'colon': f'postgresql://lmcaps:a:{SECRET}@127.0.0.1:1/lmcaps',
    'encoded': 'postgresql://lmcaps:S3cr3t%40Xyzzy@127.0.0.1:1/lmcaps',
    'query_password': f'postgresql://lmcaps@127.0.0.1:1/lmcaps?password='
                      f'{SECRET}',
    'query_sslpassword': 'postgresql://lmcaps@127.0.0.1:1/lmcaps?sslmode='
                         f'require&sslpassword={SECRET}',
    'scheme_typo': f'postgrsql://lmcaps:{SECRET}@127.0.0.1/lmcaps',
    'unparsable': f'postgresql//lmcaps:{SECRET}@127.0.0.1/lmcaps',
    'no_scheme': f'lmcaps:{SECRET}@127.0.0.1/lmcaps',
    'missing_driver': f'mysql+nosuchdriver://lmcaps:{SECRET}@127.0.0.1/x',
    'sqlite_query': 'sqlite:///{dir}/ev.sqlite?password=' + SECRET,
}
#: Forms of the secret that must never appear.
NEEDLES = (SECRET, 'S3cr3t@Xyzzy', 'S3cr3t%40Xyzzy')
INSTANCE = test_cli.INSTANCE
COMMANDS = {
    'report': ('report',),
    'check': ('check', '--instance', INSTANCE),
    'check_libvirt': ('check', '--driver', 'libvirt', '--instance',
                      INSTANCE),
    'events': ('events', INSTANCE),
    'conformance': ('conformance', 'fake', '--test', 'test_declaration',
                    '--no-save'),
    'migrate': ('migrate', 'dom', '--dest',
                f'qemu+ssh://root:{SECRET}@127.0.0.1:1/system',
                '--migrate-uri', f'tcp://u:{SECRET}@127.0.0.1:1',
                '--completion-timeout', '1'),
    'watch': ('watch',),
    'drain': ('drain', '--dest',
              f'qemu+ssh://root:{SECRET}@127.0.0.1:1/system',
              '--migrate-uri', f'tcp://u:{SECRET}@127.0.0.1:1',
              '--completion-timeout', '1'),
    'db_upgrade': ('db', 'upgrade'),
    'db_version': ('db', 'version'),
}
MODES = {'plain': (), 'debug': ('--debug',), 'log_file': ('--log-file',)}


def _cases() -> list:
    cases = [(cmd, mode, form) for cmd in COMMANDS for mode in MODES
             for form in DB_URLS]
    # A working store: the secret only in the libvirt URI or arguments.
    cases += [(cmd, mode, 'working') for cmd in COMMANDS for mode in MODES]
    return cases


@ddt.ddt
class SecretSweepTest(test_cli.CLITestCase):

    def setUp(self) -> None:
        super().setUp()
        masking.forget()
        self.addCleanup(masking.forget)

    def test_every_command_is_swept(self) -> None:
        from importlib import metadata
        names = {ep.name.replace('_', ' ')
                 for ep in metadata.entry_points(group='lmcaps.cli')}
        swept = {' '.join(a for a in argv[:2] if not a.startswith('-')
                          and a not in ('fake', 'dom', INSTANCE))
                 for argv in COMMANDS.values()}
        self.assertEqual(names, swept)

    @ddt.idata(_cases())
    @ddt.unpack
    def test_no_secret_anywhere(self, command: str, mode: str,
                                form: str) -> None:
        lmcaps_section = {'driver': 'fake'}
        if form != 'working':
            lmcaps_section['event_connection'] = DB_URLS[form].format(
                dir=self.dir)
        self.write_config(
            lmcaps=lmcaps_section,
            lmcaps_libvirt={'connection_uri':
                            f'qemu+tcp://u:{SECRET}@127.0.0.1:1/system'})
        log_file = os.path.join(self.dir, 'lmcaps.log')
        extra = MODES[mode]
        if mode == 'log_file':
            extra = ('--log-file', log_file, '-v')
        code, out, err = self.lmcaps(*extra, *COMMANDS[command])
        outputs = {'stdout': out, 'stderr': err}
        if os.path.exists(log_file):
            with open(log_file, errors='replace') as f:
                outputs['log file'] = f.read()
        for path in glob.glob(os.path.join(self.dir, '**', '*.sqlite*'),
                              recursive=True):
            with open(path, 'rb') as f:
                outputs[path] = f.read().decode('utf-8', 'replace')
        for where, text in outputs.items():
            for needle in NEEDLES:
                self.assertNotIn(needle, text,
                                 f'{needle} in {where} (exit {code})')
        if form not in ('working', 'sqlite_query') and \
                command not in ('report', 'conformance'):
            self.assertNotEqual(0, code, err)   # the store was really used
            self.assertIn('***', err)
