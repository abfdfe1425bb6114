"""The README's quick start and CI stay one and the same command."""

import configparser
import os

import testtools

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def _quick_start() -> list[str]:
    """The commands of the first literal block after 'Quick start'."""
    with open(os.path.join(ROOT, 'README.rst'), encoding='utf-8') as fh:
        text = fh.read()
    section = text.split('\nQuick start\n', 1)[1]
    block = section.split('::\n', 1)[1]
    commands = []
    for line in block.splitlines()[1:]:
        if line and not line.startswith(' '):
            break
        if line.strip():
            commands.append(line.strip())
    return commands


class QuickStartTest(testtools.TestCase):

    def test_two_commands(self):
        install_and_run, install_and_test = _quick_start()
        self.assertIn('lmcaps report', install_and_run)
        self.assertIn('tools/run-tests.sh', install_and_test)

    def test_ci_runs_the_readme_test_command(self):
        with open(os.path.join(ROOT, '.ci', 'run'), encoding='utf-8') as fh:
            ci = [line.strip() for line in fh]
        self.assertIn(_quick_start()[1], ci)

    def test_commands_exist(self):
        for command in _quick_start():
            for word in command.split():
                if word.startswith('tools/'):
                    self.assertTrue(os.access(os.path.join(ROOT, word),
                                              os.X_OK), word)
        parser = configparser.ConfigParser(interpolation=None)
        parser.read(os.path.join(ROOT, 'setup.cfg'))
        scripts = parser['options.entry_points']['console_scripts']
        self.assertIn('lmcaps = lmcaps.cmd.entry:main', scripts)
