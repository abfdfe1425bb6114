"""Versioned schema of the event database, with alembic.

The migrations live in ``lmcaps/db/migrations/versions``; the applied
revision is kept in the table ``lmcaps_alembic_version``.  :func:`upgrade`
brings a database to the newest revision (the store calls it on first use
when :func:`current` is not :func:`head`), guarded so that any number of
processes starting at once on an empty database all succeed:

- PostgreSQL: the upgrade runs in one transaction holding a transaction
  advisory lock (``pg_advisory_xact_lock``); DDL is transactional, so a
  waiting process sees either nothing or the whole new schema;
- SQLite: the upgrade runs in one ``BEGIN IMMEDIATE`` transaction (the
  store's engine begins every write that way), which excludes other writers.

A database created before versioning (lmcaps 0.1, plain ``create_all``)
holds the tables of revision 0001: that revision keeps them and the later
ones are applied on top.
"""

from __future__ import annotations

import os

import sqlalchemy as sa
from alembic import command
from alembic import config as alembic_config
from alembic import script as alembic_script
from alembic.runtime import migration

#: The alembic version table of lmcaps (not alembic's default name, so that
#: a database shared with another application keeps both).
VERSION_TABLE = 'lmcaps_alembic_version'
#: Key of the PostgreSQL advisory lock held while upgrading.
LOCK_KEY = 0x6c6d636170730001   # 'lmcaps' + 1

_HERE = os.path.dirname(os.path.abspath(__file__))


def _config(conn: sa.Connection | None = None) -> alembic_config.Config:
    cfg = alembic_config.Config()
    cfg.set_main_option('script_location', os.path.join(_HERE, 'migrations'))
    cfg.attributes['connection'] = conn
    return cfg


def head() -> str:
    """The newest revision shipped with this lmcaps."""
    script = alembic_script.ScriptDirectory.from_config(_config())
    return script.get_current_head() or ''


def current(conn: sa.Connection) -> str | None:
    """The revision the database is at; None when it has none yet."""
    ctx = migration.MigrationContext.configure(
        conn, opts={'version_table': VERSION_TABLE})
    return ctx.get_current_revision()


def upgrade(engine: sa.Engine, revision: str = 'head') -> str:
    """Upgrade the database to ``revision``, under the lock; returns it.

    :raises: sqlalchemy.exc.SQLAlchemyError from the database.
    """
    with engine.begin() as conn:
        if conn.dialect.name == 'postgresql':
            conn.execute(sa.text('SELECT pg_advisory_xact_lock(:key)'),
                         {'key': LOCK_KEY})
        command.upgrade(_config(conn), revision)
        return current(conn) or ''


def read_revision(conn: sa.Connection) -> str | None:
    """:func:`current`, leaving no transaction open on ``conn``."""
    try:
        return current(conn)
    finally:
        if conn.in_transaction():
            conn.rollback()
