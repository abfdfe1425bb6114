"""Tests of lmcaps.db.retry: which errors are retried, and for how long."""

from sqlalchemy import exc as sa_exc

from lmcaps.db import retry
from oslotest import base as test_base


def _operational(text):
    return sa_exc.OperationalError('select 1', {}, Exception(text))


class RunTest(test_base.BaseTestCase):

    def _failing(self, errors):
        calls = []

        def fn():
            calls.append(1)
            if len(calls) <= len(errors):
                raise errors[len(calls) - 1]
            return 'ok'
        return fn, calls

    def test_refused_connection_stops_after_attempts(self):
        fn, calls = self._failing(
            [_operational('could not connect to server: Connection '
                          'refused')] * 5)
        self.assertRaises(sa_exc.OperationalError, retry.run, fn,
                          budget=10.0, attempts=3)
        self.assertEqual(3, len(calls))

    def test_dropped_connection_is_retried_past_attempts(self):
        fn, calls = self._failing(
            [_operational('server closed the connection unexpectedly')] * 5)
        self.assertEqual('ok', retry.run(fn, budget=10.0, attempts=3))
        self.assertEqual(6, len(calls))

    def test_not_transient_is_raised_at_once(self):
        fn, calls = self._failing([ValueError('no')])
        self.assertRaises(ValueError, retry.run, fn, budget=10.0)
        self.assertEqual(1, len(calls))

    def test_dropped(self):
        self.assertTrue(retry.dropped(_operational(
            'FATAL: terminating connection due to administrator command')))
        self.assertFalse(retry.dropped(_operational(
            'FATAL: password authentication failed for user "x"')))
