"""The run contract's seams: the spec, the settings a job inherits, registries, errors."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import get_args

import pytest
from pydantic import SecretStr

from service.settings import (
    NOT_FOR_JOBS,
    Settings,
    env_name,
    job_environment,
    without_secrets,
)
from service.spec import ExperimentSpec
from workers.context import one_line_error
from workers.lr_search import METHODS
from workers.spec import LrMethodName, RunSpec

NON_DEFAULT = {
    "home": Path("/srv/aelab-home"), "database_url_file": Path("/run/secrets/db"),
    "protect_reads": True, "artifact_url": "s3://bucket/aelab", "data_root": "/data",
    "weights_dir": "/weights", "datasets_root": "/mnt/shared/datasets",
    "dataset_urls": {"shapes": "s3://lab-data/shapes", "kodim": "gs://b/kodak, 2024"},
    "allow_download": False, "tune_storage_url": "s3://bucket/tune",
    "max_trial_failures": 5, "max_body_bytes": 4096, "max_runs_per_experiment": 7, "max_epochs": 9,
    "max_in_flight": 3, "max_starting": 2, "dispatch_interval_s": 0.25,
    "reconcile_interval_s": 12.5,
    "migrate_on_start": False, "start_dispatcher": False, "dashboard_port": 9999,
    "public_dashboard_url": "http://ray.example:8265", "ray_head_dead_after_s": 7.5,
    "max_run_attempts": 5, "max_cluster_retries": 4, "gpu_cluster": True,
    "classifier_heartbeat_s": 2.5, "classifier_claim_expiry_s": 9.0,
    "db_retry_s": 33.0, "runner_idle_s": 42.0, "training_niceness": 5,
    "artifact_min_free_mb": 12.5, "log_format": "json", "webhook_retry_s": 60.0,
    "webhook_events": True,
    "mlflow_tracking_uri": "http://mlflow.example:5000", "public_url": "https://aelab.example",
}


def _clear_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("AELAB_") or key in ("DATABASE_URL", "RAY_ADDRESS"):
            monkeypatch.delenv(key)


def test_every_non_secret_setting_round_trips_through_the_job_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fields = set(Settings.model_fields)
    assert set(NON_DEFAULT) | set(NOT_FOR_JOBS) == fields, "a new setting needs a value here"
    for name, value in NON_DEFAULT.items():
        assert value != Settings.model_fields[name].default, name
    _clear_env(monkeypatch)
    settings = Settings(_env_file=None, **NON_DEFAULT, api_token=SecretStr("t0ken"),
                        ray_address="http://head:8265")
    env = job_environment(settings)
    assert "AELAB_API_TOKEN" not in env and "RAY_ADDRESS" not in env
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    driver = Settings(_env_file=None)
    for name in NON_DEFAULT:
        assert getattr(driver, name) == getattr(settings, name), name
    assert env["AELAB_TUNE_STORAGE_URL"] == "s3://bucket/tune"  # the name the setting reads


def test_the_database_password_never_travels_in_the_job_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _clear_env(monkeypatch)
    url = "postgresql+psycopg://aelab:hunter2-secret@db:5432/aelab"
    settings = Settings(_env_file=None, home=tmp_path, database_url=url)
    assert not (tmp_path / "secrets").exists()
    env = job_environment(settings, database_url_file=settings.database_url_for_jobs())
    assert not any("hunter2" in v for v in env.values())
    secret = Path(env[env_name("database_url_file")])
    assert secret.read_text() == url
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    # The default SQLite file needs no secret file: drivers derive it from the home.
    other = Settings(_env_file=None, home=tmp_path / "other")
    sqlite = job_environment(other, database_url_file=other.database_url_for_jobs())
    assert env_name("database_url_file") not in sqlite
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert Settings(_env_file=None).sqlalchemy_url == url


def test_the_ray_heads_environment_is_the_apis_without_its_secrets() -> None:
    environ = {"AELAB_API_TOKEN": "t0ken", "aelab_api_token": "t0ken",  # any case reads
               "AELAB_DATABASE_URL": "postgresql://u:pw@db/a", "DATABASE_URL": "sqlite://",
               "PGPASSWORD": "pw", "AELAB_HOME": "/srv/aelab",
               "AELAB_DATABASE_URL_FILE": "/run/secrets/db", "RAY_AUTH_MODE": "token",
               "PATH": "/usr/bin"}
    assert without_secrets(environ) == {
        "AELAB_HOME": "/srv/aelab", "AELAB_DATABASE_URL_FILE": "/run/secrets/db",
        "RAY_AUTH_MODE": "token", "PATH": "/usr/bin"}


def test_the_lr_search_registry_is_the_specs_vocabulary() -> None:
    assert set(METHODS) == set(get_args(LrMethodName))


def test_experiment_spec_composes_the_run_spec() -> None:
    spec = ExperimentSpec(models=["baseline", "resnet"], datasets=["synthetic", "mnist"],
                          epochs=7, seed=3, lr_search={"method": "range_test"})
    runs = spec.run_specs()
    assert [(r.model, r.dataset) for r in runs] == [
        ("baseline", "synthetic"), ("resnet", "synthetic"),
        ("baseline", "mnist"), ("resnet", "mnist")]
    assert all(r.epochs == 7 and r.seed == 3 and r.lr_search.method == "range_test"
               for r in runs)
    again = RunSpec.model_validate(runs[1].model_dump(mode="json"))  # what a driver does
    assert again == runs[1]
    assert runs[1].effective_latent_dim == 1024
    with pytest.raises(ValueError, match="Extra inputs"):
        RunSpec.model_validate({**runs[0].model_dump(), "colour": "red"})


def test_assets_name_the_files_torchvision_loads() -> None:
    from torchvision.models import ResNet34_Weights, VGG16_BN_Weights

    from models.assets import WEIGHTS_URLS, hub_checkpoints_dir

    assert {"resnet34": ResNet34_Weights.IMAGENET1K_V1.url,
                            "vgg16_bn": VGG16_BN_Weights.IMAGENET1K_V1.url} == WEIGHTS_URLS
    import torch

    assert hub_checkpoints_dir() == Path(torch.hub.get_dir()) / "checkpoints"


def test_errors_are_one_clean_line() -> None:
    from ray.exceptions import RayTaskError

    from models.training import TrainingDiverged

    cause = TrainingDiverged("training loss is nan at epoch 3: training diverged")
    wrapped = RayTaskError("train", "Traceback (most recent call last):\n  File x\n"
                           "\x1b[36mTrainingDiverged\x1b[0m: boom", cause)
    assert one_line_error(wrapped) == ("TrainingDiverged: training loss is nan at epoch 3: "
                                       "training diverged")
    assert one_line_error(ValueError("\x1b[31mred\x1b[0m\nsecond line")) == "ValueError: red"
    assert len(one_line_error(RuntimeError("x" * 2000))) == 1000
