"""Every entry point the installed distribution declares loads, and is right.

os-vif once registered its oslo.config.opts entry point under another
project's name; nothing noticed because nothing loaded it.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Callable
from importlib import metadata

import ddt
from cliff import command
from oslo_config import cfg
from oslotest import base as test_base

from lmcaps.checks import base as checks_base
from lmcaps.cmd import main as cli_main
from lmcaps.drivers import base as drivers_base

DIST = 'lmcaps'
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def installed() -> dict[str, dict[str, str]]:
    """group -> {name: value} of the installed distribution."""
    result: dict[str, dict[str, str]] = {}
    for ep in metadata.distribution(DIST).entry_points:
        result.setdefault(ep.group, {})[ep.name] = ep.value
    return result


def declared_in_setup_cfg() -> dict[str, dict[str, str]]:
    """group -> {name: value} as setup.cfg declares them."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(os.path.join(ROOT, 'setup.cfg'))
    result = {}
    for group, text in parser['options.entry_points'].items():
        entries = {}
        for line in text.strip().splitlines():
            name, _, value = line.partition('=')
            entries[name.strip()] = value.strip()
        result[group] = entries
    return result


def _driver(test: test_base.BaseTestCase, ep: metadata.EntryPoint,
            obj: object) -> None:
    test.assertTrue(isinstance(obj, type) and
                    issubclass(obj, drivers_base.LiveMigrationDriver), obj)
    test.assertEqual(ep.name, obj.name)
    test.assertEqual(ep.name, obj.declare().driver)


def _check(test: test_base.BaseTestCase, ep: metadata.EntryPoint,
           obj: object) -> None:
    test.assertTrue(isinstance(obj, type) and
                    issubclass(obj, checks_base.PreCheck), obj)
    test.assertEqual(ep.name, obj.name)
    test.assertTrue(obj.description)


def _cli(test: test_base.BaseTestCase, ep: metadata.EntryPoint,
         obj: object) -> None:
    test.assertTrue(isinstance(obj, type) and
                    issubclass(obj, command.Command), obj)
    test.assertTrue(obj.__doc__)


def _opts(test: test_base.BaseTestCase, ep: metadata.EntryPoint,
          obj: object) -> None:
    # The namespace is ours: never another project's name.
    test.assertTrue(ep.name == DIST or ep.name.startswith(DIST + '.'),
                    ep.name)
    groups = obj()
    test.assertIn(DIST, [g for g, _ in groups])
    for group, opts in groups:
        test.assertTrue(group == DIST or group.startswith(DIST + '_'), group)
        test.assertTrue(opts)
        for opt in opts:
            test.assertIsInstance(opt, cfg.Opt)


def _script(test: test_base.BaseTestCase, ep: metadata.EntryPoint,
            obj: object) -> None:
    if ep.name == 'lmcaps-nova-compute':
        from lmcaps.nova import cmd as nova_cmd
        test.assertIs(nova_cmd.main, obj)
        return
    test.assertEqual(DIST, ep.name)
    test.assertIs(cli_main.main, obj)


def _nova_validators(test: test_base.BaseTestCase, ep: metadata.EntryPoint,
                     obj: object) -> None:
    # nova loads the module and calls register(); tests/nova runs them.
    test.assertEqual(DIST, ep.name)
    test.assertTrue(callable(getattr(obj, 'register', None)), obj)


def _nova_installed() -> bool:
    try:
        import nova  # noqa: F401
    except ImportError:
        return False
    return True


#: Entry points whose module needs nova; without nova they must fail to load
#: only because nova is missing (tests/nova loads them with nova installed).
NEEDS_NOVA = {'lmcaps.nova.extra_specs'}


def _backend(test: test_base.BaseTestCase, ep: metadata.EntryPoint,
             obj: object) -> None:
    from lmcaps.conformance import backend
    test.assertTrue(isinstance(obj, type) and
                    issubclass(obj, backend.Backend), obj)
    test.assertIn(ep.name, installed()['lmcaps.drivers'])


KINDS: dict[str, Callable] = {
    'nova.api.extra_spec_validators': _nova_validators,
    'lmcaps.conformance.backends': _backend,
    'lmcaps.drivers': _driver,
    'lmcaps.checks': _check,
    'lmcaps.cli': _cli,
    'oslo.config.opts': _opts,
    'console_scripts': _script,
}


@ddt.ddt
class EntryPointTest(test_base.BaseTestCase):
    def test_every_group_is_tested(self) -> None:
        self.assertEqual(sorted(KINDS), sorted(installed()))

    @ddt.data(*sorted(KINDS))
    def test_every_entry_point_loads(self, group: str) -> None:
        eps = [ep for ep in metadata.distribution(DIST).entry_points
               if ep.group == group]
        self.assertTrue(eps, f'nothing declared in {group}')
        for ep in eps:
            if ep.module in NEEDS_NOVA and not _nova_installed():
                exc = self.assertRaises(ImportError, ep.load)
                self.assertEqual('nova', exc.name.split('.')[0], exc)
                continue
            try:
                obj = ep.load()
            except Exception as exc:
                self.fail(f'{group} {ep.name} = {ep.value} does not load: '
                          f'{type(exc).__name__}: {exc}')
            KINDS[group](self, ep, obj)

    def test_installed_metadata_matches_setup_cfg(self) -> None:
        """A stale install (setup.cfg edited, not reinstalled) fails here."""
        self.assertEqual(declared_in_setup_cfg(), installed())

    def test_generator_namespace_is_declared(self) -> None:
        parser = configparser.ConfigParser()
        parser.read(os.path.join(ROOT, 'etc', 'lmcaps',
                                 'lmcaps-config-generator.conf'))
        namespaces = parser['DEFAULT']['namespace'].split()
        self.assertTrue(namespaces)
        for namespace in namespaces:
            self.assertIn(namespace, installed()['oslo.config.opts'])
