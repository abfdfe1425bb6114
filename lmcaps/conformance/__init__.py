"""The driver conformance kit: proves a driver does what it declares.

Shipped in the package so that out-of-tree driver maintainers run it too::

    import lmcaps.conformance

    class TestMyDriver(lmcaps.conformance.DriverConformanceTest):
        driver = 'mydriver'          # the lmcaps.drivers entry point
        backend = MyBackend          # a lmcaps.conformance.Backend

or from the command line: ``lmcaps conformance mydriver --config-file F
--backend mypkg.tests:MyBackend``.  See doc/conformance.rst.

The kit's test libraries (ddt, testtools, fixtures) come with the
``lmcaps[conformance]`` extra and are imported only when a name below is
used; :mod:`lmcaps.conformance.taskmodel` (the migration-task engine for
simulators) needs none of them.
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> module that defines it
_EXPORTS = {
    'Backend': 'backend', 'DESTINATION': 'backend', 'DRIVER': 'backend',
    'Fault': 'backend', 'PAUSED': 'backend', 'PRECHECK': 'backend',
    'RUNNING': 'backend', 'Scenario': 'backend', 'SOURCE': 'backend',
    'UnmetCondition': 'backend', 'FakeBackend': 'fake',
    'FAILED': 'results', 'REFUSED': 'results', 'VERIFIED': 'results',
    'resolve_backend': 'runner', 'run': 'runner',
    'DriverConformanceTest': 'suite',
}

__all__ = sorted(_EXPORTS)

#: Modules the kit needs beyond lmcaps's own requirements.
KIT_MODULES = ('ddt', 'testtools', 'fixtures')


def missing_kit_modules() -> list[str]:
    """The kit's test libraries that are not installed (empty when fine)."""
    missing = []
    for name in KIT_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    return getattr(importlib.import_module(f'{__name__}.{module}'), name)
