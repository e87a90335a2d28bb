"""run contract: each run stores its own run spec; search and wall times

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 20:30:00
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

RUN_FIELDS = ("epochs", "batch_size", "schedule", "lr_search", "data", "resources",
              "classifier", "pretrained", "latent_dim", "seed")


def upgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('spec', sa.JSON(), nullable=True))
    # Backfill: a run's spec is its experiment's options with its own model and dataset.
    conn = op.get_bind()
    rows = conn.execute(sa.text(
        "SELECT runs.id, runs.model, runs.dataset, experiments.spec FROM runs "
        "JOIN experiments ON experiments.id = runs.experiment_id")).all()
    for run_id, model, dataset, spec in rows:
        spec = json.loads(spec) if isinstance(spec, str) else spec
        run_spec = {k: spec[k] for k in RUN_FIELDS if k in spec}
        run_spec.update(model=model, dataset=dataset)
        conn.execute(sa.text("UPDATE runs SET spec = :spec WHERE id = :id"),
                     {"spec": json.dumps(run_spec), "id": run_id})
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.alter_column('spec', existing_type=sa.JSON(), nullable=False)
    with op.batch_alter_table('measures', schema=None) as batch_op:
        batch_op.add_column(sa.Column('search_time_s', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('wall_time_s', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('measures', schema=None) as batch_op:
        batch_op.drop_column('wall_time_s')
        batch_op.drop_column('search_time_s')
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('spec')
