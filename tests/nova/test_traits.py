"""Capabilities as placement traits, from the nova-refined declaration."""

from __future__ import annotations

import os_traits
from nova.compute import provider_tree
from oslo_utils.fixture import uuidsentinel as uuids

from lmcaps import capabilities as caps
from lmcaps.nova import declaration as nova_declaration
from lmcaps.nova import traits
from tests.nova import base


class DeclarationTest(base.NovaLmcapsTestCase):
    def declaration(self) -> caps.Declaration:
        import nova.conf
        return nova_declaration.host_declaration(self.drvr, nova.conf.CONF)

    def test_post_copy_permitted(self) -> None:
        decl = self.declaration()
        self.assertEqual('libvirt', decl.driver)
        self.assertEqual('source-host', decl.host)
        self.assertEqual('True', decl.facts['post_copy_flag'])
        self.assertIs(caps.Support.COMPLETE,
                      decl.support(caps.Operation.FORCE_COMPLETE_POSTCOPY))
        self.assertEqual(
            {'CUSTOM_LMCAPS_ABORT', 'CUSTOM_LMCAPS_FORCE_COMPLETE_POSTCOPY',
             'CUSTOM_LMCAPS_FORCE_COMPLETE_PAUSE',
             'CUSTOM_LMCAPS_PER_INSTANCE_TIMEOUT',
             os_traits.COMPUTE_MIGRATE_POST_COPY},
            traits.traits_for(decl))

    def test_post_copy_not_permitted_auto_converge(self) -> None:
        self.flags(live_migration_permit_post_copy=False,
                   live_migration_permit_auto_converge=True, group='libvirt')
        self.drvr._parse_migration_flags()
        decl = self.declaration()
        self.assertIs(caps.Support.PARTIAL,
                      decl.support(caps.Operation.FORCE_COMPLETE_POSTCOPY))
        got = traits.traits_for(decl)
        self.assertNotIn('CUSTOM_LMCAPS_FORCE_COMPLETE_POSTCOPY', got)
        self.assertNotIn(os_traits.COMPUTE_MIGRATE_POST_COPY, got)
        self.assertIn(os_traits.COMPUTE_MIGRATE_AUTO_CONVERGE, got)

    def test_every_trait_is_a_valid_custom_or_standard_trait(self) -> None:
        for name in traits.OWNED:
            self.assertTrue(os_traits.is_custom(name) or
                            name in os_traits.get_traits(), name)
            self.assertLessEqual(len(name), 255)

    def test_update_provider_tree_hook_adds_and_drops(self) -> None:
        tree = provider_tree.ProviderTree()
        tree.new_root('node', uuids.node)
        tree.add_traits('node', 'CUSTOM_LMCAPS_STALE_THING', 'HW_CPU_X86_AVX')
        decl = self.declaration()
        traits.update_provider_tree(tree, 'node', decl)
        have = tree.data('node').traits
        self.assertTrue(traits.traits_for(decl) <= have)
        self.assertIn('HW_CPU_X86_AVX', have)          # not ours: kept
        self.assertIn('CUSTOM_LMCAPS_STALE_THING', have)  # not owned either
        self.flags(live_migration_permit_post_copy=False, group='libvirt')
        self.drvr._parse_migration_flags()
        traits.update_provider_tree(tree, 'node', self.declaration())
        self.assertNotIn(os_traits.COMPUTE_MIGRATE_POST_COPY,
                         tree.data('node').traits)
        self.assertNotIn('CUSTOM_LMCAPS_FORCE_COMPLETE_POSTCOPY',
                         tree.data('node').traits)
