"""The ``lmcaps`` console script.

It loads and runs the command line (:mod:`lmcaps.cmd.main`: cliff,
oslo.config and the commands, ~0.1 s to load) inside a guard, so that
Ctrl-C while it loads, or anywhere cliff does not handle it, ends as any
interrupted command does: ``lmcaps: error: interrupted by SIGINT``
and exit status 130, no traceback; once the command returned, SIGINT is
ignored while the interpreter exits.  SIGTERM and SIGHUP where no command
handles them print ``lmcaps: error: interrupted by SIGTERM`` and exit 143
(129 for SIGHUP).  (Only Python's own start, before
this module runs, ~20 ms, is left unguarded.)  This module imports
nothing else.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys

#: 128 + SIGINT, as :data:`lmcaps.cmd.main.INTERRUPTED`.
INTERRUPTED = 130


def _stopped(signum: int, _frame: object) -> None:
    """SIGTERM or SIGHUP where no command handles it (``migrate``,
    ``watch`` and ``drain`` do, while they run migrations): say so and
    exit with 128 + the signal's number, as the default action would
    without a word."""
    name = signal.Signals(signum).name
    try:
        sys.stderr.write(f'lmcaps: error: interrupted by {name}\n')
        sys.stderr.flush()
    finally:
        os._exit(128 + signum)


def _guard_signals() -> None:
    for sig in (signal.SIGTERM, signal.SIGHUP):
        # left alone where ignored (nohup) or already handled
        if signal.getsignal(sig) is signal.SIG_DFL:
            signal.signal(sig, _stopped)


def main() -> int:
    """Load and run the command line; returns its exit status."""
    _guard_signals()
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
    """The command returned: a Ctrl-C, SIGTERM or SIGHUP while the
    interpreter exits changes nothing (no traceback from an atexit
    handler, no exit status other than the command's)."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is _stopped:
            signal.signal(sig, signal.SIG_IGN)


if __name__ == '__main__':
    sys.exit(main())
