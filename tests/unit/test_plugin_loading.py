"""A broken or doubly registered driver plugin, installed for real.

Each test lays out a real distribution (``*.dist-info`` with its
``entry_points.txt``) on a private ``PYTHONPATH`` and runs the command in a
subprocess, as an operator would after a bad ``pip install``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import fixtures
import testtools


def _dist(root: str, name: str, entry_points: str, module: str = '',
          code: str = '') -> None:
    info = os.path.join(root, f'{name}-0.1.dist-info')
    os.makedirs(info)
    with open(os.path.join(info, 'METADATA'), 'w') as fh:
        fh.write(f'Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n')
    with open(os.path.join(info, 'entry_points.txt'), 'w') as fh:
        fh.write(textwrap.dedent(entry_points))
    if module:
        with open(os.path.join(root, f'{module}.py'), 'w') as fh:
            fh.write(textwrap.dedent(code))


class PluginLoadingTest(testtools.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.root = self.useFixture(fixtures.TempDir()).path
        self.state = self.useFixture(fixtures.TempDir()).path

    def lmcaps(self, *argv: str) -> subprocess.CompletedProcess:
        env = dict(os.environ, PYTHONPATH=self.root)
        conf = os.path.join(self.state, 'lmcaps.conf')
        with open(conf, 'w') as fh:
            fh.write(f'[lmcaps]\nstate_path = {self.state}\n')
        return subprocess.run(
            [sys.executable, '-m', 'lmcaps', '--config-file', conf, *argv],
            capture_output=True, text=True, env=env, timeout=120,
            check=False)

    def broken(self) -> None:
        _dist(self.root, 'lmcaps_broken', '''
            [lmcaps.drivers]
            broken = lmcaps_broken_driver:Driver
            ''', 'lmcaps_broken_driver', '''
            raise ImportError('the client library is missing')
            ''')

    def test_report_lists_good_drivers_when_one_fails_to_import(self) -> None:
        self.broken()
        proc = self.lmcaps('report', '-f', 'json')
        self.assertEqual(0, proc.returncode, proc.stderr)
        rows = json.loads(proc.stdout)
        drivers = {r['Driver'] for r in rows if r['Support'] != 'load error'}
        self.assertTrue({'fake', 'libvirt'} <= drivers, drivers)
        [bad] = [r for r in rows if r['Driver'] == 'broken']
        self.assertEqual('load error', bad['Support'])
        self.assertIn('the client library is missing', bad['Notes'])
        self.assertIn('driver broken does not load', proc.stderr)

        strict = self.lmcaps('report', '--strict', '-f', 'json')
        self.assertEqual(1, strict.returncode, strict.stderr)
        ini = self.lmcaps('report', '--ini')
        self.assertEqual(0, ini.returncode, ini.stderr)
        self.assertIn('[driver.fake]', ini.stdout)
        self.assertNotIn('[driver.broken]', ini.stdout)

    def test_config_generator_skips_the_broken_driver_with_a_warning(self):
        self.broken()
        env = dict(os.environ, PYTHONPATH=self.root)
        proc = subprocess.run(
            [sys.executable, '-W', 'always', '-c',
             'from lmcaps import conf; '
             'print(sorted(g for g, _ in conf.list_opts()))'],
            capture_output=True, text=True, env=env, timeout=120,
            check=False)
        self.assertEqual(0, proc.returncode, proc.stderr)
        self.assertIn("'lmcaps_fake'", proc.stdout)
        self.assertNotIn('lmcaps_broken', proc.stdout)
        self.assertIn("driver 'broken' does not load", proc.stderr)

    def test_duplicate_driver_name_names_both_distributions(self) -> None:
        _dist(self.root, 'lmcaps_impostor', '''
            [lmcaps.drivers]
            fake = lmcaps_impostor_driver:FakeDriver
            ''')
        proc = self.lmcaps('report')
        self.assertNotEqual(0, proc.returncode)
        [line] = proc.stderr.strip().splitlines()
        self.assertIn("'fake' is registered twice", line)
        self.assertIn('lmcaps_impostor', line)
        self.assertIn('lmcaps (lmcaps.drivers.fake:FakeDriver)', line)
