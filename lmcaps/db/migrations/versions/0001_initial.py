"""The schema lmcaps 0.1 created without migrations (nova's two tables).

Databases created before schema versioning already hold these tables; they
are kept as they are, and only the version is recorded.

Revision ID: 0001
Revises: None
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if not inspector.has_table('instance_actions'):
        op.create_table(
            'instance_actions',
            sa.Column('id', sa.Integer, primary_key=True, autoincrement=True),
            sa.Column('request_id', sa.String(255), nullable=False),
            sa.Column('instance_uuid', sa.String(36), nullable=False),
            sa.Column('action', sa.String(255), nullable=False),
            sa.Column('start_time', sa.DateTime, nullable=False),
            sa.Column('finish_time', sa.DateTime),
            sa.Column('host', sa.String(255)),
            sa.Column('message', sa.String(255)),
            sa.UniqueConstraint(
                'instance_uuid', 'request_id',
                name='uniq_instance_actions0instance_uuid0request_id'))
    if not inspector.has_table('instance_actions_events'):
        op.create_table(
            'instance_actions_events',
            sa.Column('id', sa.Integer, primary_key=True, autoincrement=True),
            sa.Column('action_id', sa.Integer,
                      sa.ForeignKey('instance_actions.id'), nullable=False),
            sa.Column('event', sa.String(255), nullable=False),
            sa.Column('start_time', sa.DateTime, nullable=False),
            sa.Column('finish_time', sa.DateTime),
            sa.Column('result', sa.String(255)),
            sa.Column('traceback', sa.Text),
            sa.Column('host', sa.String(255)),
            sa.Column('details', sa.Text))
        op.create_index('instance_actions_events_action_id_event_idx',
                        'instance_actions_events', ['action_id', 'event'])


def downgrade() -> None:
    op.drop_table('instance_actions_events')
    op.drop_table('instance_actions')
