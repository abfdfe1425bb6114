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
from oslo_config import generator
from oslotest import base as test_base

from lmcaps.checks import base as checks_base
from lmcaps.drivers import base as drivers_base

DIST = 'lmcaps'
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
GENERATOR_CONF = os.path.join(ROOT, 'etc', 'lmcaps',
                              'lmcaps-config-generator.conf')


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


def opts_prefix(namespace: str) -> str:
    """The group names a namespace may list: ``lmcaps.nova`` -> lmcaps_nova.

    :raises: ValueError for a namespace that is not ours.
    """
    if namespace != DIST and not namespace.startswith(DIST + '.'):
        raise ValueError(f'{namespace!r} is not an {DIST} namespace')
    return namespace.replace('.', '_')


def _opts(test: test_base.BaseTestCase, ep: metadata.EntryPoint,
          obj: object) -> None:
    # The namespace is ours: never another project's name.  ``lmcaps``
    # lists [lmcaps] and the drivers' [lmcaps_<driver>]; ``lmcaps.<x>``
    # lists only [lmcaps_<x>...] (not [lmcaps], nor a driver's group).
    prefix = opts_prefix(ep.name)
    groups = [g for g, _ in obj()]
    test.assertIn(prefix, groups)
    test.assertEqual(len(groups), len(set(groups)), groups)
    for group, opts in obj():
        test.assertTrue(group == prefix or group.startswith(prefix + '_'),
                        f'{ep.name} lists [{group}]')
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
    from lmcaps.cmd import entry
    test.assertIs(entry.main, obj)      # it loads and runs lmcaps.cmd.main


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


def _osc_plugin(test: test_base.BaseTestCase, ep: metadata.EntryPoint,
                obj: object) -> None:
    test.assertEqual(DIST, ep.name)
    for name in ('API_NAME', 'API_VERSION_OPTION', 'DEFAULT_API_VERSION',
                 'make_client', 'build_option_parser'):
        test.assertTrue(hasattr(obj, name), name)
    test.assertEqual(DIST, getattr(obj, 'API_NAME'))


def _osc_command(test: test_base.BaseTestCase, ep: metadata.EntryPoint,
                 obj: object) -> None:
    test.assertTrue(ep.name.startswith(DIST + '_'), ep.name)
    _cli(test, ep, obj)


def _osc_installed() -> bool:
    try:
        import osc_lib  # noqa: F401
    except ImportError:
        return False
    return True


#: Entry points whose module needs lmcaps[osc] (osc-lib, openstacksdk);
#: without it they must fail to load only because that is missing
#: (tests/nova/test_osc.py runs them in .venv-nova).
NEEDS_OSC = {'lmcaps.osc.plugin', 'lmcaps.osc.commands'}
OSC_MODULES = ('osc_lib', 'openstack', 'os_traits')

#: Entry points whose module needs nova; without nova they must fail to load
#: only because nova is missing (tests/nova loads them with nova installed).
NEEDS_NOVA = {'lmcaps.nova.extra_specs', 'lmcaps.nova.api'}


def _policies(test: test_base.BaseTestCase, ep: metadata.EntryPoint,
              obj: object) -> None:
    # oslopolicy-sample-generator --namespace lmcaps calls it
    from oslo_policy import policy
    test.assertEqual(DIST, ep.name)
    rules = obj()
    test.assertTrue(rules)
    for rule in rules:
        test.assertIsInstance(rule, policy.RuleDefault)
        test.assertTrue(rule.name.startswith(f'{DIST}:'), rule.name)


def _backend(test: test_base.BaseTestCase, ep: metadata.EntryPoint,
             obj: object) -> None:
    from lmcaps.conformance import backend
    test.assertTrue(isinstance(obj, type) and
                    issubclass(obj, backend.Backend), obj)
    test.assertIn(ep.name, installed()['lmcaps.drivers'])


KINDS: dict[str, Callable] = {
    'oslo.policy.policies': _policies,
    'openstack.cli.extension': _osc_plugin,
    'openstack.lmcaps.v1': _osc_command,
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
            if ep.module in NEEDS_OSC and not _osc_installed():
                exc = self.assertRaises(ImportError, ep.load)
                self.assertIn(exc.name.split('.')[0], OSC_MODULES, exc)
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

    def test_generator_config_names_every_namespace(self) -> None:
        """oslo-config-generator reads exactly our oslo.config.opts."""
        conf = cfg.ConfigOpts()
        generator.register_cli_opts(conf)
        conf(['--config-file', GENERATOR_CONF])
        self.assertEqual(sorted(installed()['oslo.config.opts']),
                         sorted(conf.namespace))

    def test_each_group_in_one_namespace_and_in_the_sample(self) -> None:
        with open(os.path.join(ROOT, 'etc', 'lmcaps',
                               'lmcaps.conf.sample')) as f:
            text = f.read()
        owner: dict[str, str] = {}
        for ep in metadata.distribution(DIST).entry_points:
            if ep.group != 'oslo.config.opts':
                continue
            for group, opts in ep.load()():
                self.assertNotIn(group, owner, f'[{group}] is listed by '
                                 f'{owner.get(group)} and {ep.name}')
                owner[group] = ep.name
                self.assertIn(f'\n[{group}]\n', text)
                for opt in opts:
                    self.assertIn(f'#{opt.dest} =', text, f'[{group}]')
        self.assertIn('lmcaps_nova', owner)

    def test_opts_namespace_prefixes(self) -> None:
        self.assertEqual('lmcaps', opts_prefix('lmcaps'))
        self.assertEqual('lmcaps_nova', opts_prefix('lmcaps.nova'))
        for other in ('oslo.cache', 'lmcapsx', 'nova.lmcaps'):
            self.assertRaises(ValueError, opts_prefix, other)

    def test_opts_check_refuses_foreign_groups(self) -> None:
        """A namespace listing a group outside its prefix fails _opts."""
        opt = cfg.BoolOpt('x', help='x')
        ep = metadata.EntryPoint('lmcaps.nova', 'm:f', 'oslo.config.opts')
        for groups in ([('lmcaps_nova', [opt]), ('lmcaps', [opt])],
                       [('lmcaps_nova', [opt]), ('lmcaps_fake', [opt])],
                       [('lmcaps_novax', [opt])],
                       [('lmcaps_nova', [])]):
            self.assertRaises(self.failureException, _opts, self, ep,
                              lambda groups=groups: groups)
        _opts(self, ep, lambda: [('lmcaps_nova', [opt]),
                                 ('lmcaps_nova_extra', [opt])])
