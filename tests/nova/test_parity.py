"""nova's own live-migration tests, unchanged, with lmcaps enabled.

Each class below is one of nova's test classes (from the installed nova 34)
with :class:`~tests.nova.fixtures.NovaHooks` added; no per-instance values
are set, so every nova assertion must hold as without lmcaps.

* ``nova.tests.unit.virt.libvirt.test_migration`` — every test class;
* ``nova.tests.unit.virt.libvirt.test_driver`` — the tests whose name has
  ``migrat`` in the three classes that have any (``LibvirtConnTestCase``:
  ``_live_migration_monitor``, ``check_can_live_migrate_source`` ...;
  ``LibvirtDriverTestCase``; ``LibvirtPMEMNamespaceTests``), chosen in
  :func:`load_tests`.
"""

from __future__ import annotations

import inspect
import unittest

import testtools
from nova.tests.unit.virt.libvirt import test_driver
from nova.tests.unit.virt.libvirt import test_migration

from lmcaps.nova import hooks
from tests.nova import fixtures as lmcaps_fixtures

#: Substring of the test_driver test names run here.
DRIVER_SELECTION = 'migrat'


class _LmcapsEnabled:
    def setUp(self) -> None:
        super().setUp()
        self.useFixture(lmcaps_fixtures.NovaHooks())

    def test_lmcaps_hooks_enabled(self) -> None:
        """Proves the parity run is not a plain nova run."""
        self.assertTrue(hooks.enabled())
        self.assertTrue(hasattr(
            test_migration.migration.should_trigger_timeout_action,
            '__wrapped__'))


class UtilityMigrationParity(_LmcapsEnabled,
                             test_migration.UtilityMigrationTestCase):
    pass


class MigrationMonitorParity(_LmcapsEnabled,
                             test_migration.MigrationMonitorTestCase):
    pass


class LibvirtConnMigrationParity(_LmcapsEnabled,
                                 test_driver.LibvirtConnTestCase):
    pass


class LibvirtDriverMigrationParity(_LmcapsEnabled,
                                   test_driver.LibvirtDriverTestCase):
    pass


class LibvirtPMEMMigrationParity(_LmcapsEnabled,
                                 test_driver.LibvirtPMEMNamespaceTests):
    pass


PARITY_CLASSES = (UtilityMigrationParity, MigrationMonitorParity,
                  LibvirtConnMigrationParity, LibvirtDriverMigrationParity,
                  LibvirtPMEMMigrationParity)
#: The test_driver classes, of which only DRIVER_SELECTION tests run.
DRIVER_CLASSES = (LibvirtConnMigrationParity, LibvirtDriverMigrationParity,
                  LibvirtPMEMMigrationParity)


class TestParityCoverage(testtools.TestCase):
    def test_every_test_migration_class_is_covered(self) -> None:
        nova_classes = {
            obj for obj in vars(test_migration).values()
            if inspect.isclass(obj) and issubclass(obj, unittest.TestCase)
            and obj.__module__ == test_migration.__name__}
        covered = {base for cls in PARITY_CLASSES for base in cls.__mro__}
        self.assertEqual(set(), nova_classes - covered)

    def test_driver_selection(self) -> None:
        names = [n for cls in DRIVER_CLASSES for n in dir(cls)
                 if n.startswith('test') and DRIVER_SELECTION in n
                 and n != 'test_lmcaps_hooks_enabled']
        self.assertEqual(174, len(names))    # nova 34.0.0
        conn = [n for n in dir(test_driver.LibvirtConnTestCase)
                if 'live_migration' in n and n.startswith('test')]
        self.assertEqual([], sorted(set(conn) - set(names)))
        self.assertEqual(12, len([n for n in names
                                  if 'live_migration_monitor' in n]))


def _selected(test: unittest.TestCase) -> bool:
    if not isinstance(test, DRIVER_CLASSES):
        return True
    name = test.id().rsplit('.', 1)[-1]
    return DRIVER_SELECTION in name or name == 'test_lmcaps_hooks_enabled'


def load_tests(loader, standard_tests, pattern):
    suite = unittest.TestSuite()
    for test in testtools.iterate_tests(standard_tests):
        if _selected(test):
            suite.addTest(test)
    return suite
