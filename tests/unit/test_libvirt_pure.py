"""Unit tests of the libvirt driver's pure parts: phases and downtime steps."""

import ddt
import testtools

from lmcaps.drivers.base import Phase
from lmcaps.drivers.libvirt import downtime
from lmcaps.drivers.libvirt import jobstats as js

RUN = (js.STATE_RUNNING, 0)


@ddt.ddt
class PhaseTest(testtools.TestCase):

    @ddt.unpack
    @ddt.data(
        ({'type': js.JOB_UNBOUNDED, 'data_total': 0}, RUN, False,
         Phase.PREPARING),
        ({'type': js.JOB_NONE}, RUN, False, Phase.PREPARING),
        ({'type': js.JOB_UNBOUNDED, 'data_total': 10}, RUN, False,
         Phase.PRECOPY),
        ({'type': js.JOB_UNBOUNDED, 'data_total': 10},
         (js.STATE_PAUSED, js.PAUSED_POSTCOPY), False, Phase.POSTCOPY),
        ({'type': js.JOB_UNBOUNDED, 'data_total': 10},
         (js.STATE_RUNNING, js.RUNNING_POSTCOPY), False, Phase.POSTCOPY),
        ({'type': js.JOB_UNBOUNDED, 'data_total': 10},
         (js.STATE_PAUSED, js.PAUSED_MIGRATION), False, Phase.PAUSED),
        ({'type': js.JOB_UNBOUNDED, 'data_total': 10},
         (js.STATE_PAUSED, js.PAUSED_USER), True, Phase.PAUSED),
        ({'type': js.JOB_UNBOUNDED, 'data_total': 10},
         (js.STATE_PAUSED, js.PAUSED_USER), False, Phase.PRECOPY),
        ({'type': js.JOB_COMPLETED}, None, False, Phase.COMPLETED),
        ({'type': js.JOB_FAILED}, RUN, False, Phase.FAILED),
        ({'type': js.JOB_CANCELLED}, RUN, False, Phase.CANCELLED),
    )
    def test_phase(self, stats, state, paused_by_us, expected):
        self.assertEqual(expected, js.phase_of(stats, state, paused_by_us))

    def test_progress_fields(self):
        p = js.progress_of({'type': 2, 'data_total': 100,
                            'data_processed': 40, 'data_remaining': 60,
                            'memory_dirty_rate': 256, 'memory_bps': 1000,
                            'memory_iteration': 3}, RUN)
        self.assertEqual((100, 40, 60, 256 * 4096, 1000, 3),
                         (p.data_total, p.data_processed, p.data_remaining,
                          p.memory_dirty_rate, p.transfer_rate, p.iteration))


class DowntimeTest(testtools.TestCase):

    def test_nova_ramp(self):
        # nova's test_migration: downtime_steps(3.0) with 400 ms / 10 / 30 s
        steps = list(downtime.steps(400, 10, 30, 3.0))
        self.assertEqual([(0, 40), (90, 76), (180, 112), (270, 148),
                          (360, 184), (450, 220), (540, 256), (630, 292),
                          (720, 328), (810, 364), (900, 400)], steps)

    def test_per_instance_ramp_over_first_half(self):
        steps = list(downtime.steps(500, 10, 75, 4.0, completion_timeout=100))
        self.assertEqual(11, len(steps))
        self.assertEqual((0.0, 50), steps[0])
        self.assertEqual((50.0, 500), steps[-1])
        times = [t for t, _ in steps]
        self.assertEqual(sorted(times), times)
        self.assertLess(steps[-2][0], 50.0)
        self.assertTrue(all(v <= 500 for _, v in steps))
