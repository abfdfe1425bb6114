"""How tests that need a real backend behave when it is missing.

Outside CI the test is skipped with a loud reason (also printed to stderr);
with ``CI=true`` a missing backend is a failure, never a skip.
"""

import os
import sys

import testtools


def in_ci() -> bool:
    return os.environ.get('CI', '').lower() in ('1', 'true', 'yes')


def require(test: testtools.TestCase, available: bool, reason: str) -> None:
    """Fail (in CI) or skip loudly (elsewhere) unless ``available``."""
    if available:
        return
    message = f'BACKEND MISSING: {reason}'
    if in_ci():
        test.fail(message + ' (CI=true: a missing backend fails the run)')
    sys.stderr.write(f'\n*** SKIPPING {test.id()}: {message}\n')
    test.skipTest(message)
