"""A unique token per event, so that a retried write is applied once.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('instance_actions_events') as batch:
        batch.add_column(sa.Column('token', sa.String(36)))
    op.create_index('instance_actions_events_token_idx',
                    'instance_actions_events', ['token'], unique=True)


def downgrade() -> None:
    op.drop_index('instance_actions_events_token_idx',
                  'instance_actions_events')
    with op.batch_alter_table('instance_actions_events') as batch:
        batch.drop_column('token')
