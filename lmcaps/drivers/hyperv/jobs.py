"""Hyper-V WMI v2 vocabulary: job states, return codes, VM states.

Pure functions from WMI property values to lmcaps terms, so that the
mapping is tested without a listener.  Sources (Hyper-V WMI v2 reference,
https://learn.microsoft.com/en-us/windows/win32/hyperv_v2/):

* ``CIM_ConcreteJob.JobState`` (msvm-concretejob, msvm-migrationjob):
  2 New, 3 Starting, 4 Running, 5 Suspended, 6 Shutting Down, 7 Completed,
  8 Terminated, 9 Killed, 10 Exception, 11 Service, 12 Query Pending;
  32768 is Hyper-V's "completed with warnings" (as OpenStack os-win counts
  it).  A Completed job with ``ErrorCode`` != 0 failed (os-win does the
  same).
* return codes of MigrateVirtualSystemToHost and RequestStateChange: 0
  Completed with No Error, 4096 Method Parameters Checked - Job Started /
  Transition Started, 4097 Invalid State Transition (Msvm_ConcreteJob),
  32768 Failed, 32769 Access denied, 32770 Not supported, 32771 Status is
  unknown, 32772 Timeout, 32773 Invalid parameter, 32774 System is in use,
  32775 Invalid state for this operation, 32776 Incorrect data type, 32777
  System is not available, 32778 Out of memory.
* ``Msvm_ComputerSystem.EnabledState`` (v2): 2 Enabled, 3 Disabled, 6
  Enabled but Offline (saved), 9 Quiesce (paused).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lmcaps.drivers import base

Phase = base.Phase

OK, JOB_STARTED, INVALID_STATE_TRANSITION = 0, 4096, 4097
INVALID_STATE = 32775
TERMINATE, KILL = 4, 5
MIGRATION_TYPE_VIRTUAL_SYSTEM = 32768

RETURN_CODES = {
    0: 'Completed with No Error', 4096: 'Job Started',
    4097: 'Invalid State Transition', 32768: 'Failed',
    32769: 'Access denied', 32770: 'Not supported',
    32771: 'Status is unknown', 32772: 'Timeout',
    32773: 'Invalid parameter', 32774: 'System is in use',
    32775: 'Invalid state for this operation',
    32776: 'Incorrect data type', 32777: 'System is not available',
    32778: 'Out of memory',
}

JOB_STATES = {
    2: 'New', 3: 'Starting', 4: 'Running', 5: 'Suspended',
    6: 'Shutting Down', 7: 'Completed', 8: 'Terminated', 9: 'Killed',
    10: 'Exception', 11: 'Service', 12: 'Query Pending',
    32768: 'Completed with warnings',
}
_PHASES = {2: Phase.PREPARING, 3: Phase.PREPARING, 4: Phase.PRECOPY,
           5: Phase.PRECOPY, 6: Phase.CANCELLING, 7: Phase.COMPLETED,
           8: Phase.CANCELLED, 9: Phase.CANCELLED, 10: Phase.FAILED,
           11: Phase.PRECOPY, 12: Phase.PRECOPY, 32768: Phase.COMPLETED}

ENABLED_STATES = {2: base.RunState.RUNNING, 3: base.RunState.SHUT_OFF,
                  6: base.RunState.SHUT_OFF, 9: base.RunState.PAUSED}
_ENABLED_WORDS = {2: 'Enabled', 3: 'Disabled', 6: 'Enabled but Offline '
                  '(saved)', 9: 'Quiesce (paused)'}


def as_int(value: Any) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def return_text(code: int | None) -> str:
    """``'32775 (Invalid state for this operation)'``."""
    return f'{code} ({RETURN_CODES.get(code, "undocumented")})' if \
        code is not None else 'no ReturnValue'


def job_path(host: str, instance_id: str) -> str:
    """The WMI object path of a migration job (the migration's reference)."""
    return (f'\\\\{host}\\root\\virtualization\\v2:'
            f'Msvm_MigrationJob.InstanceID="{instance_id}"')


def _true(value: Any) -> bool:
    return str(value).strip().lower() in ('true', '1')


def progress(props: Mapping[str, Any]) -> base.Progress:
    """A Progress from an Msvm_MigrationJob's properties (strings)."""
    state = as_int(props.get('JobState'))
    percent = as_int(props.get('PercentComplete'))
    phase = _PHASES.get(state, Phase.PRECOPY) if state is not None else \
        Phase.PREPARING
    error = as_int(props.get('ErrorCode')) or 0
    message = ' '.join(str(props.get(key) or '') for key in (
        'ErrorSummaryDescription', 'ErrorDescription')).strip()
    if phase is Phase.COMPLETED and error:
        phase = Phase.FAILED
    fraction = None if percent is None else max(0.0, min(1.0, percent / 100))
    if phase is Phase.COMPLETED:
        fraction = 1.0
    raw = f'JobState {state} ({JOB_STATES.get(state, "undocumented")})'
    if error:
        raw += f', ErrorCode {error}'
    return base.Progress(phase, fraction=fraction, raw_state=raw,
                         message=message if phase is Phase.FAILED else '')


def why_not_cancellable(props: Mapping[str, Any]) -> str:
    state = as_int(props.get('JobState'))
    words = f'JobState {state} ({JOB_STATES.get(state, "undocumented")})'
    if _PHASES.get(state or -1, Phase.PRECOPY).terminal:
        return f'the job has already ended: {words}'
    if not _true(props.get('Cancellable')):
        return (f'the job reports Cancellable = False ({words}, '
                f'{props.get("PercentComplete")} %): past the switch-over')
    return f'Hyper-V refused the state change ({words})'


def _one(rows: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    return rows[0] if rows else None


def location(on_source: Sequence[Mapping[str, Any]],
             on_destination: Sequence[Mapping[str, Any]]
             ) -> base.GuestLocation:
    """Where the VM is from each host's Msvm_ComputerSystem rows for it."""
    src, dst = _one(on_source), _one(on_destination)
    if src is None and dst is None:
        return base.GuestLocation(base.GuestHost.NOWHERE,
                                  base.RunState.UNKNOWN,
                                  'no host has the VM')
    both = src is not None and dst is not None
    pick, host = (src, base.GuestHost.SOURCE)
    if src is None or (both and as_int(dst.get('EnabledState')) == 2 and
                       as_int(src.get('EnabledState')) != 2):
        pick, host = (dst, base.GuestHost.DESTINATION)
    assert pick is not None
    enabled = as_int(pick.get('EnabledState'))
    run = ENABLED_STATES.get(enabled, base.RunState.UNKNOWN)
    detail = f'EnabledState {enabled} ({_ENABLED_WORDS.get(enabled, "?")})'
    if both:
        detail += '; both hosts list the VM'
    return base.GuestLocation(host, run, detail)
