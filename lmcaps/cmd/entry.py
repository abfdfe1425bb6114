"""The ``lmcaps`` console script.

It loads and runs the command line (:mod:`lmcaps.cmd.main`: cliff,
oslo.config and the commands, ~0.1 s to load) inside a guard, so that
Ctrl-C while it loads, or anywhere cliff does not handle it, ends as any
interrupted command does: ``lmcaps: error: interrupted by SIGINT``
and exit status 130, no traceback; once the command returned, SIGINT is
ignored while the interpreter exits.  (Only Python's own start, before
this module runs, ~20 ms, is left unguarded.)  This module imports
nothing else.
"""

from __future__ import annotations

import importlib
import signal
import sys

#: 128 + SIGINT, as :data:`lmcaps.cmd.main.INTERRUPTED`.
INTERRUPTED = 130


def main() -> int:
    """Load and run the command line; returns its exit status."""
    try:
        cli = importlib.import_module('lmcaps.cmd.main')
        code: int = cli.main()
    except KeyboardInterrupt:   # before or after cliff's own handling
        sys.stderr.write('lmcaps: error: interrupted by SIGINT\n')
        sys.stderr.flush()
        return INTERRUPTED
    _done()
    return code


def _done() -> None:
    """The command returned: a Ctrl-C while the interpreter exits
    changes nothing (no traceback from an atexit handler, no exit status
    other than the command's)."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


if __name__ == '__main__':
    sys.exit(main())
