"""nova's own VMware driver tests, unchanged, with lmcaps enabled.

Each class below is one of nova 34's test classes of
``nova.tests.unit.virt.vmwareapi`` with
:class:`~tests.nova.fixtures.NovaHooks` added, for every module whose code
the hooks wrap or pass through: ``test_driver_api`` (VMwareVCDriver on
nova's fake vSphere: check_can_live_migrate_source, live_migration, and
update_provider_tree, which the hooks leave alone), ``test_vmops``
(``live_migration``, ``_find_datastore_for_migration`` ...),
``test_vm_util`` (``relocate_vm`` ...) and ``test_session``
(``_call_method``, wrapped).  No per-instance
values are set, so every nova assertion must hold as without lmcaps.
"""

from __future__ import annotations

import inspect
import unittest

import testtools
from nova.tests.unit.virt.vmwareapi import test_driver_api
from nova.tests.unit.virt.vmwareapi import test_session
from nova.tests.unit.virt.vmwareapi import test_vm_util
from nova.tests.unit.virt.vmwareapi import test_vmops
from nova.virt.vmwareapi import driver as vmware_driver
from nova.virt.vmwareapi import session as vmware_session

from lmcaps.nova import hooks
from tests.nova import fixtures as lmcaps_fixtures

MODULES = (test_driver_api, test_vmops, test_vm_util, test_session)


class _LmcapsEnabled:
    def setUp(self) -> None:
        super().setUp()
        self.useFixture(lmcaps_fixtures.NovaHooks())

    def test_lmcaps_hooks_enabled(self) -> None:
        """Proves the parity run is not a plain nova run."""
        self.assertTrue(hooks.enabled())
        for func in (vmware_driver.VMwareVCDriver.live_migration,
                     vmware_driver.VMwareVCDriver.check_can_live_migrate_source,
                     vmware_session.VMwareAPISession._call_method):
            self.assertTrue(hasattr(func, '__wrapped__'), func)


class DriverStartupParity(_LmcapsEnabled,
                          test_driver_api.VMwareDriverStartupTestCase):
    pass


class DriverAPIParity(_LmcapsEnabled, test_driver_api.VMwareAPIVMTestCase):
    pass


class VMOpsParity(_LmcapsEnabled, test_vmops.VMwareVMOpsTestCase):
    pass


class VMUtilParity(_LmcapsEnabled, test_vm_util.VMwareVMUtilTestCase):
    pass


class VMUtilHostRefParity(_LmcapsEnabled,
                          test_vm_util.VMwareVMUtilGetHostRefTestCase):
    pass


class StableMoRefParity(_LmcapsEnabled,
                        test_session.StableMoRefProxyTestCase):
    pass


class SessionParity(_LmcapsEnabled, test_session.VMwareSessionTestCase):
    pass


PARITY_CLASSES = (DriverStartupParity, DriverAPIParity, VMOpsParity,
                  VMUtilParity, VMUtilHostRefParity, StableMoRefParity,
                  SessionParity)


class TestParityCoverage(testtools.TestCase):
    def test_every_test_class_of_the_modules_is_covered(self) -> None:
        nova_classes = {
            obj for mod in MODULES for obj in vars(mod).values()
            if inspect.isclass(obj) and issubclass(obj, unittest.TestCase)
            and obj.__module__ == mod.__name__}
        covered = {base for cls in PARITY_CLASSES for base in cls.__mro__}
        self.assertEqual(set(), nova_classes - covered)

    def test_the_live_migration_tests_are_among_them(self) -> None:
        names = {n for cls in PARITY_CLASSES for n in dir(cls)
                 if n.startswith('test') and n != 'test_lmcaps_hooks_enabled'}
        self.assertEqual(377, len(names))    # nova 34.0.0, distinct names
        for name in ('test_live_migration', 'test_pre_live_migration',
                     'test_post_live_migration',
                     'test_rollback_live_migration_at_destination',
                     'test_find_datastore_for_migration'):
            self.assertIn(name, names)
