"""The event tables exactly as lmcaps 0.1 created them (no versioning).

Frozen copy of ``lmcaps/events_sql.py`` at commit d1be766, for the test
that upgrades such a database.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

actions = sa.Table(
    'instance_actions', metadata,
    sa.Column('id', sa.Integer, primary_key=True, autoincrement=True),
    sa.Column('request_id', sa.String(255), nullable=False),
    sa.Column('instance_uuid', sa.String(36), nullable=False),
    sa.Column('action', sa.String(255), nullable=False),
    sa.Column('start_time', sa.DateTime, nullable=False),
    sa.Column('finish_time', sa.DateTime),
    sa.Column('host', sa.String(255)),
    sa.Column('message', sa.String(255)),
    sa.UniqueConstraint('instance_uuid', 'request_id',
                        name='uniq_instance_actions0instance_uuid0request_id'),
)

action_events = sa.Table(
    'instance_actions_events', metadata,
    sa.Column('id', sa.Integer, primary_key=True, autoincrement=True),
    sa.Column('action_id', sa.Integer,
              sa.ForeignKey('instance_actions.id'), nullable=False),
    sa.Column('event', sa.String(255), nullable=False),
    sa.Column('start_time', sa.DateTime, nullable=False),
    sa.Column('finish_time', sa.DateTime),
    sa.Column('result', sa.String(255)),
    sa.Column('traceback', sa.Text),
    sa.Column('host', sa.String(255)),
    sa.Column('details', sa.Text),
    sa.Index('instance_actions_events_action_id_event_idx',
             'action_id', 'event'),
)
