"""Added latency of lmcaps's pre-check in nova's source pre-check.

Not a test (stestr does not load it); run::

    .venv-nova/bin/python -m testtools.run tests.nova.measure

Times ``ComputeManager.check_can_live_migrate_source`` (nova's wrappers,
events in nova's sqlite test DB, LibvirtDriver on the fake libvirt) with
lmcaps enabled and disabled, N calls each, interleaved, and lmcaps's part
alone (``precheck.check_source``); prints the medians.
"""

from __future__ import annotations

import statistics
import time

import nova.conf

from lmcaps.nova import hooks
from lmcaps.nova import precheck
from tests.nova import test_precheck

N = 300


class MeasurePreCheck(test_precheck.SourcePreCheckTest):
    @staticmethod
    def _time(func) -> float:
        start = time.perf_counter()
        func()
        return (time.perf_counter() - start) * 1000

    def _compare(self, label: str, extra_specs: dict[str, str]) -> None:
        inst = self.make_instance(extra_specs=extra_specs)
        self.check(inst)                 # warm caches (entry points, runner)
        off, on, alone = [], [], []
        for _ in range(N):               # interleaved: the DB grows alike
            hooks.disable()
            off.append(self._time(lambda: self.check(inst)))
            hooks.enable()
            on.append(self._time(lambda: self.check(inst)))
            alone.append(self._time(lambda: precheck.check_source(
                self.drvr, nova.conf.CONF, self.context, inst)))
        m_off, m_on = statistics.median(off), statistics.median(on)
        print(f'\n{label}: manager pre-check median {m_off:.3f} ms without '
              f'lmcaps, {m_on:.3f} ms with (+{m_on - m_off:.3f} ms); lmcaps '
              f'part alone {statistics.median(alone):.3f} ms (N={N})')

    def measure_host_wide_defaults(self) -> None:
        self._compare('host-wide defaults (no event)', {})

    def measure_per_instance(self) -> None:
        self._compare('per-instance flavor values (1 lmcaps event)', {
            'lmcaps:completion_timeout': '600',
            'lmcaps:timeout_action': 'force_complete',
            'lmcaps:force_complete_mode': 'pause'})

    def test_measure(self) -> None:
        self.measure_host_wide_defaults()

    def test_measure_per_instance(self) -> None:
        self.measure_per_instance()


def load_tests(loader, standard_tests, pattern):
    return loader.loadTestsFromNames(
        [f'{__name__}.MeasurePreCheck.test_measure',
         f'{__name__}.MeasurePreCheck.test_measure_per_instance'])
