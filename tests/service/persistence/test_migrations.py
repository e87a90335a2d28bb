"""Alembic owns the schema: it builds an empty DB of each kind, with no drift."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from service.persistence.migrate import current, upgrade
from service.persistence.tables import Base
from tests.utils import API, spec


def test_upgrade_builds_the_schema_and_autogenerate_finds_no_drift(db_url: str) -> None:
    upgrade(db_url)
    upgrade(db_url)  # idempotent
    assert current(db_url) == "0014_epoch_gpu"
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


def test_ids_are_never_reused_after_delete(client) -> None:
    first = client.post(f"{API}/experiments", json=spec()).json()
    client.post(f"{API}/experiments/{first['id']}/cancel")
    assert client.delete(f"{API}/experiments/{first['id']}").status_code == 204
    second = client.post(f"{API}/experiments", json=spec()).json()
    assert second["id"] > first["id"]
    assert second["runs"][0]["id"] > first["runs"][0]["id"]
    assert client.get(f"{API}/runs/{first['runs'][0]['id']}").status_code == 404


def test_upgrading_a_sqlite_database_with_rows_keeps_them_and_their_children(tmp_path
                                                                            ) -> None:
    """0004 (and 0005) rebuild SQLite tables: children survive (no cascade on the
    rebuild) and ids stay never reused after every later rebuild."""
    from sqlalchemy import text

    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0003")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO experiments (id, name, spec, status, created_at) "
                          "VALUES (7, 'old', '{}', 'succeeded', '2026-01-01')"))
        conn.execute(text(
            "INSERT INTO runs (id, experiment_id, uid, model, dataset, status, epoch, "
            "epochs_total, spec, attempt, created_at, updated_at) VALUES (9, 7, 'u', "
            "'baseline', 'synthetic', 'succeeded', 1, 1, '{}', 0, '2026-01-01', "
            "'2026-01-01')"))
        conn.execute(text("INSERT INTO epoch_metrics (run_id, epoch, phase, size, lr, "
                          "train_loss, val_loss, val_mse, val_mae, seconds, images_per_s) "
                          "VALUES (9, 1, 'phase2', 32, 0.001, 1, 1, 1, 1, 1, 1)"))
    engine.dispose()
    upgrade(url)
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            assert conn.execute(text("SELECT count(*) FROM epoch_metrics")).scalar() == 1
            conn.execute(text("DELETE FROM runs WHERE id = 9"))
            conn.execute(text("INSERT INTO runs (experiment_id, uid, model, dataset, status, "
                              "epoch, epochs_total, spec, attempt, created_at, updated_at, "
                              "latent_dim, seed) VALUES (7, 'v', 'baseline', 'synthetic', "
                              "'queued', 0, 1, '{}', 0, '2026-01-01', '2026-01-01', 1000, 0)"))
            assert conn.execute(text("SELECT max(id) FROM runs")).scalar() == 10
    finally:
        engine.dispose()


def test_0005_backfills_each_runs_effective_latent_size(db_url: str) -> None:
    import json

    from alembic import command
    from sqlalchemy import text

    from service.persistence.migrate import alembic_config

    upgrade(db_url)
    command.downgrade(alembic_config(db_url), "0004")  # the PostgreSQL fixture is at head
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


def test_0006_backfills_each_runs_seed_from_its_spec(db_url: str) -> None:
    import json

    from alembic import command
    from sqlalchemy import text

    from service.persistence.migrate import alembic_config

    upgrade(db_url)
    command.downgrade(alembic_config(db_url), "0005")
    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO experiments (id, name, spec, status, created_at) "
                              "VALUES (1, 'old', '{}', 'succeeded', CURRENT_TIMESTAMP)"))
            for run_id, spec in ((1, {}), (2, {"seed": 7}), (3, {"seed": 2**32 - 1})):
                conn.execute(text(
                    "INSERT INTO runs (id, experiment_id, uid, model, dataset, status, epoch, "
                    "epochs_total, spec, attempt, created_at, updated_at, latent_dim) VALUES "
                    "(:id, 1, :uid, 'baseline', 'mnist', 'succeeded', 15, 15, :spec, 0, "
                    "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 1000)"),
                    {"id": run_id, "uid": f"u{run_id}", "spec": json.dumps(spec)})
        upgrade(db_url)
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT id, seed FROM runs ORDER BY id")).all()
        assert [tuple(r) for r in rows] == [(1, 0), (2, 7), (3, 2**32 - 1)]
    finally:
        engine.dispose()
