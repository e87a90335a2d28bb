"""Field measures (issue 24): the measures a compression or representation paper reports

Nullable columns (runs evaluated before this have none of them):

- ``measures``: ``psnr_per_image`` and ``q_psnr_per_image`` (mean of each image's PSNR,
  CompressAI's convention), ``ms_ssim`` and ``q_ms_ssim`` (None under 176 px a side).
- ``measures``: ``probe_knn_accuracy``, ``probe_linear_accuracy`` and ``cluster_nmi``,
  what the test codes know about the labels (models.probes), and their ``q_`` twins on
  the codes the decoder gets back from the stream.
- ``codec_results``: ``psnr_per_image`` and ``ms_ssim``, measured as the model's.

Self-contained: adds nullable columns and nothing else.

Revision ID: 0009_field_measures
Revises: 0008_measures_contract
Create Date: 2026-12-05 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009_field_measures'
down_revision = '0008_measures_contract'
branch_labels = None
depends_on = None

COLUMNS = {
    'measures': ('psnr_per_image', 'ms_ssim', 'q_psnr_per_image', 'q_ms_ssim',
                 'probe_knn_accuracy', 'probe_linear_accuracy', 'cluster_nmi',
                 'q_probe_knn_accuracy', 'q_probe_linear_accuracy', 'q_cluster_nmi'),
    'codec_results': ('psnr_per_image', 'ms_ssim'),
}


def upgrade() -> None:
    for table, names in COLUMNS.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for name in names:
                batch_op.add_column(sa.Column(name, sa.Float(), nullable=True))


def downgrade() -> None:
    for table, names in COLUMNS.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for name in reversed(names):
                batch_op.drop_column(name)
