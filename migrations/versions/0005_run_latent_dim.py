"""runs.latent_dim: the effective latent size of each run, to filter runs across experiments

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 09:00:00
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

# The variants' own latent sizes when this revision was written (models/catalog.py): a run
# whose spec leaves latent_dim unset has its variant's. Frozen here so that this migration
# means the same thing whatever the catalog becomes.
VARIANT_LATENT = {"pretrained_resnet": 1024, "resnet": 1024}
DEFAULT_LATENT = 1000
NEVER_REUSE = {"sqlite_autoincrement": True}


def upgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('latent_dim', sa.Integer(), nullable=True))
    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT id, model, spec FROM runs")).all()
    for run_id, model, spec in rows:
        spec = json.loads(spec) if isinstance(spec, str) else spec
        latent = (spec or {}).get("latent_dim") or VARIANT_LATENT.get(model, DEFAULT_LATENT)
        conn.execute(sa.text("UPDATE runs SET latent_dim = :latent WHERE id = :id"),
                     {"latent": latent, "id": run_id})
    # SQLite rebuilds the table for NOT NULL: keep its AUTOINCREMENT (0004), which the
    # rebuild would not carry over by itself.
    with op.batch_alter_table('runs', schema=None, table_kwargs=NEVER_REUSE) as batch_op:
        batch_op.alter_column('latent_dim', existing_type=sa.Integer(), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None, table_kwargs=NEVER_REUSE) as batch_op:
        batch_op.drop_column('latent_dim')
