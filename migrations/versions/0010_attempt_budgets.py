"""Attempt budgets: each lost attempt says what it was lost to

A run's attempts were capped as one budget, whatever ended them, so a run whose head was
replaced twice failed at the next loss though nothing was wrong with it (issue 25). An
attempt that was lost now records ``lost_to``: ``cluster`` (its Ray cluster confirmed
gone) or ``run`` (its driver died); the dispatcher counts each against its own budget
(``AELAB_MAX_CLUSTER_RETRIES``, ``AELAB_MAX_RUN_ATTEMPTS``).

Self-contained: adds one nullable column to ``run_attempts`` (NULL: not lost, or lost
before this revision, when the cause was not recorded; such attempts count as the run's).

Revision ID: 0010_attempt_budgets
Revises: 0009_field_measures
Create Date: 2026-12-08 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0010_attempt_budgets'
down_revision = '0009_field_measures'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('run_attempts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('lost_to', sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('run_attempts', schema=None) as batch_op:
        batch_op.drop_column('lost_to')
