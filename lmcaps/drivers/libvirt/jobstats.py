"""Reading libvirt job stats into lmcaps progress (pure; no libvirt import)."""

from __future__ import annotations

from collections.abc import Mapping

from lmcaps.drivers.base import Phase, Progress

# libvirt's values, so that this module needs no libvirt import.
JOB_NONE, JOB_BOUNDED, JOB_UNBOUNDED = 0, 1, 2
JOB_COMPLETED, JOB_FAILED, JOB_CANCELLED = 3, 4, 5
STATE_RUNNING, STATE_PAUSED, STATE_SHUTOFF = 1, 3, 5
PAUSED_MIGRATION, PAUSED_USER, PAUSED_POSTCOPY = 2, 1, 12
RUNNING_POSTCOPY = 10

_TERMINAL = {JOB_COMPLETED: Phase.COMPLETED, JOB_FAILED: Phase.FAILED,
             JOB_CANCELLED: Phase.CANCELLED}


def phase_of(stats: Mapping[str, int], state: tuple[int, int] | None,
             paused_by_us: bool) -> Phase:
    """The phase from job stats and the source domain's (state, reason).

    ``data_total == 0`` is the prepare phase: QEMU has not started sending,
    and libvirt may act on control calls only later (seen with abortJob).
    """
    job = stats.get('type', JOB_NONE)
    if job in _TERMINAL:
        return _TERMINAL[job]
    if state is not None:
        st, reason = state
        if (st, reason) in ((STATE_PAUSED, PAUSED_POSTCOPY),
                            (STATE_RUNNING, RUNNING_POSTCOPY)):
            return Phase.POSTCOPY
        if st == STATE_PAUSED and (paused_by_us or reason == PAUSED_MIGRATION):
            return Phase.PAUSED
    if job == JOB_NONE or not stats.get('data_total'):
        return Phase.PREPARING
    return Phase.PRECOPY


def progress_of(stats: Mapping[str, int], state: tuple[int, int] | None,
                paused_by_us: bool = False) -> Progress:
    """A :class:`Progress` from ``virDomainGetJobStats`` and domain state."""
    return Progress(
        phase=phase_of(stats, state, paused_by_us),
        data_total=stats.get('data_total'),
        data_processed=stats.get('data_processed'),
        data_remaining=stats.get('data_remaining'),
        memory_dirty_rate=_dirty_bytes(stats),
        transfer_rate=stats.get('memory_bps'),
        iteration=stats.get('memory_iteration'))


def _dirty_bytes(stats: Mapping[str, int]) -> int | None:
    pages = stats.get('memory_dirty_rate')   # pages per second
    if pages is None:
        return None
    return pages * stats.get('memory_page_size', 4096)
