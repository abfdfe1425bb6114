"""The capability matrix, generated from the drivers' own declarations.

Nothing here states what a driver supports: every level and note comes from
``declare()`` of the installed driver classes (:func:`lmcaps.drivers.
driver_classes`), which import no hypervisor client library.  The matrix is
rendered as rows (for table, JSON, YAML and CSV output) and in the
support-matrix ini format that nova's documentation renders
(sphinx-feature-classification).
"""

from __future__ import annotations

import dataclasses
import textwrap
from typing import Any
from collections.abc import Iterable, Mapping, Sequence

from lmcaps import capabilities as caps
from lmcaps import exception

#: Column names of :func:`rows`.
COLUMNS = ('Driver', 'Operation', 'Support', 'Notes', 'Requires',
           'Condition')


@dataclasses.dataclass(frozen=True)
class OperationDoc:
    """What an operation is, for the matrix (not what drivers support)."""

    notes: str
    cli: str = ''


#: Description of each operation in the ini; the support comes from drivers.
OPERATION_DOCS: Mapping[caps.Operation, OperationDoc] = {
    caps.Operation.ABORT: OperationDoc(
        'Cancel a running live migration; the guest keeps running on the '
        'source host. This is what the timeout action "abort" does when '
        'the completion timeout is reached.',
        'openstack server migration abort <server> <migration>'),
    caps.Operation.FORCE_COMPLETE_POSTCOPY: OperationDoc(
        'Make a running live migration finish by switching it to '
        'post-copy: the guest runs on the destination at once and pulls '
        'its remaining memory over the network. Used by the timeout action '
        '"force_complete" with force_complete_mode postcopy, or auto when '
        '[lmcaps] permit_post_copy is set.',
        'openstack server migration force complete <server> <migration>'),
    caps.Operation.FORCE_COMPLETE_PAUSE: OperationDoc(
        'Make a running live migration finish by pausing the guest on the '
        'source so that the last dirty pages copy; the guest is resumed on '
        'the source if the migration then fails. Used by the timeout '
        'action "force_complete" with force_complete_mode pause, or auto '
        'when post-copy is not possible.',
        'openstack server migration force complete <server> <migration>'),
    caps.Operation.PER_INSTANCE_TIMEOUT: OperationDoc(
        'Honour a completion_timeout, timeout_action and '
        'force_complete_mode given for one live migration instead of the '
        "host's [lmcaps] defaults. A request the driver cannot honour is "
        'refused by the pre-checks on the source, before the migration '
        'starts, and the instance action event says why.',
        'lmcaps check --instance <uuid> --completion-timeout <seconds> '
        '--timeout-action <abort|force_complete>'),
}

_WIDTH = 79
_INDENT = '  '


#: The Support column of a driver that does not load.
LOAD_ERROR = 'load error'


def declarations(classes: Mapping[str, Any] | None = None,
                 names: Sequence[str] | None = None
                 ) -> list[caps.Declaration]:
    """The static declarations of the drivers, by name (strict).

    :param classes: name -> driver class; the installed ones by default.
    :param names: only these drivers, in this order.
    :raises: DriverNotFound for a name not installed; DriverLoadFailed when
        a driver does not import or declares wrongly.
    """
    decls, failures = survey(classes, names)
    for name, reason in failures.items():
        raise exception.DriverLoadFailed(name=name, reason=reason)
    return decls


def survey(classes: Mapping[str, Any] | None = None,
           names: Sequence[str] | None = None
           ) -> tuple[list[caps.Declaration], dict[str, str]]:
    """The declarations that load, and a load error for each driver that
    does not (it fails to import, or declares wrongly).

    :raises: DriverNotFound for a name not installed; DuplicateDriver.
    """
    failures: dict[str, str] = {}
    if classes is None:
        from lmcaps import drivers  # noqa: imports no hypervisor client
        found = drivers.scan()
        classes, failures = found.classes, dict(found.failures)
    known = set(classes) | set(failures)
    if names:
        unknown = [n for n in names if n not in known]
        if unknown:
            raise exception.DriverNotFound(
                name=unknown[0], available=', '.join(sorted(known)))
        selected = list(dict.fromkeys(names))
        failures = {n: r for n, r in failures.items() if n in selected}
    else:
        selected = sorted(known)
    result = []
    for name in selected:
        if name in failures:
            continue
        try:
            decl = classes[name].declare()
        except Exception as exc:
            failures[name] = (exc.message if isinstance(
                exc, exception.LmcapsException) else
                f'declare() raised {type(exc).__name__}: {exc}')
            continue
        if not isinstance(decl, caps.Declaration):
            failures[name] = (f'declare() returned {type(decl).__name__}, '
                              f'not a Declaration')
        elif decl.driver != name:
            failures[name] = f'declare() names the driver {decl.driver!r}'
        else:
            result.append(decl)
    return result, dict(sorted(failures.items()))


def failure_rows(failures: Mapping[str, str],
                 width: int = len(COLUMNS)) -> list[tuple[str, ...]]:
    """One row per driver that does not load: its error in the notes."""
    return [(name, '-', LOAD_ERROR, reason) + ('',) * (width - 4)
            for name, reason in failures.items()]


def rows(decls: Iterable[caps.Declaration]) -> list[tuple[str, ...]]:
    """One row per driver and operation, in :data:`COLUMNS` order."""
    return [(d.driver, op.value, cap.support.value, cap.notes, cap.requires,
             cap.condition)
            for d in decls for op, cap in d.capabilities.items()]


def with_verdicts(decls: Iterable[caps.Declaration], runs: Mapping
                  ) -> list[tuple[str, ...]]:
    """:func:`rows` plus the verdict of the last conformance run, if any.

    :param runs: ``lmcaps.conformance.results.load_last(state_path)``.
    """
    result = []
    for row in rows(decls):
        run = runs.get(row[0]) or {}
        op = (run.get('operations') or {}).get(row[1]) or {}
        verdict = op.get('verdict', 'not run')
        if op and op.get('declared') != row[2]:
            verdict += f" (run declared {op.get('declared')})"
        result.append(row + (verdict, run.get('finished_at', '')))
    return result


def as_dict(decls: Iterable[caps.Declaration]) -> dict:
    """The matrix as plain data: ``{'version', 'drivers': [...]}``."""
    return {'version': caps.DECLARATION_VERSION,
            'drivers': [d.as_dict() for d in decls]}


def driver_key(name: str) -> str:
    """The driver's key in the ini (``driver.<key>``)."""
    return name.replace('_', '-')


def operation_key(op: caps.Operation) -> str:
    """The operation's key in the ini (``operation.<key>``)."""
    return 'live-migration-' + op.value.replace('_', '-')


def driver_notes(cap: caps.Capability) -> str:
    """One text from a capability's notes, requirements and condition."""
    notes = cap.notes.strip()
    parts = [notes if notes[-1:] in '.!?' else notes + '.'] if notes else []
    if cap.requires:
        parts.append(f'Requires {cap.requires}.')
    if cap.condition:
        parts.append(f'Partial: {cap.condition}.')
    return ' '.join(parts)


def _value(key: str, text: str) -> list[str]:
    """``key=text`` wrapped with indented continuation lines.

    ``%`` is doubled: sphinx-feature-classification reads the file with
    configparser's interpolation.
    """
    text = ' '.join(text.split()).replace('%', '%%')
    lines = textwrap.wrap(f'{key}={text}', width=_WIDTH,
                          subsequent_indent=_INDENT,
                          break_long_words=False, break_on_hyphens=False)
    return lines or [f'{key}=']


def to_ini(decls: Sequence[caps.Declaration]) -> str:
    """The support matrix in nova's support-matrix ini format."""
    out = ['# Live-migration support matrix, generated by "lmcaps report',
           '# --ini" from the drivers\' own declarations: do not edit.',
           f'# Declaration format {caps.DECLARATION_VERSION}.', '']
    for d in decls:
        out.append(f'[driver.{driver_key(d.driver)}]')
        out.extend(_value('title', d.title))
        out.append('')
    for op in caps.Operation:
        doc = OPERATION_DOCS[op]
        out.append(f'[operation.{operation_key(op)}]')
        out.extend(_value('title', op.title))
        out.append('status=optional')
        out.extend(_value('notes', doc.notes))
        if doc.cli:
            out.extend(_value('cli', doc.cli))
        for d in decls:
            cap = d[op]
            key = driver_key(d.driver)
            out.append(f'driver.{key}={cap.support.value}')
            notes = driver_notes(cap)
            if notes:
                out.extend(_value(f'driver-notes.{key}', notes))
        out.append('')
    return '\n'.join(out)
