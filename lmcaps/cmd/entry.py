"""The ``lmcaps`` console script.

It loads the command line (:mod:`lmcaps.cmd.main`: cliff, oslo.config and
the commands, ~0.1 s) inside a guard, so that Ctrl-C while it loads ends
as any interrupted command does: ``lmcaps: error: interrupted by SIGINT``
and exit status 130, no traceback.  This module imports nothing else.
"""

from __future__ import annotations

import importlib
import sys

#: 128 + SIGINT, as :data:`lmcaps.cmd.main.INTERRUPTED`.
INTERRUPTED = 130


def main() -> int:
    """Load and run the command line; returns its exit status."""
    try:
        cli = importlib.import_module('lmcaps.cmd.main')
    except KeyboardInterrupt:
        sys.stderr.write('lmcaps: error: interrupted by SIGINT\n')
        sys.stderr.flush()
        return INTERRUPTED
    code: int = cli.main()
    return code


if __name__ == '__main__':
    sys.exit(main())
