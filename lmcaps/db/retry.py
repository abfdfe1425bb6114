"""Retrying a database transaction after a lost connection, with backoff.

A transaction that fails because its connection broke (server restart,
``pg_terminate_backend``, too many connections, SQLite busy) is run again on
a new connection, with exponential backoff and jitter (tenacity), until it
succeeds or the time budget is spent.  The transactions of
:mod:`lmcaps.events_sql` are idempotent (each event carries a unique token),
so running one again after an unknown commit outcome applies it once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import tenacity
from sqlalchemy import exc as sa_exc

T = TypeVar('T')

#: Seconds a write keeps retrying before its error is raised.
BUDGET = 30.0


def transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a broken or unavailable connection (worth a retry).

    OperationalError covers a closed/terminated connection, a refused or
    exhausted server and a locked SQLite database; InterfaceError a
    connection already closed on the client side.
    """
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    orig = getattr(exc, 'orig', None)
    if type(orig).__module__ == 'sqlite3':
        # sqlite3 calls a missing table an OperationalError too
        text = str(orig).lower()
        return 'locked' in text or 'busy' in text
    return isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError,
                            sa_exc.DisconnectionError, sa_exc.TimeoutError))


#: Words of a server that accepted the connection, then dropped it
#: (libpq's and PostgreSQL's own): the server is there, so it is worth the
#: whole budget even when ``attempts`` limits other errors.
_DROPPED = ('server closed the connection', 'terminating connection',
            'connection already closed')


def dropped(exc: BaseException) -> bool:
    """Whether ``exc`` is a connection the server accepted and then lost
    (restart, ``pg_terminate_backend``), not one it never accepted."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    text = str(getattr(exc, 'orig', None) or exc).lower()
    return any(words in text for words in _DROPPED)


def run(fn: Callable[[], T], budget: float = BUDGET,
        attempts: int | None = None) -> T:
    """``fn()``, again after each transient error, within ``budget`` seconds.

    :param attempts: also stop after this many attempts whose error was not
        a :func:`dropped` connection (a wrong address or a refused login
        fails fast; a server that drops connections is retried for the
        whole budget).
    :raises: the last error once the budget or attempts are spent, or any
        non-transient error at once.
    """
    stop: Any = tenacity.stop_after_delay(budget)
    if attempts is not None:
        limit = attempts

        def fast(state: tenacity.RetryCallState) -> bool:
            exc = state.outcome.exception() if state.outcome else None
            return (state.attempt_number >= limit and
                    not (exc is not None and dropped(exc)))
        stop = stop | fast
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(transient), stop=stop,
        wait=tenacity.wait_exponential_jitter(initial=0.02, max=1.0),
        reraise=True)
    return retrying(fn)
