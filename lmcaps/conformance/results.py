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
#: A run limited by a test filter selected no test about it: no verdict.
NOT_RUN = 'not run'

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
    #: The run was limited to some tests: no test here is ``not run``, not
    #: a failure.
    filtered: bool = False

    @property
    def verdict(self) -> str:
        if not self.tests and self.filtered:
            return NOT_RUN
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
        if self.verdict == NOT_RUN:
            return []
        found = [f'{t.test}: {t.reason}' for t in self.tests if not t.ok]
        if not self.tests:
            found.append('no test ran for this operation')
        if self.declared is None:
            found.append('the declaration could not be read')
        return found


@dataclasses.dataclass
class RunResult:
    """A whole run of the kit against one driver.

    ``tests``: the test-name prefixes the run was limited to (none: the
    whole kit).  In a limited run, what no selected test is about is
    ``not run`` and does not count against :attr:`passed`; in a whole run
    it fails.
    """

    driver: str
    backend: str
    declaration: caps.Declaration | None = None
    tests: tuple[str, ...] = ()
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
            self.operations[op] = OperationResult(None,
                                                  filtered=bool(self.tests))
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
    def general_verdict(self) -> str:
        """The verdict on the plugin as a whole (the general tests)."""
        if not self.general:
            return NOT_RUN if self.tests else FAILED
        return VERIFIED if all(t.ok for t in self.general) else FAILED

    @property
    def passed(self) -> bool:
        """No verdict failed, and at least one test ran."""
        ran = bool(self.general) or any(
            self.operation(op).tests for op in caps.Operation)
        return ran and self.general_verdict != FAILED and all(
            self.operation(op).verdict != FAILED for op in caps.Operation)

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
