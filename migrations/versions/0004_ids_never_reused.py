"""ids are never reused: SQLite experiments and runs get AUTOINCREMENT

Without it SQLite gives a deleted experiment's id (and its runs' ids) to the next ones, so
GET /runs/{id} could answer with a different run than the one a user saw. PostgreSQL's
sequences never reuse ids: nothing changes there.

Every later migration that rebuilds one of these tables on SQLite (batch mode) must pass
``table_kwargs={"sqlite_autoincrement": True}``: a rebuild does not carry it over.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 22:10:00
"""

from __future__ import annotations

from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in ("experiments", "runs"):
        # Rebuilt with AUTOINCREMENT; copying the rows seeds sqlite_sequence with max(id).
        with op.batch_alter_table(table, recreate="always",
                                  table_kwargs={"sqlite_autoincrement": True}):
            pass


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in ("experiments", "runs"):
        with op.batch_alter_table(table, recreate="always",
                                  table_kwargs={"sqlite_autoincrement": False}):
            pass
