"""nova's own functional live-migration tests, unchanged, with lmcaps enabled.

As :mod:`tests.nova.test_parity` does for nova's unit tests: each class
below is one of nova's functional test classes (from the installed nova 34)
run with lmcaps's hooks enabled before nova's services start and nova's API
built from nova's api-paste.ini with ``lmcaps_migrate_live`` after
``keystonecontext`` (:class:`~tests.nova.fixtures.ApiPipeline`).  Their
requests carry no lmcaps field, so every nova assertion must hold as
without lmcaps.

* ``nova.tests.functional.libvirt.test_live_migration`` — every test class
  (two fake-libvirt computes, placement fixture);
* ``nova.tests.functional.test_servers`` — ``ServerLiveMigrateForceAndAbort``
  and its nested-resources variant (nova's fake live-migration driver:
  force-complete and abort through nova's API, allocations checked).
"""

from __future__ import annotations

import inspect
import unittest
from typing import Any

import testtools
from nova import conf as nova_conf
from nova.tests.functional.libvirt import test_live_migration
from nova.tests.functional import test_servers

from lmcaps.nova import api as nova_api
from lmcaps.nova import hooks
from tests.nova import fixtures as lmcaps_fixtures

CONF = nova_conf.CONF


def filters(app: Any) -> list[Any]:
    """Every WSGI middleware object reachable from nova's urlmap app."""
    found, todo = [], [app]
    while todo:
        obj = todo.pop()
        found.append(obj)
        todo.extend(a for _, a in getattr(obj, 'applications', []))
        nxt = getattr(obj, 'application', None)
        if nxt is not None:
            todo.append(nxt)
    return found


class _LmcapsEnabled:
    def setUp(self) -> None:
        self.useFixture(lmcaps_fixtures.ApiPipeline(CONF))
        self.useFixture(lmcaps_fixtures.NovaHooks())
        super().setUp()

    def test_lmcaps_enabled(self) -> None:
        """Proves the parity run is not a plain nova run."""
        self.assertTrue(hooks.enabled())
        ours = [f for f in filters(self.api_fixture.app())
                if isinstance(f, nova_api.MigrateLiveFilter)]
        self.assertEqual(2, len(ours))      # the /v2.1 and /v2 pipelines


class QueuedAbortVmStatusParity(
        _LmcapsEnabled,
        test_live_migration.LiveMigrationQueuedAbortTestVmStatus):
    pass


class QueuedAbortLeftoversParity(
        _LmcapsEnabled,
        test_live_migration.LiveMigrationQueuedAbortTestLeftoversRemoved):
    pass


class CleanupHostCancelsQueuedParity(
        _LmcapsEnabled,
        test_live_migration.ManagerCleanupHostCancelsQueuedMigration):
    pass


class CpuSharedSetParity(_LmcapsEnabled,
                         test_live_migration.LiveMigrationWithCpuSharedSet):
    pass


class ForceAndAbortParity(_LmcapsEnabled,
                          test_servers.ServerLiveMigrateForceAndAbort):
    pass


class ForceAndAbortNestedParity(
        _LmcapsEnabled,
        test_servers.ServerLiveMigrateForceAndAbortWithNestedResourcesRequest):
    pass


PARITY_CLASSES = (QueuedAbortVmStatusParity, QueuedAbortLeftoversParity,
                  CleanupHostCancelsQueuedParity, CpuSharedSetParity,
                  ForceAndAbortParity, ForceAndAbortNestedParity)


class TestFunctionalParityCoverage(testtools.TestCase):
    def test_every_test_live_migration_class_is_covered(self) -> None:
        nova_classes = {
            obj for obj in vars(test_live_migration).values()
            if inspect.isclass(obj) and issubclass(obj, unittest.TestCase)
            and obj.__module__ == test_live_migration.__name__
            and any(n.startswith('test') for n in vars(obj))}
        covered = {base for cls in PARITY_CLASSES for base in cls.__mro__}
        self.assertEqual(set(), nova_classes - covered)

    def test_every_test_servers_live_migrate_class_is_covered(self) -> None:
        nova_classes = {
            obj for name, obj in vars(test_servers).items()
            if inspect.isclass(obj) and 'LiveMigrat' in name
            and obj.__module__ == test_servers.__name__}
        covered = {base for cls in PARITY_CLASSES for base in cls.__mro__}
        self.assertEqual(set(), nova_classes - covered)
