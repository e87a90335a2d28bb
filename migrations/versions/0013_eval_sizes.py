"""Measures at other sizes (issue 23, ``evaluation.sizes``): ``run_size_measures``

One row per (run, size) a run's trained model was evaluated at besides its crop: the float
measures (mse, mae, psnr, ssim, n_images, classifier_accuracy, psnr_per_image, ms_ssim)
with the model's input and output at ``size`` px. Which sizes a run cannot take follows
from its spec and is not stored.

Self-contained: creates one table and nothing else.

Revision ID: 0013_eval_sizes
Revises: 0012_search_samples
Create Date: 2026-12-06 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0013_eval_sizes'
down_revision = '0012_search_samples'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'run_size_measures',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('run_id', sa.Integer(), nullable=False),
        sa.Column('size', sa.Integer(), nullable=False),
        sa.Column('mse', sa.Float(), nullable=False),
        sa.Column('mae', sa.Float(), nullable=False),
        sa.Column('psnr', sa.Float(), nullable=False),
        sa.Column('ssim', sa.Float(), nullable=False),
        sa.Column('n_images', sa.Integer(), nullable=False),
        sa.Column('classifier_accuracy', sa.Float(), nullable=True),
        sa.Column('psnr_per_image', sa.Float(), nullable=True),
        sa.Column('ms_ssim', sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(['run_id'], ['runs.id'],
                                name=op.f('fk_run_size_measures_run_id_runs'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_run_size_measures')),
        sa.UniqueConstraint('run_id', 'size', name=op.f('uq_run_size_measures_run_id')),
    )


def downgrade() -> None:
    op.drop_table('run_size_measures')
