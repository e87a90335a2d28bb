"""End to end on a real local Ray cluster declaring 2 (fake) GPUs: the API submits every
run as a Ray job, Tune searches the LR and trains, results come back over REST."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from service.context import context_of
from service.orchestration.ray_executor import RayExecutor
from service.orchestration.ray_head import LocalRayHead, free_port
from service.settings import Settings
from tests.utils import API, SMALL_CLASSIFIER, experiment, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.slow]

TINY = {"epochs": 2, "batch_size": 32, "data": {"train_limit": 256, "test_limit": 64},
        "classifier": SMALL_CLASSIFIER,
        "resources": {"gpus_per_run": 1, "cpus_per_run": 1}, "pretrained": False}


@pytest.fixture()
def ray_settings(ray_head: LocalRayHead, tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", ray_address=ray_head.dashboard_url,
                    dispatch_interval_s=0.5, reconcile_interval_s=5, max_in_flight=2)


def finished(client: TestClient, exp_id: int) -> dict | None:
    exp = experiment(client, exp_id)
    return exp if exp["status"] in ("succeeded", "failed", "cancelled") else None


def test_experiment_runs_on_ray_and_results_are_served(ray_settings: Settings) -> None:
    spec = {**TINY, "name": "ray e2e", "models": ["baseline", "pixel_shuffle"],
            "datasets": ["synthetic", "cifar10"],
            "lr_search": {"method": "tune", "num_samples": 2, "budget_epochs": 1,
                          "min_lr": 1e-4, "max_lr": 1e-2}}
    app = create_app(ray_settings, executor_factory=RayExecutor.from_settings)
    with TestClient(app) as client:
        exp = client.post(f"{API}/experiments", json=spec).json()
        done = wait_for(lambda: finished(client, exp["id"]), 600, "the experiment to end", 2)
        runs = {(r["model"], r["dataset"]): r for r in done["runs"]}

        # cifar10 has no files here: those runs fail alone, with the reason, and the
        # synthetic ones succeed.
        for model in ("baseline", "pixel_shuffle"):
            failed = runs[(model, "cifar10")]
            assert failed["status"] == "failed"
            assert "cifar-10-batches-py" in failed["error"]
            ok = runs[(model, "synthetic")]
            assert ok["status"] == "succeeded", ok["error"]
        assert done["status"] == "failed" and done["error"] == "2 of 4 runs failed"
        assert done["links"]["ray_dashboard"].startswith(ray_settings.ray_address)

        ok = runs[("baseline", "synthetic")]
        assert ok["ray_job_id"].startswith(f"aelab-e{exp['id']}-r{ok['id']}-baseline-synthetic-a0-")
        jobs = context_of(app).dispatcher.executor.client().list_jobs()
        assert ok["ray_job_id"] in {j.submission_id for j in jobs}

        run = client.get(f"{API}/runs/{ok['id']}").json()
        assert [e["epoch"] for e in run["epochs"]] == [1, 2]  # phase 1, then phase 2
        assert len(run["lr_trials"]) == 2
        assert sum(t["chosen"] for t in run["lr_trials"]) == 1
        chosen = next(t for t in run["lr_trials"] if t["chosen"])
        assert run["lr"] == chosen["lr"] and 1e-4 <= chosen["lr"] <= 1e-2
        assert chosen["loss"] == min(t["loss"] for t in run["lr_trials"])
        assert run["measures"]["mse"] > 0 and run["measures"]["classifier_accuracy"] is not None
        # The driver's timings say when the run got its warm runner and how long it
        # waited for one (bench/orchestration.py splits idle slot time by them).
        timings = client.get(f"{API}/runs/{ok['id']}/artifacts/timings.json").json()
        assert timings["pipeline_started_unix"] <= timings["runner_leased_unix"] \
            <= timings["training_started_unix"]
        assert 0 <= timings["runner_wait_s"] <= timings["wall_s"]
        # The runner went back before the driver's last records (the next run may take it).
        assert timings["runner_released_unix"] <= datetime.fromisoformat(
            ok["finished_at"]).timestamp()

        rows = client.get(f"{API}/experiments/{exp['id']}/results").json()["rows"]
        synthetic = [r for r in rows if r["dataset"] == "synthetic" and r["kind"] == "model"]
        assert all(r["mse"] is not None for r in synthetic)
        # Both synthetic runs scored with the one reference classifier.
        assert synthetic[0]["original_accuracy"] == synthetic[1]["original_accuracy"]
        png = client.get(f"{API}/runs/{ok['id']}/samples.png")
        assert png.status_code == 200 and Image.open(io.BytesIO(png.content)).format == "PNG"
        assert client.get("/readyz").json()["checks"]["ray"] == "ok"


def test_cancel_stops_the_ray_job_within_seconds(ray_settings: Settings, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """…and the run's MLflow run ends KILLED (the driver ends it on Ray's SIGTERM)."""
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3: file stores opt in
    tracking = (tmp_path / "mlruns").as_uri()
    settings = ray_settings.model_copy(update={"mlflow_tracking_uri": tracking})

    def executor(s: Settings) -> RayExecutor:
        made = RayExecutor.from_settings(s)
        made.job_env["MLFLOW_ALLOW_FILE_STORE"] = "true"  # and in the driver
        return made

    spec = {**TINY, "models": ["baseline"], "datasets": ["synthetic"], "epochs": 40,
            "lr_search": {"method": "fixed"}, "classifier": {"enabled": False}}
    app = create_app(settings, executor_factory=executor)
    with TestClient(app) as client:
        exp = client.post(f"{API}/experiments", json=spec).json()
        wait_for(lambda: experiment(client, exp["id"])["runs"][0]["epoch"] >= 1, 300,
                 "the first epoch")
        job_id = experiment(client, exp["id"])["runs"][0]["ray_job_id"]
        executor = context_of(app).dispatcher.executor
        # The dispatcher's one call: the live list from Ray's state API, and None for a job
        # Ray never saw.
        assert executor.states([job_id, "aelab-never-submitted"]) == {
            job_id: "RUNNING", "aelab-never-submitted": None}
        assert executor.live_jobs().get(job_id) == "RUNNING"  # from the filtered list
        r = client.post(f"{API}/experiments/{exp['id']}/cancel").json()
        assert r["status"] == "cancelled" and r["runs"][0]["status"] == "cancelled"
        wait_for(lambda: executor.states([job_id]) == {job_id: "STOPPED"}, 30,
                 "Ray to stop the job")
        assert experiment(client, exp["id"])["runs"][0]["epoch"] < 40
    mlflow = MlflowClient(tracking_uri=tracking)
    (mirrored,) = mlflow.search_runs([e.experiment_id for e in mlflow.search_experiments()
                                      if e.name.startswith(f"aelab-{exp['id']}")])
    assert mirrored.info.status == "KILLED"
    assert mirrored.data.tags["aelab.run_id"] == str(exp["runs"][0]["id"])


def _serve(settings: Settings, port: int) -> subprocess.Popen:
    env = {**os.environ, "AELAB_HOME": str(settings.home), "RAY_ADDRESS": settings.ray_address,
           "AELAB_DISPATCH_INTERVAL_S": "0.5", "AELAB_RECONCILE_INTERVAL_S": "2"}
    return subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--port", str(port)],
                            env=env, start_new_session=True)


def test_killing_the_api_mid_experiment_loses_and_duplicates_nothing(
        ray_settings: Settings) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}{API}"
    spec = {**TINY, "models": ["baseline", "progressive_resizing"], "datasets": ["synthetic"],
            "epochs": 6, "lr_search": {"method": "fixed"}, "classifier": {"enabled": False}}
    server = _serve(ray_settings, port)
    try:
        wait_for(lambda: _get(f"http://127.0.0.1:{port}/healthz"), 60, "the API")
        exp = httpx.post(f"{base}/experiments", json=spec).json()
        wait_for(lambda: any(r["epoch"] >= 1 for r in _get(f"{base}/experiments/{exp['id']}")
                             ["runs"]), 300, "training to start")
        os.killpg(server.pid, signal.SIGKILL)  # no graceful shutdown
        server.wait()
        server = _serve(ray_settings, port)
        wait_for(lambda: _get(f"http://127.0.0.1:{port}/healthz"), 60, "the API again")
        done = wait_for(lambda: _ended(f"{base}/experiments/{exp['id']}"), 600,
                        "the experiment to end", 2)
        assert done["status"] == "succeeded", done
        assert all(r["attempt"] == 0 for r in done["runs"])  # never re-submitted
        jobs = RayExecutor(ray_settings.ray_address, job_env={}).client().list_jobs()
        for run in done["runs"]:  # one Ray job per run: its uid ends the job id
            uid = run["ray_job_id"].rsplit("-", 1)[1]
            assert [j.submission_id for j in jobs if (j.submission_id or "").endswith(uid)] \
                == [run["ray_job_id"]]
        for run in done["runs"]:
            epochs = _get(f"{base}/runs/{run['id']}")["epochs"]
            assert [e["epoch"] for e in epochs] == list(range(1, 7))
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)


def _get(url: str) -> dict | None:
    try:
        r = httpx.get(url, timeout=5)
        return r.json() if r.status_code == 200 else None
    except httpx.HTTPError:
        return None


def _ended(url: str) -> dict | None:
    exp = _get(url)
    return exp if exp and exp["status"] in ("succeeded", "failed", "cancelled") else None
