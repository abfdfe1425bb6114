"""ActionLatch.wake_at: when a timer has to look again (no reading needed)."""

import testtools

from lmcaps import latch as latch_mod
from lmcaps.drivers import model


class WakeAtTest(testtools.TestCase):
    def setUp(self):
        super().setUp()
        self.now = 0.0
        self.latch = latch_mod.ActionLatch(
            [latch_mod.POSTCOPY, latch_mod.PAUSE], 30.0, backoff=0.5,
            effect_timeout=5.0, clock=lambda: self.now)

    def test_the_deadline_first(self):
        self.assertEqual(30.0, self.latch.wake_at())
        self.now = 30.0
        self.assertIsNone(self.latch.due())        # not past it yet
        self.now = 30.001
        self.assertEqual(latch_mod.POSTCOPY, self.latch.due())

    def test_nothing_while_a_call_is_in_flight(self):
        self.now = 31.0
        self.latch.begin(self.latch.due())
        self.assertIsNone(self.latch.wake_at())

    def test_the_effect_bound_of_an_accepted_call(self):
        self.now = 31.0
        attempt = self.latch.begin(self.latch.due())
        self.now = 31.2
        self.latch.accepted(attempt)
        self.assertEqual(36.2, self.latch.wake_at())
        self.now = 36.3
        self.assertIs(attempt, self.latch.expire())
        self.assertEqual(36.8, self.latch.wake_at())   # retry after backoff

    def test_the_retry_after_a_refusal(self):
        self.now = 31.0
        attempt = self.latch.begin(self.latch.due())
        self.latch.failed(attempt, latch_mod.Result.REFUSED, 'no')
        self.assertEqual(31.5, self.latch.wake_at())

    def test_nothing_once_effective_or_in_post_copy_or_never(self):
        self.now = 31.0
        attempt = self.latch.begin(self.latch.due())
        self.latch.accepted(attempt)
        self.latch.observe(model.Phase.POSTCOPY)
        self.assertIsNone(self.latch.wake_at())
        never = latch_mod.ActionLatch([latch_mod.ABORT], None,
                                      clock=lambda: self.now)
        self.assertIsNone(never.wake_at())
        moot = latch_mod.ActionLatch([latch_mod.ABORT], 30.0,
                                     clock=lambda: self.now)
        moot.observe(model.Phase.POSTCOPY)
        self.assertIsNone(moot.wake_at())
