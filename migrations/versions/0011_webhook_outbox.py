"""The webhook outbox (issue 27): one row per run/experiment event, written in the same
transaction as the status change, delivered by the API's background loop.

Self-contained: adds one table and nothing else.

Revision ID: 0011_webhook_outbox
Revises: 0010_attempt_budgets
Create Date: 2026-12-12 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0011_webhook_outbox'
down_revision = '0010_attempt_budgets'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'webhook_outbox',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('delivery_id', sa.String(length=36), nullable=False),
        sa.Column('event', sa.String(length=32), nullable=False),
        sa.Column('experiment_id', sa.Integer(), nullable=True),
        sa.Column('run_id', sa.Integer(), nullable=True),
        sa.Column('body', sa.Text(), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('delivered_to', sa.JSON(), nullable=False),
        sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_outbox')),
        sa.UniqueConstraint('delivery_id', name=op.f('uq_webhook_outbox_delivery_id')),
    )
    op.create_index(op.f('ix_webhook_outbox_state'), 'webhook_outbox', ['state'],
                    unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_webhook_outbox_state'), table_name='webhook_outbox')
    op.drop_table('webhook_outbox')
