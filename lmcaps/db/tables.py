"""The event tables as the newest schema revision has them (nova's fields).

The migrations in ``lmcaps/db/migrations`` create them; this is what the
store's queries are built on.
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
    # Also serves the lookups by instance (leftmost column): one index less
    # to write per action.
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
    sa.Column('token', sa.String(36)),
    sa.Index('instance_actions_events_action_id_event_idx',
             'action_id', 'event'),
    sa.Index('instance_actions_events_token_idx', 'token', unique=True),
)

#: Column widths callers must respect (validation allows no more).
WIDTHS = {'request_id': 255, 'instance_uuid': 36, 'action': 255,
          'event': 255, 'result': 255, 'host': 255}
