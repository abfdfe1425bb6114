"""Verdicts of a conformance run, and the last run saved under state_path.

The saved file, ``<state_path>/conformance.json``, maps each driver name to
its last run::

    {"fake": {"driver": "fake", "backend": "...", "finished_at": "...",
              "passed": true, "declaration": {...Declaration.as_dict()...},
              "general": [{"test": "...", "status": "failed",
                           "reason": "..."}],
              "operations": {"abort": {"declared": "complete",
                                       "verdict": "verified",
                                       "tests": {"test_...": "passed"},
                                       "reasons": []}, ...}}}
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import re
import tempfile
from collections.abc import Mapping

from lmcaps import capabilities as caps

#: The operation works as declared (complete, or partial with its condition).
VERIFIED = 'verified'
#: Declared missing, and refused as declared: UnsupportedOperation from the
#: driver, a pre-check refusal, no side effect on the migration.
REFUSED = 'refused-as-declared'
#: The behaviour contradicts the declaration, or the kit could not verify it.
FAILED = 'failed'

PASSED = 'passed'
FILENAME = 'conformance.json'

_OP_SUFFIX = re.compile(r'_\d+_(?P<op>%s)$' % '|'.join(
    re.escape(op.value) for op in caps.Operation))


def operation_of(test_name: str) -> caps.Operation | None:
    """The operation a generated (ddt) test method is about, if any."""
    match = _OP_SUFFIX.search(test_name)
    return caps.Operation(match.group('op')) if match else None


@dataclasses.dataclass
class TestOutcome:
    """One test's result: ``passed``, ``failed``, ``error`` or ``skipped``."""

    test: str
    status: str
    reason: str = ''

    @property
    def ok(self) -> bool:
        return self.status == PASSED


@dataclasses.dataclass
class OperationResult:
    """The verdict on one operation and the tests it rests on."""

    declared: caps.Support | None
    tests: list[TestOutcome] = dataclasses.field(default_factory=list)

    @property
    def verdict(self) -> str:
        if (self.declared is None or not self.tests or
                any(not t.ok for t in self.tests)):
            return FAILED
        if self.declared is caps.Support.MISSING:
            return REFUSED
        if self.declared.usable:
            return VERIFIED
        return FAILED   # UNKNOWN is never a pass

    @property
    def reasons(self) -> list[str]:
        found = [f'{t.test}: {t.reason}' for t in self.tests if not t.ok]
        if not self.tests:
            found.append('no test ran for this operation')
        if self.declared is None:
            found.append('the declaration could not be read')
        return found


@dataclasses.dataclass
class RunResult:
    """A whole run of the kit against one driver."""

    driver: str
    backend: str
    declaration: caps.Declaration | None = None
    general: list[TestOutcome] = dataclasses.field(default_factory=list)
    operations: dict[caps.Operation, OperationResult] = dataclasses.field(
        default_factory=dict)
    finished_at: str = ''
    #: (test, formatted traceback) of each failed test; not saved.
    tracebacks: list[tuple[str, str]] = dataclasses.field(
        default_factory=list, repr=False)

    def add(self, outcome: TestOutcome) -> None:
        """File one test's outcome under its operation, or as general."""
        op = operation_of(outcome.test.rsplit('.', 1)[-1])
        if op is None:
            self.general.append(outcome)
        else:
            self.operation(op).tests.append(outcome)

    def operation(self, op: caps.Operation) -> OperationResult:
        if op not in self.operations:
            self.operations[op] = OperationResult(None)
        return self.operations[op]

    def finish(self) -> None:
        """Fill in the declared levels and the time; every operation listed."""
        for op in caps.Operation:
            res = self.operation(op)
            if self.declaration is not None:
                res.declared = self.declaration.support(op)
        self.finished_at = datetime.datetime.now(
            datetime.timezone.utc).isoformat(timespec='seconds')

    @property
    def passed(self) -> bool:
        return (all(t.ok for t in self.general) and bool(self.general) and
                all(self.operation(op).verdict != FAILED
                    for op in caps.Operation))

    def as_dict(self) -> dict:
        return {
            'driver': self.driver,
            'backend': self.backend,
            'finished_at': self.finished_at,
            'passed': self.passed,
            'declaration': (self.declaration.as_dict()
                            if self.declaration else None),
            'general': [dataclasses.asdict(t) for t in self.general],
            'operations': {
                op.value: {
                    'declared': (res.declared.value if res.declared
                                 else None),
                    'verdict': res.verdict,
                    'tests': {t.test.rsplit('.', 1)[-1]: t.status
                              for t in res.tests},
                    'reasons': res.reasons,
                } for op, res in ((op, self.operation(op))
                                  for op in caps.Operation)
            },
        }


def path(state_path: str) -> str:
    """Where the last runs are saved."""
    return os.path.join(os.path.expanduser(state_path), FILENAME)


def load_last(state_path: str) -> dict:
    """The last run of each driver, ``{driver: run dict}``; {} if none.

    A file that cannot be read as JSON counts as no run at all.
    """
    try:
        with open(path(state_path), encoding='utf-8') as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save(state_path: str, result: RunResult | Mapping) -> str:
    """Replace the saved run of that driver, atomically; returns the file."""
    data = result.as_dict() if isinstance(result, RunResult) else dict(result)
    target = path(state_path)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    runs = load_last(state_path)
    runs[data['driver']] = data
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target),
                               prefix='.conformance-', suffix='.json')
    try:
        with os.fdopen(fd, 'w', encoding='utf-8') as fh:
            json.dump(runs, fh, indent=2, sort_keys=True)
            fh.write('\n')
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise
    return target
