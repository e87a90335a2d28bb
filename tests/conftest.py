from __future__ import annotations

import os
from pathlib import Path

import pytest

# Ray token auth for every cluster the tests start, set before anything imports Ray
# (Ray reads the mode and token once per process).
if "RAY_AUTH_TOKEN" not in os.environ and "RAY_AUTH_TOKEN_PATH" not in os.environ:
    import secrets
    import tempfile

    _token = Path(tempfile.mkdtemp(prefix="aelab-test-ray-")) / "auth_token"
    _token.write_text(secrets.token_hex(32))
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(_token)
os.environ["RAY_AUTH_MODE"] = "token"


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory: pytest.TempPathFactory):
    """One local Ray head for the whole session (4 CPUs, 2 fake GPUs, token auth on):
    the API's jobs run on it, and in-process tests join it as drivers. Started as `aelab
    serve` with secrets in its environment would start it (``RAY_HEAD_SECRETS``)."""
    from unittest import mock

    from service.orchestration.ray_executor import RayExecutor
    from service.orchestration.ray_head import LocalRayHead
    from tests.utils import RAY_HEAD_SECRETS

    with mock.patch.dict(os.environ, RAY_HEAD_SECRETS):
        head = LocalRayHead(state_dir=tmp_path_factory.mktemp("ray"), num_cpus=4,
                            num_gpus=2)
    RayExecutor(head.dashboard_url, job_env={}).wait_until_up(180)
    yield head
    import ray

    ray.shutdown()
    head.stop()


@pytest.fixture()
def ray_driver(ray_head):
    """This test process as a driver on the session's head (disconnected afterwards)."""
    import ray

    ray.init(address=ray_head.gcs_address, log_to_driver=False)
    yield ray_head
    ray.shutdown()


@pytest.fixture(scope="session")
def synthetic_splits():
    from models.data import load_dataset

    return load_dataset("synthetic", "/nonexistent-not-needed", train_limit=256,
                        test_limit=128, seed=0)


@pytest.fixture(scope="session")
def tiny_splits():
    """64 train images: enough for ResNet variants to take a few steps on the CPU."""
    from models.data import load_dataset

    return load_dataset("synthetic", "/nonexistent-not-needed", train_limit=64,
                        test_limit=32, seed=0)


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AELAB_HOME", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path


# --- databases: every service test runs on SQLite and, where reachable, PostgreSQL ------

POSTGRES_URL = os.environ.get("AELAB_TEST_POSTGRES_URL",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _postgres_admin_url() -> str | None:
    try:
        import psycopg

        url = POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(url, connect_timeout=3):
            return url
    except Exception:
        return None


@pytest.fixture(scope="session")
def postgres_database():
    """A throwaway PostgreSQL database for this test session (dropped at the end)."""
    admin = _postgres_admin_url()
    if admin is None:
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL}")
    import uuid

    import psycopg

    name = f"aelab_test_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path: Path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'aelab.db'}"
        return
    url = request.getfixturevalue("postgres_database")
    from sqlalchemy import create_engine, text

    from service.persistence.migrate import upgrade

    upgrade(url)
    yield url
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE experiments, runs, epoch_metrics, lr_trials, measures, "
                          "artifacts, reference_classifiers, run_attempts, webhook_outbox "
                          "RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture()
def settings(db_url: str, tmp_path: Path):
    from service.settings import Settings

    return Settings(home=tmp_path / "home", database_url=db_url, start_dispatcher=False,
                    max_runs_per_experiment=12, max_epochs=50)


@pytest.fixture()
def app(settings):
    from service.app import create_app

    return create_app(settings)


@pytest.fixture()
def client(app):
    from fastapi.testclient import TestClient

    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="session")
def private_postgres():
    """A PostgreSQL cluster of this test session's own (password auth, a free port),
    that tests may stop and start."""
    import shutil

    from tests.procs import PG_BIN, PrivatePostgres

    if not (PG_BIN / "initdb").is_file() or shutil.which("runuser") is None:
        pytest.skip(f"PostgreSQL server binaries not found in {PG_BIN}")
    pg = PrivatePostgres()
    yield pg
    pg.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def lifecycle_db(request, tmp_path: Path) -> str:
    """A database URL for tests with real processes: a SQLite file, or a fresh database
    on the session's private PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'aelab.db'}"
    import uuid

    return request.getfixturevalue("private_postgres").database(
        f"aelab_{uuid.uuid4().hex[:8]}")
