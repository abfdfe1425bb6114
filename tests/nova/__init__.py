"""Tests of lmcaps inside nova 34; they need the nova venv.

Run them with ``tools/run-nova-tests.sh`` (``tools/setup-nova-venv.sh``
builds ``.venv-nova``).  Where nova is not installed this package loads one
skipped test that says so, instead of failing to import.
"""

import os
import unittest


class NovaNotInstalled(unittest.TestCase):
    def test_nova_not_installed(self):
        from tests import backend
        backend.require(self, False, 'nova is not installed in this venv; '
                        'run tools/run-nova-tests.sh for tests/nova')


def load_tests(loader, standard_tests, pattern):
    try:
        import nova  # noqa: F401
    except ImportError:
        return standard_tests          # just NovaNotInstalled
    here = os.path.dirname(__file__)
    return loader.discover(start_dir=here, pattern=pattern or 'test*.py')
