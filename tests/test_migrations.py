"""Alembic owns the schema: it builds an empty DB of each kind, with no drift."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from service.persistence.migrate import current, upgrade
from service.persistence.tables import Base


def test_upgrade_builds_the_schema_and_autogenerate_finds_no_drift(db_url: str) -> None:
    upgrade(db_url)
    upgrade(db_url)  # idempotent
    assert current(db_url) == "0003"
    engine = create_engine(db_url)
    try:
        tables = set(inspect(engine).get_table_names())
        assert {"experiments", "runs", "epoch_metrics", "lr_trials", "measures", "artifacts",
                "reference_classifiers", "alembic_version"} <= tables
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == []
    finally:
        engine.dispose()
