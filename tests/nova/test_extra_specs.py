"""The ``lmcaps:`` flavor extra specs through nova's validator machinery."""

from __future__ import annotations

import configparser
import pathlib
from importlib import metadata

import ddt
import testtools
from nova.api.validation.extra_specs import validators
from nova import exception

from lmcaps.nova import extra_specs
from lmcaps.nova import policy as nova_policy
from tests.nova import fixtures as lmcaps_fixtures

NAMESPACE = 'nova.api.extra_spec_validators'
SETUP_CFG = pathlib.Path(__file__).resolve().parents[2] / 'setup.cfg'


@ddt.ddt
class ValidateTest(testtools.TestCase):
    def setUp(self) -> None:
        super().setUp()
        self.useFixture(lmcaps_fixtures.ExtraSpecValidators())

    @ddt.data(
        ('lmcaps:completion_timeout', '0'),
        ('lmcaps:completion_timeout', '3600'),
        ('lmcaps:completion_timeout', str(2 ** 31 - 1)),
        ('lmcaps:timeout_action', 'abort'),
        ('lmcaps:timeout_action', 'force_complete'),
        ('lmcaps:force_complete_mode', 'auto'),
        ('lmcaps:force_complete_mode', 'postcopy'),
        ('lmcaps:force_complete_mode', 'pause'),
    )
    @ddt.unpack
    def test_accepted(self, name: str, value: str) -> None:
        validators.validate(name, value)
        self.assertEqual({nova_policy.SPEC_FIELDS[name]: int(value)
                          if value.isdigit() else value},
                         nova_policy.from_specs({name: value}, 'flavor'))

    @ddt.data(
        ('lmcaps:completion_timeout', '-1', 'less than the min'),
        ('lmcaps:completion_timeout', str(2 ** 31), 'greater than the max'),
        ('lmcaps:completion_timeout', 'soon', 'not a valid integer'),
        ('lmcaps:completion_timeout', '1.5', 'not a valid integer'),
        ('lmcaps:timeout_action', 'pause', 'is not one of: abort, '
                                           'force_complete'),
        ('lmcaps:timeout_action', 'ABORT', 'is not one of'),
        ('lmcaps:force_complete_mode', 'post-copy', 'is not one of: auto, '
                                                    'postcopy, pause'),
        ('lmcaps:timeout', '30', 'does not appear to be a valid extra spec'),
        ('lmcaps:completion_timeout_per_gib', '30', 'does not appear'),
    )
    @ddt.unpack
    def test_rejected(self, name: str, value: str, why: str) -> None:
        exc = self.assertRaises(exception.ValidationError,
                                validators.validate, name, value)
        self.assertIn(why, str(exc))

    def test_without_lmcaps_nova_lets_any_lmcaps_key_through(self) -> None:
        # What the entry point adds: before it, nova knows no 'lmcaps'
        # namespace and accepts anything in it (the fixture restores the
        # registry after the test).
        validators.VALIDATORS.pop('lmcaps:timeout_action')
        validators.NAMESPACES.discard('lmcaps')
        validators.validate('lmcaps:timeout_action', 'pause')
        validators.validate('lmcaps:timeout', 'x')

    def test_compute_side_parse_agrees_on_rejections(self) -> None:
        from lmcaps import exception as lmcaps_exception
        for specs in ({'lmcaps:completion_timeout': '-1'},
                      {'lmcaps:timeout_action': 'pause'},
                      {'lmcaps:timeout': '30'}):
            self.assertRaises(lmcaps_exception.InvalidRequest,
                              nova_policy.from_specs, specs, 'flavor')
        self.assertEqual({}, nova_policy.from_specs(
            {'hw:cpu_policy': 'dedicated'}, 'flavor'))


class EntryPointTest(testtools.TestCase):
    def _declared(self) -> dict[str, str]:
        parser = configparser.ConfigParser(interpolation=None)
        parser.read(SETUP_CFG)
        text = parser.get('options.entry_points', NAMESPACE, fallback='')
        lines = [ln.replace(' ', '') for ln in text.splitlines()]
        return dict(ln.split('=', 1) for ln in lines if ln)

    def test_setup_cfg_entry_point_loads_this_module(self) -> None:
        declared = self._declared()
        self.assertIn('lmcaps', declared, f'{NAMESPACE} lmcaps not in '
                      'setup.cfg: nova would not validate lmcaps: specs')
        self.assertEqual('lmcaps.nova.extra_specs', declared['lmcaps'])

    def test_installed_entry_point_loads(self) -> None:
        eps = [ep for ep in metadata.entry_points(group=NAMESPACE)
               if ep.name == 'lmcaps']
        self.assertEqual(1, len(eps), 'declared in setup.cfg but not '
                         'installed: re-run tools/setup-nova-venv.sh')
        self.assertIs(extra_specs, eps[0].load())

    def test_register_matches_the_request_schema(self) -> None:
        names = [v.name for v in extra_specs.register()]
        self.assertEqual(sorted(nova_policy.SPEC_FIELDS), sorted(names))
        for validator in extra_specs.register():
            self.assertTrue(validator.description)
