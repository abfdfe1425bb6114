"""SQLite settings for concurrent writers (threads and processes)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy import event as sa_event


def setup(engine: sa.Engine, busy_timeout: float, memory: bool,
          read_only_option: str) -> None:
    """WAL, busy timeout, foreign keys; writers lock at BEGIN.

    :param busy_timeout: seconds a writer waits for another's lock.
    :param memory: an in-memory database (no WAL).
    :param read_only_option: execution option marking read-only
        connections, which begin with a plain (shared) BEGIN.
    """
    millis = int(busy_timeout * 1000)

    @sa_event.listens_for(engine, 'connect')
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
        cur = dbapi_conn.cursor()
        try:
            cur.execute(f'PRAGMA busy_timeout = {millis}')
            if not memory:
                cur.execute('PRAGMA journal_mode = WAL')
                cur.execute('PRAGMA synchronous = NORMAL')
            cur.execute('PRAGMA foreign_keys = ON')
        finally:
            cur.close()

    @sa_event.listens_for(engine, 'begin')
    def _begin(conn: sa.Connection) -> None:
        # Taking the write lock at BEGIN makes a writer wait for another
        # (busy timeout) instead of failing when it upgrades a read lock.
        if conn.get_execution_options().get(read_only_option):
            conn.exec_driver_sql('BEGIN')
        else:
            conn.exec_driver_sql('BEGIN IMMEDIATE')
