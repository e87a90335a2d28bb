"""runs.seed: the seed of each run, so that runs of a sweep can be told apart and grouped

Revision ID: 0006_sweeps
Revises: 0005
Create Date: 2026-11-30 12:00:00
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = '0006_sweeps'
down_revision = '0005'
branch_labels = None
depends_on = None

NEVER_REUSE = {"sqlite_autoincrement": True}


def upgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('seed', sa.BigInteger(), nullable=True))
    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT id, spec FROM runs")).all()
    for run_id, spec in rows:
        spec = json.loads(spec) if isinstance(spec, str) else spec
        seed = (spec or {}).get("seed") or 0  # the run contract's default
        conn.execute(sa.text("UPDATE runs SET seed = :seed WHERE id = :id"),
                     {"seed": seed, "id": run_id})
    # SQLite rebuilds the table for NOT NULL: keep its AUTOINCREMENT (0004).
    with op.batch_alter_table('runs', schema=None, table_kwargs=NEVER_REUSE) as batch_op:
        batch_op.alter_column('seed', existing_type=sa.BigInteger(), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None, table_kwargs=NEVER_REUSE) as batch_op:
        batch_op.drop_column('seed')
