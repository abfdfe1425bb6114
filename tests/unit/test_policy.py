"""Tests of resolving the effective policy."""

import ddt

from lmcaps import capabilities as caps
from lmcaps import policy
from tests.unit import base as test_base


def _decl(postcopy=caps.Support.COMPLETE, pause=caps.Support.COMPLETE):
    entries = {op: caps.Capability(caps.Support.COMPLETE)
               for op in caps.Operation}
    entries[caps.Operation.FORCE_COMPLETE_POSTCOPY] = caps.Capability(postcopy)
    entries[caps.Operation.FORCE_COMPLETE_PAUSE] = caps.Capability(pause)
    return caps.Declaration('d', 'D', entries)


@ddt.ddt
class ResolveTest(test_base.ConfTestCase):

    @ddt.unpack
    @ddt.data((4.0, 3200.0), (0.5, 1600.0), (2.0, 1600.0))
    def test_config_per_gib_with_floor(self, gib, expected):
        pol = policy.resolve(self.conf, gib)
        self.assertEqual(expected, pol.completion_timeout)
        self.assertEqual('config', pol.sources['completion_timeout'])
        self.assertFalse(pol.per_instance)

    def test_config_zero_disables(self):
        self.cfg.config(completion_timeout_per_gib=0, group='lmcaps')
        self.assertIsNone(policy.resolve(self.conf, 8).completion_timeout)

    def test_request_wins_and_is_absolute(self):
        pol = policy.resolve(self.conf, 64, [('request', {
            'completion_timeout': 30, 'timeout_action': 'force_complete'})])
        self.assertEqual(30.0, pol.completion_timeout)
        self.assertIs(policy.TimeoutAction.FORCE_COMPLETE, pol.timeout_action)
        self.assertEqual({'completion_timeout': 'request',
                          'timeout_action': 'request',
                          'force_complete_mode': 'config'},
                         dict(pol.sources))
        self.assertTrue(pol.per_instance)

    def test_request_zero_means_never(self):
        pol = policy.resolve(self.conf, 4, [('request',
                                             {'completion_timeout': 0})])
        self.assertIsNone(pol.completion_timeout)
        self.assertEqual('request', pol.sources['completion_timeout'])

    def test_first_layer_wins(self):
        pol = policy.resolve(self.conf, 4, [
            ('request', {'timeout_action': 'abort'}),
            ('flavor', {'timeout_action': 'force_complete',
                        'completion_timeout': 99})])
        self.assertIs(policy.TimeoutAction.ABORT, pol.timeout_action)
        self.assertEqual('request', pol.sources['timeout_action'])
        self.assertEqual(99.0, pol.completion_timeout)
        self.assertEqual('flavor', pol.sources['completion_timeout'])

    @ddt.unpack
    @ddt.data(
        # mode, permit, postcopy support, pause support, expected
        ('auto', True, caps.Support.COMPLETE, caps.Support.COMPLETE, 'postcopy'),
        ('auto', False, caps.Support.COMPLETE, caps.Support.COMPLETE, 'pause'),
        ('auto', True, caps.Support.MISSING, caps.Support.COMPLETE, 'pause'),
        ('auto', True, caps.Support.PARTIAL, caps.Support.MISSING, 'postcopy'),
        ('auto', False, caps.Support.COMPLETE, caps.Support.MISSING, None),
        ('auto', True, caps.Support.UNKNOWN, caps.Support.UNKNOWN, None),
        ('pause', True, caps.Support.COMPLETE, caps.Support.MISSING, 'pause'),
        ('postcopy', False, caps.Support.MISSING, caps.Support.COMPLETE,
         'postcopy'),
    )
    def test_choose_mode(self, mode, permit, postcopy, pause, expected):
        self.cfg.config(permit_post_copy=permit, group='lmcaps')
        pol = policy.resolve(self.conf, 2, [('request', {
            'timeout_action': 'force_complete', 'force_complete_mode': mode})])
        got = policy.choose_mode(pol, _decl(postcopy, pause))
        self.assertEqual(expected, got.value if got else None)

    def test_prepared_for_postcopy_only_for_force_complete(self):
        self.cfg.config(permit_post_copy=True, group='lmcaps')
        decl = _decl()
        self.assertEqual(frozenset(), policy.resolve(
            self.conf, 2, declaration=decl).prepare_for)
        pol = policy.resolve(self.conf, 2, [('request', {
            'timeout_action': 'force_complete'})], declaration=decl)
        self.assertIs(caps.ForceCompleteMode.POSTCOPY, pol.mode)
        self.assertEqual(frozenset({caps.Operation.FORCE_COMPLETE_POSTCOPY}),
                         pol.prepare_for)

    def test_mode_chosen_once_with_the_declaration(self):
        pol = policy.resolve(self.conf, 2, [('request', {
            'timeout_action': 'force_complete'})],
            declaration=_decl(postcopy=caps.Support.MISSING))
        self.assertIs(caps.ForceCompleteMode.PAUSE, pol.mode)
        self.assertIs(policy.ModeChoice.AUTO, pol.force_complete_mode)
        self.assertEqual('pause', pol.as_dict()['mode'])

    @ddt.unpack
    @ddt.data((10.0, 10.0, False), (10.0001, 10.0, True), (9.9, 10.0, False),
              (1e9, None, False), (0.0, 0.0, False), (float('nan'), 1.0, False))
    def test_deadline_strictly_after(self, elapsed, timeout, expected):
        self.assertEqual(expected, policy.deadline_reached(elapsed, timeout))
