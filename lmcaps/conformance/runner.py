"""Running the kit outside a test runner, for ``lmcaps conformance``."""

from __future__ import annotations

import importlib
import unittest
from collections.abc import Sequence
from importlib import metadata
from typing import Any, TextIO

from lmcaps import exception
from lmcaps.conformance import fake
from lmcaps.conformance import harness
from lmcaps.conformance import results
from lmcaps.conformance import suite

#: Entry points naming the default backend of a driver (name = driver).
BACKENDS_NAMESPACE = 'lmcaps.conformance.backends'

BackendFactory = harness.BackendFactory


def resolve_backend(driver: str, spec: str | None = None) -> BackendFactory:
    """The backend class named ``module:Class``, or the driver's default.

    The default is the entry point named ``driver`` in
    ``lmcaps.conformance.backends``, else FakeBackend for ``fake``.

    :raises: BackendNotFound.
    """
    if spec:
        module, _sep, attr = spec.partition(':')
        if not module or not attr:
            raise exception.BackendNotFound(
                driver=driver, reason=f'{spec!r} is not module:Class')
        try:
            obj: Any = importlib.import_module(module)
            for part in attr.split('.'):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as exc:
            raise exception.BackendNotFound(driver=driver,
                                            reason=f'{spec}: {exc}')
        return obj
    for ep in metadata.entry_points(group=BACKENDS_NAMESPACE):
        if ep.name == driver:
            return ep.load()
    if driver == 'fake':
        return fake.FakeBackend
    raise exception.BackendNotFound(
        driver=driver, reason=f'none registered in {BACKENDS_NAMESPACE}')


def describe(factory: object) -> str:
    """``module:QualName`` of a backend factory, for the saved result."""
    name = getattr(factory, '__qualname__', None)
    module = getattr(factory, '__module__', None)
    return f'{module}:{name}' if name and module else repr(factory)


def reason_of(text: str) -> str:
    """The exception line(s) at the end of a formatted traceback."""
    lines = text.rstrip().splitlines()
    last_frame = max((i for i, line in enumerate(lines)
                      if line.startswith('  File ')), default=-1)
    body = lines[last_frame + 2:] if last_frame >= 0 else lines
    message = ' '.join(' '.join(body).split())
    for prefix in ('testtools.matchers._impl.MismatchError: ',
                   'AssertionError: '):
        if message.startswith(prefix):
            message = message[len(prefix):]
    return message


class _Collector(unittest.TestResult):
    """Files each test's outcome into a RunResult, printing as it goes."""

    def __init__(self, result: results.RunResult,
                 stream: TextIO | None) -> None:
        super().__init__()
        self.result = result
        self.stream = stream
        self.details: list[tuple[str, str]] = []

    def _add(self, test: unittest.TestCase, status: str,
             text: str = '') -> None:
        if self.result.declaration is None:
            self.result.declaration = getattr(test, 'declaration', None)
        name = getattr(test, '_testMethodName', test.id())
        reason = reason_of(text) if status != 'skipped' else text
        self.result.add(results.TestOutcome(name, status, reason))
        if text and status != 'skipped':
            self.details.append((name, text))
        if self.stream is not None:
            self.stream.write(f'{name} ... {status}\n')
            self.stream.flush()

    def addSuccess(self, test: unittest.TestCase) -> None:
        self._add(test, results.PASSED)

    def addFailure(self, test: unittest.TestCase, err: Any) -> None:
        self._add(test, 'failed', self._exc_info_to_string(err, test))

    def addError(self, test: unittest.TestCase, err: Any) -> None:
        self._add(test, 'error', self._exc_info_to_string(err, test))

    def addSkip(self, test: unittest.TestCase, reason: str) -> None:
        self._add(test, 'skipped', f'skipped: {reason}')

    def addExpectedFailure(self, test: unittest.TestCase, err: Any) -> None:
        self._add(test, 'failed', 'expected failure: the kit expects none')

    def addUnexpectedSuccess(self, test: unittest.TestCase) -> None:
        self._add(test, 'failed', 'unexpected success')


def run(driver: str, backend: BackendFactory | None = None, *,
        config_files: Sequence[str] = (), stream: TextIO | None = None,
        tests: Sequence[str] = ()) -> results.RunResult:
    """Run the whole kit against ``driver`` and return the verdicts.

    :param backend: a Backend factory; :func:`resolve_backend` by default.
    :param config_files: read into each test's private conf.
    :param stream: where to print one line per test (None: quiet).
    :param tests: only test methods whose names start with one of these.
    """
    factory = backend or resolve_backend(driver)

    class _Run(suite.DriverConformanceTest):
        """The kit against this backend (fault tests from its faults)."""

    for name, method in suite.faults.fault_methods(
            {f.value: f for f in getattr(factory, 'faults', ())}).items():
        setattr(_Run, name, method)
    loader = unittest.TestLoader()
    names = [n for n in loader.getTestCaseNames(_Run)
             if not tests or n.startswith(tuple(tests))]
    cases = []
    for name in names:
        case = _Run(name)
        case.driver = driver
        case.backend = factory
        case.config_files = tuple(config_files)
        cases.append(case)
    result = results.RunResult(driver=driver, backend=describe(factory),
                               tests=tuple(tests))
    collector = _Collector(result, stream)
    unittest.TestSuite(cases).run(collector)
    result.finish()
    result.tracebacks = collector.details
    return result
