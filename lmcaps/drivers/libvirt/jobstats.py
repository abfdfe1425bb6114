"""Reading libvirt job stats into lmcaps progress (pure; no libvirt import)."""

from __future__ import annotations

from collections.abc import Mapping

from lmcaps.drivers.base import GuestHost, GuestLocation, Phase, Progress
from lmcaps.drivers.base import RunState

# libvirt's values, so that this module needs no libvirt import.
JOB_NONE, JOB_BOUNDED, JOB_UNBOUNDED = 0, 1, 2
JOB_COMPLETED, JOB_FAILED, JOB_CANCELLED = 3, 4, 5
STATE_RUNNING, STATE_BLOCKED, STATE_PAUSED = 1, 2, 3
STATE_SHUTDOWN, STATE_SHUTOFF, STATE_CRASHED, STATE_PMSUSPENDED = 4, 5, 6, 7
PAUSED_MIGRATION, PAUSED_USER, PAUSED_POSTCOPY = 2, 1, 12
PAUSED_POSTCOPY_FAILED = 13
RUNNING_POSTCOPY = 10
RUNNING_POSTCOPY_FAILED = 12

#: virDomainState -> RunState (libvirt-domain.h).
_RUN_STATES = {STATE_RUNNING: RunState.RUNNING, STATE_BLOCKED: RunState.RUNNING,
               STATE_PAUSED: RunState.PAUSED, STATE_PMSUSPENDED: RunState.PAUSED,
               STATE_SHUTDOWN: RunState.RUNNING, STATE_SHUTOFF: RunState.SHUT_OFF,
               STATE_CRASHED: RunState.CRASHED}
_PAUSED_REASONS = {PAUSED_USER: 'paused by a client (virDomainSuspend)',
                   PAUSED_MIGRATION: 'paused for migration',
                   PAUSED_POSTCOPY: 'paused in post-copy',
                   PAUSED_POSTCOPY_FAILED: 'post-copy failed'}

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


State = tuple[int, int]


def run_state(state: State) -> RunState:
    """Whether a domain in (state, reason) runs, in the API's words."""
    return _RUN_STATES.get(state[0], RunState.UNKNOWN)


def location_of(src: State | None, dst: State | None, src_error: str = '',
                dst_error: str = '') -> GuestLocation:
    """Where the guest is, from virDomainGetState on both hosts.

    :param src, dst: (state, reason) on the source / destination, None
        when that host has no such domain (or could not be asked, then the
        matching ``*_error`` says why).
    """
    def run(st: State) -> RunState:
        return _RUN_STATES.get(st[0], RunState.UNKNOWN)

    def why(st: State) -> str:
        if st[0] == STATE_PAUSED:
            return _PAUSED_REASONS.get(st[1], '')
        if st == (STATE_RUNNING, RUNNING_POSTCOPY_FAILED):
            return 'post-copy failed'
        return ''

    if src_error and (dst is None or run(dst) is not RunState.RUNNING):
        return GuestLocation.unknown(_join(src_error, dst_error))
    src_active = src is not None and src[0] not in (STATE_SHUTOFF,
                                                    STATE_CRASHED)
    dst_active = dst is not None and dst[0] not in (STATE_SHUTOFF,
                                                    STATE_CRASHED)
    if src_active and src is not None and (
            run(src) is RunState.RUNNING or src[1] != PAUSED_POSTCOPY):
        if not (src[0] == STATE_PAUSED and src[1] == PAUSED_MIGRATION and
                dst_active and dst is not None and
                run(dst) is RunState.RUNNING):
            return GuestLocation(GuestHost.SOURCE, run(src), why(src))
    if dst_active and dst is not None and (
            run(dst) is RunState.RUNNING or not src_active):
        return GuestLocation(GuestHost.DESTINATION, run(dst), why(dst))
    if src_active and src is not None:
        return GuestLocation(GuestHost.SOURCE, run(src), why(src))
    if src is not None:
        return GuestLocation(GuestHost.SOURCE, run(src))
    if dst is not None:
        return GuestLocation(GuestHost.DESTINATION, run(dst))
    if src_error or dst_error:
        return GuestLocation.unknown(_join(src_error, dst_error))
    return GuestLocation(GuestHost.NOWHERE, RunState.UNKNOWN,
                         'no host has the domain')


def _join(*errors: str) -> str:
    return '; '.join(e for e in errors if e)
