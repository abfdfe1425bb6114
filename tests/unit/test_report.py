"""Tests of the capability matrix: generated from declarations, held equal."""

from __future__ import annotations

import configparser
import json
import subprocess
import sys

import ddt
from oslotest import base as test_base

from lmcaps import capabilities as caps
from lmcaps import drivers
from lmcaps import exception
from lmcaps import report
from lmcaps.drivers import base

#: Top-level modules of hypervisor clients and of nova: never imported.
FORBIDDEN = ('libvirt', 'libvirtmod', 'oslo_vmware', 'XenAPI', 'winrm',
             'pypowervm', 'nova')


def forbidden_modules(names: list[str]) -> list[str]:
    """The names that are (inside) a hypervisor client or nova."""
    return sorted(n for n in names
                  if any(n == f or n.startswith(f + '.') for f in FORBIDDEN))


def _driver(name: str, title: str, **caps_by_op: caps.Capability) -> type:
    """A driver class that declares ``caps_by_op`` (missing elsewhere)."""
    capabilities = {op: caps_by_op.get(op.value, caps.missing('not here'))
                    for op in caps.Operation}

    class Driver(base.LiveMigrationDriver):
        @classmethod
        def declare(cls) -> caps.Declaration:
            return caps.Declaration(driver=name, title=title,
                                    capabilities=capabilities)

        def start_migration(self, spec: base.MigrationSpec) -> base.Migration:
            raise AssertionError('not used')

        def get_progress(self, migration: base.Migration) -> base.Progress:
            raise AssertionError('not used')

    Driver.name = name
    return Driver


ALPHA = _driver('alpha', 'Alpha hypervisor',
                abort=caps.complete('cancels the task'),
                force_complete_pause=caps.partial(
                    'only in pre-copy', notes='pauses 100% of vCPUs',
                    requires='alpha>=2.0'))
BETA_GAMMA = _driver('beta_gamma', 'Beta/Gamma',
                     per_instance_timeout=caps.complete())
CLASSES = {'beta_gamma': BETA_GAMMA, 'alpha': ALPHA}


def parse_ini(text: str) -> configparser.ConfigParser:
    """Read the ini as sphinx-feature-classification does."""
    parser = configparser.ConfigParser()
    parser.read_string(text)
    return parser


def assert_ini_matches(test: test_base.BaseTestCase, text: str,
                       decls: list[caps.Declaration]) -> None:
    """Every driver and operation of the ini equals the declarations."""
    ini = parse_ini(text)
    test.assertEqual(
        sorted(f'driver.{report.driver_key(d.driver)}' for d in decls) +
        sorted(f'operation.{report.operation_key(op)}'
               for op in caps.Operation),
        sorted(ini.sections()))
    for d in decls:
        key = report.driver_key(d.driver)
        test.assertEqual(d.title, ini[f'driver.{key}']['title'])
        for op in caps.Operation:
            section = ini[f'operation.{report.operation_key(op)}']
            test.assertEqual(op.title, section['title'])
            test.assertEqual('optional', section['status'])
            test.assertTrue(section['notes'])
            test.assertEqual(d.support(op).value, section[f'driver.{key}'])
            notes = report.driver_notes(d[op])
            test.assertEqual(' '.join(notes.split()) or None,
                             ' '.join(section.get(f'driver-notes.{key}',
                                                  '').split()) or None)


def rows_by(decls) -> dict:
    return {(r[0], r[1]): r[2] for r in report.rows(decls)}


@ddt.ddt
class GivenDriversTest(test_base.BaseTestCase):
    """The matrix over driver classes given by the test."""

    def setUp(self) -> None:
        super().setUp()
        self.decls = report.declarations(CLASSES)

    def test_declarations_sorted_by_name(self) -> None:
        self.assertEqual(['alpha', 'beta_gamma'],
                         [d.driver for d in self.decls])

    def test_verdicts_next_to_declared_support(self) -> None:
        runs = {'alpha': {'finished_at': '2026-01-01T00:00:00',
                          'operations': {
                              'abort': {'declared': rows_by(self.decls)[
                                  ('alpha', 'abort')], 'verdict': 'failed'},
                              'force_complete_pause': {
                                  'declared': 'unknown',
                                  'verdict': 'verified'}}}}
        got = {(r[0], r[1]): r[6:] for r in
               report.with_verdicts(self.decls, runs)}
        self.assertEqual(('failed', '2026-01-01T00:00:00'),
                         got[('alpha', 'abort')])
        self.assertIn('run declared unknown',
                      got[('alpha', 'force_complete_pause')][0])
        self.assertEqual(('not run', ''), got[('beta_gamma', 'abort')])

    def test_names_select_and_order(self) -> None:
        decls = report.declarations(CLASSES, names=['beta_gamma', 'alpha',
                                                    'beta_gamma'])
        self.assertEqual(['beta_gamma', 'alpha'], [d.driver for d in decls])

    def test_unknown_name(self) -> None:
        exc = self.assertRaises(exception.DriverNotFound,
                                report.declarations, CLASSES, ['nope'])
        self.assertIn('alpha, beta_gamma', str(exc))

    def test_rows_one_per_driver_and_operation(self) -> None:
        rows = report.rows(self.decls)
        self.assertEqual(2 * len(caps.Operation), len(rows))
        self.assertEqual(len(report.COLUMNS), len(rows[0]))
        by_key = {(r[0], r[1]): r for r in rows}
        self.assertEqual(
            ('alpha', 'force_complete_pause', 'partial',
             'pauses 100% of vCPUs', 'alpha>=2.0', 'only in pre-copy'),
            by_key['alpha', 'force_complete_pause'])
        self.assertEqual('missing', by_key['beta_gamma', 'abort'][2])

    def test_as_dict_is_json_and_complete(self) -> None:
        data = json.loads(json.dumps(report.as_dict(self.decls)))
        self.assertEqual(caps.DECLARATION_VERSION, data['version'])
        self.assertEqual(
            {op.value for op in caps.Operation},
            set(data['drivers'][0]['operations']))

    def test_ini_matches_declarations(self) -> None:
        assert_ini_matches(self, report.to_ini(self.decls), self.decls)

    def test_ini_survives_interpolation_and_keys_use_hyphens(self) -> None:
        ini = parse_ini(report.to_ini(self.decls))
        key = report.operation_key(caps.Operation.FORCE_COMPLETE_PAUSE)
        section = ini[f'operation.{key}']
        notes = ' '.join(section['driver-notes.alpha'].split())
        self.assertEqual('pauses 100% of vCPUs. Requires alpha>=2.0. '
                         'Partial: only in pre-copy.', notes)
        self.assertIn('driver.beta-gamma', ini.sections())

    def test_ini_lines_fit(self) -> None:
        for line in report.to_ini(self.decls).splitlines():
            self.assertLessEqual(len(line), 79, line)

    @ddt.data(
        ('returns a dict', lambda: {}, 'not a Declaration'),
        ('names another driver',
         lambda: caps.Declaration(
             driver='other', title='x',
             capabilities=ALPHA.declare().capabilities),
         "names the driver 'other'"),
    )
    @ddt.unpack
    def test_wrong_declaration_fails_loudly(self, _why, declare,
                                            reason) -> None:
        cls = _driver('bad', 'Bad')
        cls.declare = classmethod(lambda _cls: declare())
        exc = self.assertRaises(exception.DriverLoadFailed,
                                report.declarations, {'bad': cls})
        self.assertIn(reason, str(exc))

    def test_every_operation_documented(self) -> None:
        self.assertEqual(set(caps.Operation), set(report.OPERATION_DOCS))


class InstalledDriversTest(test_base.BaseTestCase):
    """The matrix of the installed drivers equals their declarations."""

    def test_every_installed_driver_is_in_the_matrix(self) -> None:
        classes = drivers.driver_classes()
        decls = report.declarations()
        self.assertEqual(drivers.available(), [d.driver for d in decls])
        for d in decls:
            self.assertEqual(classes[d.driver].declare(), d)
        rows = report.rows(decls)
        self.assertEqual(
            {(name, op.value, classes[name].declare().support(op).value)
             for name in classes for op in caps.Operation},
            {r[:3] for r in rows})

    def test_ini_of_installed_drivers(self) -> None:
        decls = report.declarations()
        assert_ini_matches(self, report.to_ini(decls), decls)

    def test_no_hypervisor_client_imported(self) -> None:
        code = ('import sys; from lmcaps import report; '
                'report.to_ini(report.declarations()); '
                'print("\\n".join(sys.modules))')
        out = subprocess.run([sys.executable, '-c', code], check=True,
                             capture_output=True, text=True).stdout
        self.assertIn('lmcaps.report', out.split())
        self.assertEqual([], forbidden_modules(out.split()))


class ForbiddenModulesTest(test_base.BaseTestCase):
    def test_matches_top_level_packages_only(self) -> None:
        self.assertEqual(
            ['libvirt', 'nova.virt', 'oslo_vmware.api'],
            forbidden_modules(['libvirt', 'lmcaps.drivers.libvirt',
                               'nova.virt', 'novaclient', 'oslo_vmware.api',
                               'os']))
