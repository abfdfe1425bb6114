"""The lmcaps traits reach placement through nova's own resource tracking.

A nova-compute service with nova's real LibvirtDriver on the fake libvirt
(``LibvirtProviderUsageBaseTestCase``), nova's placement fixture (the real
``openstack-placement`` WSGI app) and the hooks: ``ComputeManager.
update_available_resource`` -> ``ResourceTracker.update_available_resource``
-> ``_update`` -> the driver's ``update_provider_tree`` -> the report client
-> placement.  Traits are read back from placement's API.
"""

from __future__ import annotations

import os_traits
from nova.tests.functional.libvirt import integrated_helpers

from lmcaps.nova import traits
from tests.nova import fixtures as lmcaps_fixtures

POSTCOPY = {'CUSTOM_LMCAPS_FORCE_COMPLETE_POSTCOPY',
            os_traits.COMPUTE_MIGRATE_POST_COPY}
ALWAYS = {'CUSTOM_LMCAPS_ABORT', 'CUSTOM_LMCAPS_FORCE_COMPLETE_PAUSE',
          'CUSTOM_LMCAPS_PER_INSTANCE_TIMEOUT'}


class PlacementTraitsTest(integrated_helpers.LibvirtProviderUsageBaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.useFixture(lmcaps_fixtures.NovaHooks())
        self.flags(live_migration_permit_post_copy=True, group='libvirt')

    def provider_traits(self) -> set[str]:
        return set(self._get_provider_traits(self.host_uuid))

    def periodic(self) -> None:
        """What nova-compute does after a SIGHUP: forget the report
        client's cache, then run the resource tracker's periodic task."""
        self.compute.manager.reset()
        self._run_periodics()

    def test_traits_follow_the_host_through_the_resource_tracker(self):
        self.start_compute()
        # init_host is stubbed in this base class: parse nova's migration
        # flags as it would, then let the resource tracker report again.
        self.compute.driver._parse_migration_flags()
        self.periodic()
        have = self.provider_traits()
        self.assertTrue(ALWAYS | POSTCOPY <= have, have)
        self.assertIn('COMPUTE_NODE', have)       # nova's own still there
        self.assertEqual(ALWAYS | POSTCOPY, have & traits.OWNED)

        self.flags(live_migration_permit_post_copy=False, group='libvirt')
        self.compute.driver._parse_migration_flags()
        self.periodic()
        have = self.provider_traits()
        self.assertTrue(ALWAYS <= have, have)
        self.assertEqual(set(), have & POSTCOPY)
        self.assertIn('COMPUTE_NODE', have)

    def test_without_the_hooks_no_lmcaps_trait(self):
        from lmcaps.nova import hooks
        hooks.disable()
        self.start_compute()
        self.compute.driver._parse_migration_flags()
        self.periodic()
        self.assertEqual(set(), self.provider_traits() & traits.OWNED)
        self.assertIn('COMPUTE_NODE', self.provider_traits())
