"""Tests of the capability model."""

import dataclasses
import operator

import ddt
import testtools

from lmcaps import capabilities as caps
from lmcaps import exception


def _all(level=caps.Support.COMPLETE):
    return {op: caps.Capability(level) for op in caps.Operation}


@ddt.ddt
class DeclarationTest(testtools.TestCase):

    def test_complete_declaration_is_frozen(self):
        decl = caps.Declaration('d', 'D', _all())
        self.assertRaises(dataclasses.FrozenInstanceError,
                          setattr, decl, 'driver', 'x')
        self.assertRaises(TypeError, operator.setitem, decl.capabilities,
                          caps.Operation.ABORT, caps.missing('no'))

    @ddt.data(*caps.Operation)
    def test_missing_operation_rejected(self, op):
        entries = _all()
        del entries[op]
        err = self.assertRaises(exception.InvalidDeclaration,
                                caps.Declaration, 'd', 'D', entries)
        self.assertIn(op.value, str(err))
        self.assertIn("'d'", str(err))

    def test_string_keys_rejected(self):
        entries = {op.value: caps.Capability(caps.Support.COMPLETE)
                   for op in caps.Operation}
        self.assertRaises(exception.InvalidDeclaration,
                          caps.Declaration, 'd', 'D', entries)

    def test_string_support_rejected(self):
        self.assertRaises(TypeError, caps.Capability, 'complete')

    def test_refine_replaces_only_named(self):
        decl = caps.Declaration('d', 'D', _all())
        host = decl.refine('h1', {'libvirt': '9.0.0'},
                           force_complete_postcopy=caps.missing('not here'))
        self.assertEqual(caps.Support.MISSING,
                         host.support(caps.Operation.FORCE_COMPLETE_POSTCOPY))
        self.assertEqual(caps.Support.COMPLETE,
                         host.support(caps.Operation.ABORT))
        self.assertEqual('h1', host.host)
        self.assertEqual({'libvirt': '9.0.0'}, dict(host.facts))
        self.assertIsNone(decl.host)
        self.assertEqual(caps.Support.COMPLETE,
                         decl.support(caps.Operation.FORCE_COMPLETE_POSTCOPY))

    def test_refine_unknown_operation(self):
        decl = caps.Declaration('d', 'D', _all())
        self.assertRaises(ValueError, decl.refine, 'h', None,
                          teleport=caps.missing('x'))

    def test_as_dict(self):
        decl = caps.Declaration('d', 'D', _all(caps.Support.PARTIAL))
        d = decl.as_dict()
        self.assertEqual({op.value for op in caps.Operation},
                         set(d['operations']))
        self.assertEqual('partial', d['operations']['abort']['support'])
        self.assertEqual(caps.DECLARATION_VERSION, d['version'])

    @ddt.unpack
    @ddt.data((caps.Support.COMPLETE, True), (caps.Support.PARTIAL, True),
              (caps.Support.MISSING, False), (caps.Support.UNKNOWN, False))
    def test_usable(self, level, usable):
        self.assertEqual(usable, level.usable)

    def test_mode_operation(self):
        self.assertEqual(caps.Operation.FORCE_COMPLETE_POSTCOPY,
                         caps.ForceCompleteMode.POSTCOPY.operation)
        self.assertEqual(caps.Operation.FORCE_COMPLETE_PAUSE,
                         caps.ForceCompleteMode.PAUSE.operation)
