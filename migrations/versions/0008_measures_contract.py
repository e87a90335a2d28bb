"""The measures contract: every measure a run reports has its column

``workers.measures.RunMeasures`` is now what a run reports and what ``measures`` stores,
one column per measure. Two measures the trainer reported were dropped without a word
until now; they get their columns (nullable: runs evaluated before this have neither):

- ``native_pixels``: H × W of the dataset's native image, the pixels bpp is counted over.
- ``rd_lambda``: the λ factorized_prior's model was trained with (NULL for the others).

Self-contained: adds two nullable columns to ``measures`` and nothing else.

Revision ID: 0008_measures_contract
Revises: 0007_compression
Create Date: 2026-12-03 13:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008_measures_contract'
down_revision = '0007_compression'
branch_labels = None
depends_on = None

COLUMNS = (('native_pixels', sa.Integer()), ('rd_lambda', sa.Float()))


def upgrade() -> None:
    with op.batch_alter_table('measures', schema=None) as batch_op:
        for name, type_ in COLUMNS:
            batch_op.add_column(sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('measures', schema=None) as batch_op:
        for name, _ in reversed(COLUMNS):
            batch_op.drop_column(name)
