"""Search samples: a run may be sample i of its experiment's search

An experiment with a ``search`` block makes its runs one sample at a time (issue 26); each
such run records its index among its (model, dataset)'s samples in ``runs.sample``, unique
per (experiment, model, dataset), so a sample is never made twice, even by two proposers
at once. Grid runs keep NULL. The new run status ``pruned`` needs no change: statuses are
stored as strings without a CHECK constraint.

Self-contained: one nullable column and one unique index on ``runs``.

Revision ID: 0012_search_samples
Revises: 0011_webhook_outbox
Create Date: 2026-12-12 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0012_search_samples'
down_revision = '0011_webhook_outbox'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sample', sa.Integer(), nullable=True))
        batch_op.create_index('ix_runs_search_sample',
                              ['experiment_id', 'model', 'dataset', 'sample'], unique=True)


def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_index('ix_runs_search_sample')
        batch_op.drop_column('sample')
