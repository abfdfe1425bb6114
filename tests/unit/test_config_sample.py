"""The shipped configuration sample is what the generator makes today."""

from __future__ import annotations

import difflib
import os

import fixtures
from oslo_config import cfg
from oslo_config import generator
from oslotest import base as test_base

from lmcaps import conf as lmcaps_conf

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
GENERATOR_CONF = os.path.join(ROOT, 'etc', 'lmcaps',
                              'lmcaps-config-generator.conf')
SAMPLE = os.path.join(ROOT, 'etc', 'lmcaps', 'lmcaps.conf.sample')


def generate(output: str) -> None:
    """Run oslo-config-generator on our generator config into ``output``."""
    generator.main(['--config-file', GENERATOR_CONF, '--output-file', output])


class ConfigSampleTest(test_base.BaseTestCase):
    def test_sample_is_current(self) -> None:
        fresh = os.path.join(self.useFixture(fixtures.TempDir()).path,
                             'lmcaps.conf.sample')
        generate(fresh)
        with open(SAMPLE) as f:
            shipped = f.read()
        with open(fresh) as f:
            current = f.read()
        diff = ''.join(difflib.unified_diff(
            shipped.splitlines(True), current.splitlines(True),
            'etc/lmcaps/lmcaps.conf.sample', 'generated'))
        self.assertEqual('', diff,
                         'the sample is stale; run: tox -e genconfig '
                         '(oslo-config-generator --config-file '
                         'etc/lmcaps/lmcaps-config-generator.conf)')

    def test_sample_has_every_group_and_option(self) -> None:
        with open(SAMPLE) as f:
            text = f.read()
        for group, opts in lmcaps_conf.list_opts():
            self.assertIn(f'\n[{group}]\n', text)
            for opt in opts:
                self.assertIn(f'#{opt.dest} =', text)

    def test_sample_loads_with_defaults(self) -> None:
        """Uncommented, the sample's defaults read as the options' defaults."""
        uncommented = os.path.join(
            self.useFixture(fixtures.TempDir()).path, 'lmcaps.conf')
        with open(SAMPLE) as src, open(uncommented, 'w') as dst:
            for line in src:
                if (line.startswith('#') and not line.startswith('# ') and
                        ' = ' in line and not line.endswith('= <None>\n')):
                    line = line[1:]
                dst.write(line)
        values = []
        for files in ([], [uncommented]):
            conf = cfg.ConfigOpts()
            for group, opts in lmcaps_conf.list_opts():
                conf.register_opts(opts, group=group)
            conf([], default_config_files=files)
            values.append({
                (group, opt.dest): conf[group][opt.dest]
                for group, opts in lmcaps_conf.list_opts() for opt in opts
                if opt.sample_default is None})
        self.assertEqual(values[0], values[1])
