"""PowerVM job and partition states in lmcaps terms (no pypowervm import).

Job ``Status`` values are pypowervm's ``JobStatus`` (wrappers/job.py)
plus ``FAILED_BEFORE_COMPLETION`` (seen in its recorded
job_response_exception.txt).  ``PartitionState`` values are pypowervm's
``LPARState`` (wrappers/base_partition.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lmcaps.drivers import base

NOT_MIGRATING = 'Not_Migrating'
MIGRATION_STARTING = 'Migration_Starting'
NOT_STARTED = 'NOT_STARTED'
RUNNING = 'RUNNING'
COMPLETED_OK = 'COMPLETED_OK'
FINAL_STATUSES = (COMPLETED_OK, 'COMPLETED_WITH_WARNINGS',
                  'COMPLETED_WITH_ERROR', 'FAILED_BEFORE_COMPLETION')

_RUN_STATES = {
    'running': base.RunState.RUNNING,
    'migrating running': base.RunState.RUNNING,
    'open firmware': base.RunState.RUNNING,
    'not activated': base.RunState.SHUT_OFF,
    'migrating not active': base.RunState.SHUT_OFF,
    'shutting down': base.RunState.RUNNING,
    'error': base.RunState.CRASHED,
    'suspended': base.RunState.PAUSED,
}


def first_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else ''


def one_line(exc: BaseException) -> str:
    return first_line(str(exc)) or type(exc).__name__


def run_state(partition_state: str) -> base.RunState:
    """RunState of a PartitionState ('running', 'not activated', ...)."""
    return _RUN_STATES.get((partition_state or '').lower(),
                           base.RunState.UNKNOWN)


def from_verdict(verdict: base.BlockingCall.Verdict) -> base.Progress:
    """The end of ``migrate_lpar``: returned = COMPLETED_OK, raised = failed.

    pypowervm raises JobRequestFailed for every final Status but
    COMPLETED_OK, and JobRequestTimedOut after cancelling a job that ran
    past its timeout.
    """
    if verdict.error is None:
        return base.Progress(base.Phase.COMPLETED, 1.0, COMPLETED_OK)
    return base.Progress(base.Phase.FAILED, raw_state=type(
        verdict.error).__name__, message=first_line(verdict.message))


def from_job(status: str, message: str) -> base.Progress:
    """A final job Status."""
    if status == COMPLETED_OK:
        return base.Progress(base.Phase.COMPLETED, 1.0, status)
    return base.Progress(base.Phase.FAILED, raw_state=status,
                         message=first_line(message))


def running(status: str, lpar: Any, abort_note: str | None) -> base.Progress:
    """A Migrate job NOT_STARTED or RUNNING, with the LPAR's state.

    :param abort_note: None without an abort of ours; '' while our
        MigrateAbort stands; its error once it failed.
    """
    fraction = None
    mstate = ''
    if lpar is not None:
        mstate = lpar.migration_state
        total = lpar._get_val_int('ProgressPartitionDataTotal', 0) or 0
        left = lpar._get_val_int('ProgressPartitionDataRemaining', 0) or 0
        if total > 0:
            fraction = max(0.0, min(1.0, 1 - left / total))
    raw = f'{status}/{mstate}' if mstate else status
    if abort_note == '':
        return base.Progress(base.Phase.CANCELLING, fraction, raw,
                             message='MigrateAbort accepted')
    if status == NOT_STARTED or mstate == MIGRATION_STARTING:
        phase = base.Phase.PREPARING
    else:
        phase = base.Phase.PRECOPY
    message = f'MigrateAbort failed: {abort_note}' if abort_note else ''
    return base.Progress(phase, fraction, raw, message=message)


def locate(lpar: Any, console: str, source_system: str | None,
           destination: str, system_name: Callable[[str], str | None]
           ) -> base.GuestLocation:
    """Where an LPAR is, from its AssociatedManagedSystem and PartitionState.

    :param lpar: the LPAR wrapper, None if the console no longer lists it.
    :param source_system: UUID of the managed system it migrates from.
    :param destination: the target managed system's name.
    :param system_name: reads a ManagedSystem's SystemName by UUID.
    """
    if lpar is None:
        return base.GuestLocation(base.GuestHost.NOWHERE,
                                  base.RunState.UNKNOWN,
                                  f'LPAR not known to {console}')
    run = run_state(lpar.state)
    detail = f'{lpar.state}, {lpar.migration_state}'
    if lpar.assoc_sys_uuid == source_system:
        return base.GuestLocation(base.GuestHost.SOURCE, run, detail)
    name = system_name(lpar.assoc_sys_uuid)
    if name is not None and name == destination:
        return base.GuestLocation(base.GuestHost.DESTINATION, run,
                                  f'{detail} on {name}')
    return base.GuestLocation(base.GuestHost.UNKNOWN, run,
                              f'{detail} on system {name or "?"} '
                              f'({lpar.assoc_sys_uuid})')
