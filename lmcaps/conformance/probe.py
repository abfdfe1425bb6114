"""Probes run in a clean interpreter: what declaring a driver imports."""

from __future__ import annotations

import json
import subprocess
import sys

_SCRIPT = r'''
import json, sys
from oslo_config import cfg
from lmcaps import drivers
before = set(sys.modules)
cls = drivers.driver_class(sys.argv[1])
cls.declare()
cls.list_opts()
cls(cfg.ConfigOpts())
print(json.dumps(sorted(set(sys.modules) - before)))
'''


def imports_to_declare(driver: str, timeout: float = 120.0) -> list[str]:
    """Modules a fresh interpreter imports to load, declare and instantiate.

    Nothing connects: ``connect()`` is not called.

    :raises: RuntimeError with the interpreter's stderr if the probe fails.
    """
    proc = subprocess.run([sys.executable, '-c', _SCRIPT, driver],
                          capture_output=True, text=True, timeout=timeout,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f'loading driver {driver!r} in a fresh '
                           f'interpreter failed:\n{proc.stderr.strip()}')
    return json.loads(proc.stdout.strip().splitlines()[-1])


def clients_among(modules: list[str], clients: tuple[str, ...]) -> list[str]:
    """The modules that are (or are inside) one of ``clients``."""
    wanted = set(clients)
    return sorted(m for m in modules if m.split('.', 1)[0] in wanted)
