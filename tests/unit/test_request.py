"""Tests of the request schema, including a fuzz of the validation."""

import ddt
import hypothesis
from hypothesis import strategies as st
import testtools

from lmcaps import exception
from lmcaps import request


@ddt.ddt
class ValidateTest(testtools.TestCase):

    @ddt.data({}, {'completion_timeout': 0}, {'completion_timeout': 600},
              {'timeout_action': 'abort'},
              {'timeout_action': 'force_complete',
               'force_complete_mode': 'pause'},
              {'completion_timeout': request.MAX_TIMEOUT})
    def test_valid(self, body):
        self.assertEqual(body, request.validate(body))

    def test_integral_float_normalised(self):
        out = request.validate({'completion_timeout': 30.0})
        self.assertIs(int, type(out['completion_timeout']))

    def test_input_not_modified(self):
        body = {'completion_timeout': 30.0}
        request.validate(body)
        self.assertIs(float, type(body['completion_timeout']))

    @ddt.unpack
    @ddt.data(
        ({'completion_timeout': -1}, ['completion_timeout', 'from 0']),
        ({'completion_timeout': 2 ** 31}, ['completion_timeout', '2147483647']),
        ({'completion_timeout': '60'}, ['completion_timeout', 'integer', 'str']),
        ({'completion_timeout': True}, ['completion_timeout', 'integer', 'bool']),
        ({'completion_timeout': 1.5}, ['completion_timeout', 'integer']),
        ({'timeout_action': 'pause'}, ['timeout_action', 'abort, force_complete']),
        ({'force_complete_mode': 'fast'},
         ['force_complete_mode', 'auto, postcopy, pause']),
        ({'timeout': 5}, ["'timeout'", 'allowed fields',
                          'completion_timeout, force_complete_mode, '
                          'timeout_action']),
        ([], ['JSON object', 'list']),
        ('x', ['JSON object', 'str']),
        ({1: 2}, ['field names must be strings']),
    )
    def test_invalid_names_field_and_allowed(self, body, fragments):
        err = self.assertRaises(exception.InvalidRequest,
                                request.validate, body)
        for frag in fragments:
            self.assertIn(frag, str(err))
        self.assertNotIn('\n', str(err))

    @ddt.data(float('nan'), float('inf'), float('-inf'), 1.5, 'soon')
    def test_a_wrong_type_is_one_sentence_with_the_range(self, value):
        err = self.assertRaises(exception.InvalidRequest, request.validate,
                                {'completion_timeout': value})
        self.assertEqual(1, str(err).count('completion_timeout'), str(err))
        self.assertIn('must be of type integer from 0 to 2147483647',
                      str(err))

    def test_every_error_reported(self):
        err = self.assertRaises(
            exception.InvalidRequest, request.validate,
            {'completion_timeout': -5, 'timeout_action': 'x', 'y': 1})
        for frag in ('completion_timeout', 'timeout_action', "'y'"):
            self.assertIn(frag, str(err))


_json = st.recursive(
    st.none() | st.booleans() | st.integers() |
    st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) |
    st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=6)

_keys = st.sampled_from(sorted(request.FIELDS)) | st.text(max_size=12)
_values = (st.sampled_from(['abort', 'force_complete', 'auto', 'postcopy',
                            'pause', '']) |
           st.integers(min_value=-2 ** 40, max_value=2 ** 40) | _json)
_bodies = st.dictionaries(_keys, _values, max_size=4) | _json


class FuzzTest(testtools.TestCase):
    """Only InvalidRequest may escape; accepted bodies obey the schema."""

    @hypothesis.settings(max_examples=10_000, deadline=None, database=None,
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(_bodies)
    def test_fuzz_validate(self, body):
        try:
            out = request.validate(body)
        except exception.InvalidRequest as exc:
            self.assertTrue(str(exc))
            self.assertNotIn('\n', str(exc))
            return
        self.assertLessEqual(set(out), set(request.FIELDS))
        if 'completion_timeout' in out:
            self.assertIs(int, type(out['completion_timeout']))
            self.assertGreaterEqual(out['completion_timeout'], 0)
        if 'timeout_action' in out:
            self.assertIn(out['timeout_action'], ('abort', 'force_complete'))
