"""Measured compression: bytes per image, after-quantisation measures, codec rows, λ

- ``measures`` gains what evaluation now measures (models.compression): the quantiser's
  bits, the q_* measures of the images decoded from the test set's stream, the stream's
  bytes, bytes per image, bpp (native pixels), the native image's raw uint8 bytes and the
  per-run side information. All nullable: runs evaluated before this have none.
- ``runs.rd_lambda``: factorized_prior's effective λ (NULL for the other variants).
- ``codec_results``: JPEG/WebP/AVIF on a run's test images, matched to its bytes per image
  or along a quality curve.

Revision ID: 0007_compression
Revises: 0006_sweeps
Create Date: 2026-11-30 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007_compression'
down_revision = '0006_sweeps'
branch_labels = None
depends_on = None

NEVER_REUSE = {"sqlite_autoincrement": True}
MEASURE_COLUMNS = (
    ('quant_bits', sa.Integer()), ('q_mse', sa.Float()), ('q_mae', sa.Float()),
    ('q_psnr', sa.Float()), ('q_ssim', sa.Float()), ('q_accuracy', sa.Float()),
    ('stream_bytes', sa.BigInteger()), ('bytes_per_image', sa.Float()), ('bpp', sa.Float()),
    ('raw_bytes_per_image', sa.Integer()), ('side_info_bytes', sa.BigInteger()),
)


def upgrade() -> None:
    with op.batch_alter_table('measures', schema=None) as batch_op:
        for name, type_ in MEASURE_COLUMNS:
            batch_op.add_column(sa.Column(name, type_, nullable=True))
    with op.batch_alter_table('runs', schema=None, table_kwargs=NEVER_REUSE) as batch_op:
        batch_op.add_column(sa.Column('rd_lambda', sa.Float(), nullable=True))
    op.create_table(
        'codec_results',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('run_id', sa.Integer(), nullable=False),
        sa.Column('codec', sa.String(length=16), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=True),
        sa.Column('quality', sa.Float(), nullable=True),
        sa.Column('target_bytes', sa.Float(), nullable=True),
        sa.Column('min_bytes_per_image', sa.Float(), nullable=True),
        sa.Column('max_bytes_per_image', sa.Float(), nullable=True),
        sa.Column('bytes_per_image', sa.Float(), nullable=False),
        sa.Column('bpp', sa.Float(), nullable=False),
        sa.Column('mse', sa.Float(), nullable=False),
        sa.Column('mae', sa.Float(), nullable=False),
        sa.Column('psnr', sa.Float(), nullable=False),
        sa.Column('ssim', sa.Float(), nullable=False),
        sa.Column('classifier_accuracy', sa.Float(), nullable=True),
        sa.Column('n_images', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['run_id'], ['runs.id'],
                                name=op.f('fk_codec_results_run_id_runs'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_codec_results')),
    )
    op.create_index(op.f('ix_codec_results_run_id'), 'codec_results', ['run_id'],
                    unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_codec_results_run_id'), table_name='codec_results')
    op.drop_table('codec_results')
    with op.batch_alter_table('runs', schema=None, table_kwargs=NEVER_REUSE) as batch_op:
        batch_op.drop_column('rd_lambda')
    with op.batch_alter_table('measures', schema=None) as batch_op:
        for name, _ in reversed(MEASURE_COLUMNS):
            batch_op.drop_column(name)
