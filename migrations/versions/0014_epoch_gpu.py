"""Each epoch's GPU use: mean utilisation and peak memory of the run's device

An epoch trained on a CUDA device records NVML's mean utilisation (%) of that device over
the epoch and the most memory the run's process reserved on it (MiB); see ``models.gpu``
(issue 27).

Self-contained: adds two nullable columns to ``epoch_metrics`` (NULL: no GPU, or an epoch
recorded before this revision).

Revision ID: 0014_epoch_gpu
Revises: 0013_eval_sizes
Create Date: 2026-12-14 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0014_epoch_gpu'
down_revision = '0013_eval_sizes'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('epoch_metrics', schema=None) as batch_op:
        batch_op.add_column(sa.Column('gpu_utilization_percent', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('gpu_memory_peak_mib', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('epoch_metrics', schema=None) as batch_op:
        batch_op.drop_column('gpu_memory_peak_mib')
        batch_op.drop_column('gpu_utilization_percent')
