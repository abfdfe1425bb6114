"""Downtime steps for a libvirt live migration (pure; no libvirt import)."""

from __future__ import annotations

from collections.abc import Iterator


def steps(downtime_ms: int, n_steps: int, delay_per_gib: float,
          data_gib: float, completion_timeout: float | None = None
          ) -> Iterator[tuple[float, int]]:
    """Yield ``(seconds after start, max downtime in ms)`` pairs.

    Without a per-instance timeout this is nova's ramp: ``n_steps + 1``
    steps ``delay_per_gib * data_gib`` seconds apart, from
    ``downtime_ms / n_steps`` up to ``downtime_ms``.  With a per-instance
    ``completion_timeout`` the same values are spread over its first half
    and the maximum is set at half time (the 2018 spec's proposal), so the
    guest gets every chance to converge before the timeout action fires.
    """
    base = downtime_ms / n_steps
    offset = (downtime_ms - base) / n_steps
    if completion_timeout:
        half = completion_timeout / 2.0
        delay = half / n_steps
        for i in range(n_steps):
            yield (delay * i, int(base + offset * i))
        yield (half, int(downtime_ms))
        return
    delay = int(delay_per_gib * data_gib)
    for i in range(n_steps + 1):
        yield (float(delay * i), int(base + offset * i))
