"""An out-of-tree driver package, installed by pip, runs the kit: pass, fail.

The example (tests/conformance_example) is installed into a throw-away
virtualenv that sees this environment's packages, so that its drivers are
registered by entry point exactly as a third party's would be.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig

import fixtures
import testtools

EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), 'conformance_example')
TIMEOUT = 120

_RUN = '''
import json, sys, lmcaps.conformance as kit
result = kit.run(sys.argv[1])   # backend from lmcaps.conformance.backends
print(json.dumps(result.as_dict()))
'''


def _can_build_wheels() -> bool:
    import setuptools
    major, minor = (int(x) for x in setuptools.__version__.split('.')[:2])
    return (major, minor) >= (70, 1) or \
        importlib.util.find_spec('wheel') is not None


class TestOutOfTreeDriver(testtools.TestCase):
    """pip-installed example drivers: the honest passes, the liar fails."""

    def setUp(self) -> None:
        super().setUp()
        if not _can_build_wheels():
            self.fail('building the example needs setuptools>=70.1 or the '
                      'wheel package in this environment')
        self.tmp = self.useFixture(fixtures.TempDir()).path
        self.python = self._make_venv(os.path.join(self.tmp, 'venv'))
        source = shutil.copytree(EXAMPLE, os.path.join(self.tmp, 'src'),
                                 ignore=shutil.ignore_patterns(
                                     'build', '*.egg-info', '__pycache__'))
        self._run([self.python, '-m', 'pip', 'install', '--quiet',
                   '--no-deps', '--no-build-isolation', '--no-index',
                   source])

    def _env(self) -> dict[str, str]:
        env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK='1',
                   PYTHONDONTWRITEBYTECODE='1')
        env.pop('PYTHONPATH', None)
        return env

    def _run(self, argv: list[str]) -> str:
        proc = subprocess.run(argv, capture_output=True, text=True,
                              timeout=TIMEOUT, cwd=self.tmp, env=self._env(),
                              check=False)
        self.assertEqual(0, proc.returncode,
                         f'{argv}:\n{proc.stdout}\n{proc.stderr}')
        return proc.stdout

    def _make_venv(self, path: str) -> str:
        """A venv whose site-packages also reads this interpreter's."""
        subprocess.run([sys.executable, '-m', 'venv', '--without-pip', path],
                       check=True, timeout=TIMEOUT)
        python = os.path.join(path, 'bin', 'python')
        purelib = subprocess.run(
            [python, '-c', 'import sysconfig; '
                           'print(sysconfig.get_path("purelib"))'],
            capture_output=True, text=True, check=True).stdout.strip()
        parents = dict.fromkeys([sysconfig.get_path('purelib'),
                                 sysconfig.get_path('platlib'),
                                 *site.getsitepackages()])
        with open(os.path.join(purelib, '_lmcaps_parent.pth'), 'w') as fh:
            fh.write(f'import site; list(map(site.addsitedir, '
                     f'{list(parents)!r}))\n')
        return python

    def _start(self, argv: list[str]) -> subprocess.Popen:
        return subprocess.Popen(argv, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                cwd=self.tmp, env=self._env())

    def test_kit_passes_the_honest_driver_and_fails_the_liar(self) -> None:
        found = self._run([self.python, '-c',
                           'from lmcaps import drivers; '
                           'print(" ".join(drivers.available()))']).split()
        self.assertIn('example_sim', found)
        self.assertIn('example_liar', found)

        honest = self._start([self.python, '-m', 'unittest', '-v',
                              'lmcaps_example.tests.test_conformance'])
        liar = self._start([self.python, '-c', _RUN, 'example_liar'])
        misreport = self._start([self.python, '-c', _RUN,
                                 'example_misreport'])
        out, err = honest.communicate(timeout=TIMEOUT)
        liar_out, liar_err = liar.communicate(timeout=TIMEOUT)
        mis_out, mis_err = misreport.communicate(timeout=TIMEOUT)

        self.assertEqual(0, honest.returncode, err)
        self.assertIn('OK', err.splitlines()[-1])
        self.assertNotIn('skipped', err)
        self.assertIn('test_behaviour_1_abort', err)
        self.assertIn('test_fault_owner_pauses', err)
        self.assertIn('test_fault_migration_fails', err)

        self.assertEqual(0, liar.returncode, liar_err)
        run = json.loads(liar_out.strip().splitlines()[-1])
        self.assertFalse(run['passed'])
        self.assertEqual('lmcaps_example.backend:SimBackend', run['backend'])
        ops = run['operations']
        self.assertEqual(('complete', 'failed'),
                         (ops['abort']['declared'], ops['abort']['verdict']))
        self.assertIn('NotImplementedError', ' '.join(ops['abort']['reasons']))
        for name in ('force_complete_postcopy', 'force_complete_pause'):
            self.assertEqual('refused-as-declared', ops[name]['verdict'])
        general = {t['test']: t['status'] for t in run['general']}
        self.assertEqual(['passed'] * 4, [
            status for name, status in general.items()
            if not name.startswith('test_fault_')])

        # Honest about what it can do, wrong about where the guest is.
        self.assertEqual(0, misreport.returncode, mis_err)
        run = json.loads(mis_out.strip().splitlines()[-1])
        self.assertFalse(run['passed'])
        faults = {t['test']: t for t in run['general']
                  if t['test'].startswith('test_fault_')}
        self.assertEqual('failed', faults['test_fault_owner_pauses']['status'])
        self.assertIn('misreports where the guest is',
                      faults['test_fault_owner_pauses']['reason'])
        self.assertEqual('verified', run['operations']['abort']['verdict'])
