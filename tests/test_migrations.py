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
    assert current(db_url) == "0004"
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


def test_0004_backfills_each_runs_effective_latent_size(db_url: str) -> None:
    import json

    from alembic import command
    from sqlalchemy import text

    from service.persistence.migrate import alembic_config

    upgrade(db_url)
    command.downgrade(alembic_config(db_url), "0003")  # the PostgreSQL fixture is at head
    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO experiments (id, name, spec, status, created_at) "
                              "VALUES (1, 'old', '{}', 'succeeded', CURRENT_TIMESTAMP)"))
            for run_id, model, latent in ((1, "baseline", None), (2, "resnet", None),
                                          (3, "resnet", 64)):
                conn.execute(text(
                    "INSERT INTO runs (id, experiment_id, uid, model, dataset, status, epoch, "
                    "epochs_total, spec, attempt, created_at, updated_at) VALUES (:id, 1, :uid, "
                    ":model, 'mnist', 'succeeded', 15, 15, :spec, 0, CURRENT_TIMESTAMP, "
                    "CURRENT_TIMESTAMP)"), {"id": run_id, "uid": f"u{run_id}", "model": model,
                                            "spec": json.dumps({"latent_dim": latent})})
        upgrade(db_url)
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT id, latent_dim FROM runs ORDER BY id")).all()
        assert [tuple(r) for r in rows] == [(1, 1000), (2, 1024), (3, 64)]
    finally:
        engine.dispose()
