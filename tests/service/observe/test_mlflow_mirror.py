"""The MLflow mirror: a run's params, step metrics per epoch, final measures, tags and
samples.png read back with MLflow's client; a tracker that is away never fails a run."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.context import context_of
from service.orchestration.mlflow_mirror import db_mirrored
from service.orchestration.run_store import DbRunStore
from service.persistence import repository as repo
from service.settings import Settings
from tests.utils import API, tiny_spec
from workers.context import RunEnv
from workers.pipeline import LocalSteps, run_pipeline
from workers.spec import RunSpec

pytest.importorskip("mlflow")
EPOCHS = 2


def run_mirrored(tmp_path: Path, tracking_uri: str) -> tuple[dict, bool, str]:
    """One tiny run through the one pipeline and the DB store, mirrored as a driver does:
    the run as the API gives it, whether it succeeded, and its page."""
    settings = Settings(home=tmp_path / "home", start_dispatcher=False,
                        mlflow_tracking_uri=tracking_uri, public_url="https://aelab.example")
    with TestClient(create_app(settings)) as client:
        exp = client.post(f"{API}/experiments", json=tiny_spec(
            "baseline", epochs=EPOCHS, data={"train_limit": 64, "test_limit": 32},
            name="mirror test")).json()
        run = exp["runs"][0]
        ctx = context_of(client.app)
        with ctx.sessions.begin() as s:
            repo.set_run(s, run_id=run["id"], status=repo.Status.running)
            spec = RunSpec.model_validate(repo.get_run(s, run_id=run["id"]).spec)
        store = db_mirrored(DbRunStore(ctx.sessions, ctx.artifacts, run["id"]), settings,
                            ctx.sessions, ctx.artifacts, run["id"])
        env = RunEnv(data_root="/unused", weights_dir="/unused", allow_download=False)
        ok = run_pipeline(spec, store, LocalSteps(env))
        return (client.get(f"{API}/runs/{run['id']}").json(), ok,
                client.get(f"/runs/{run['id']}").text)


@pytest.mark.slow
def test_a_run_is_mirrored_to_a_file_store(tmp_path: Path, monkeypatch) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3: file stores opt in
    uri = (tmp_path / "mlruns").as_uri()
    run, ok, page = run_mirrored(tmp_path, uri)
    assert ok and run["status"] == "succeeded"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(f"aelab-{run['experiment_id']} mirror test")
    (mirrored,) = client.search_runs([experiment.experiment_id])
    assert mirrored.info.status == "FINISHED"
    params = mirrored.data.params
    assert params["model"] == "baseline" and params["epochs"] == str(EPOCHS)
    assert params["data.train_limit"] == "64" and params["lr_search.method"] == "fixed"
    history = client.get_metric_history(mirrored.info.run_id, "val_loss")
    assert [m.step for m in history] == list(range(1, EPOCHS + 1))
    assert [m.value for m in history] == [e["val_loss"] for e in run["epochs"]]
    # Trained on the CPU: no GPU use in the API, none in MLflow, "No GPU" on its page.
    assert {(e["gpu_utilization_percent"], e["gpu_memory_peak_mib"])
            for e in run["epochs"]} == {(None, None)}
    assert client.get_metric_history(mirrored.info.run_id, "gpu_memory_peak_mib") == []
    assert "gpu_utilization_percent" not in mirrored.data.metrics
    assert "No GPU: this run's epochs trained without one" in page
    assert 'class="gpu-chart"' not in page and "GPU peak MiB" not in page
    metrics = mirrored.data.metrics
    for name in ("mse", "psnr", "ssim", "q_psnr"):
        assert metrics[name] == pytest.approx(run["measures"][name])
    tags = mirrored.data.tags
    assert tags["aelab.run_id"] == str(run["id"])
    assert tags["aelab.url"] == f"https://aelab.example/runs/{run['id']}"
    assert (tags["model"], tags["dataset"], tags["seed"]) == ("baseline", "synthetic", "0")
    assert [a.path for a in client.list_artifacts(mirrored.info.run_id)] == ["samples.png"]


@pytest.mark.slow
def test_a_tracker_that_is_away_never_fails_the_run(tmp_path: Path, caplog) -> None:
    from service.orchestration.ray_head import free_port

    caplog.set_level(logging.INFO, logger="aelab")
    run, ok, _ = run_mirrored(tmp_path, f"http://127.0.0.1:{free_port()}")
    assert ok and run["status"] == "succeeded"
    assert [e["epoch"] for e in run["epochs"]] == list(range(1, EPOCHS + 1))
    assert any("mirroring to MLflow skipped" in r.getMessage() for r in caplog.records)


def test_an_epochs_gpu_use_is_mirrored_as_step_metrics_when_measured(tmp_path: Path,
                                                                      monkeypatch) -> None:
    """Epochs as a GPU runner reports them: utilisation and peak memory at step = epoch;
    an epoch without NVML (memory only) logs no utilisation, none logs a 0."""
    from mlflow.tracking import MlflowClient

    from models.plan import EpochMetrics
    from service.orchestration.mlflow_mirror import MlflowMirror

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "mlruns").as_uri()
    mirror = MlflowMirror(uri, experiment="gpu", run_name="r1", params={}, tags={})
    base = ("train", 32, 1e-3, 0.1, 0.1, 0.1, 0.2, 2.0, 500.0)
    mirror.epochs([EpochMetrics(1, *base, gpu_utilization_percent=91.5,
                                gpu_memory_peak_mib=2048.0),
                   EpochMetrics(2, *base, gpu_utilization_percent=88.0,
                                gpu_memory_peak_mib=2050.5),
                   EpochMetrics(3, *base, gpu_memory_peak_mib=2049.0)])
    mirror.end("FINISHED")
    assert mirror.skipped is None
    client = MlflowClient(tracking_uri=uri)
    util = client.get_metric_history(mirror.run_id, "gpu_utilization_percent")
    memory = client.get_metric_history(mirror.run_id, "gpu_memory_peak_mib")
    assert sorted((m.step, m.value) for m in util) == [(1, 91.5), (2, 88.0)]
    assert sorted((m.step, m.value) for m in memory) == [(1, 2048.0), (2, 2050.5), (3, 2049.0)]


DRIVER = """
import signal, sys, time
from service.orchestration.mlflow_mirror import MirroredStore, MlflowMirror, end_mirror_on_sigterm
from workers.store import MemoryStore

signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))  # as ray.init does
mirror = MlflowMirror(sys.argv[1], experiment="cancel", run_name="r1", params={}, tags={})
store = MirroredStore(MemoryStore(), mirror, read_epochs=list, read_artifact=lambda n: None)
end_mirror_on_sigterm(store)
while mirror.run_id is None:
    time.sleep(0.05)
print(mirror.run_id, flush=True)
time.sleep(60)  # training, until Ray stops the job
"""


@pytest.mark.slow
def test_a_driver_stopped_by_sigterm_ends_its_mlflow_run_as_killed(tmp_path: Path,
                                                                   monkeypatch) -> None:
    """Ray stops a cancelled run's driver with SIGTERM (SIGKILL 3 s later): the driver's
    MLflow run ends KILLED first, then the driver exits as Ray's own handler makes it."""
    import signal
    import subprocess
    import sys
    import time

    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "mlruns").as_uri()
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, uri], stdout=subprocess.PIPE,
                              text=True)
    try:
        run_id = driver.stdout.readline().strip()
        assert MlflowClient(tracking_uri=uri).get_run(run_id).info.status == "RUNNING"
        stopped = time.monotonic()
        driver.send_signal(signal.SIGTERM)
        assert driver.wait(timeout=10) == signal.SIGTERM  # sys.exit(15): Ray's handler ran
        assert time.monotonic() - stopped < 3.0  # before Ray's SIGKILL
    finally:
        driver.kill()
    assert MlflowClient(tracking_uri=uri).get_run(run_id).info.status == "KILLED"


def test_a_run_cancelled_at_an_epoch_ends_its_mlflow_run_as_killed(tmp_path: Path,
                                                                   monkeypatch) -> None:
    """The driver that sees the cancel itself (its next epoch's write is refused) ends the
    MLflow run KILLED; one that succeeded or failed keeps FINISHED or FAILED."""
    from mlflow.tracking import MlflowClient

    from service.orchestration.mlflow_mirror import MirroredStore, MlflowMirror, end_mirror
    from workers.store import MemoryStore

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "mlruns").as_uri()

    def ended(outcome: str, run_status: str) -> str:
        mirror = MlflowMirror(uri, experiment="ends", run_name=outcome, params={}, tags={})
        store = MirroredStore(MemoryStore(), mirror, read_epochs=list,
                              read_artifact=lambda name: None)
        if outcome == "succeed":
            store.succeed()
        elif outcome == "fail":
            store.fail("boom")
        end_mirror(store, run_status)  # what the driver does after the pipeline
        return MlflowClient(tracking_uri=uri).get_run(mirror.run_id).info.status

    assert ended("cancelled", "cancelled") == "KILLED"
    assert ended("replaced", "queued") == "KILLED"  # re-queued as another attempt
    assert ended("succeed", "succeeded") == "FINISHED"
    assert ended("fail", "failed") == "FAILED"


def test_a_pruned_run_keeps_its_epochs_step_metrics(tmp_path: Path, monkeypatch) -> None:
    """A sample pruned at an epoch boundary: the epochs its warm runner recorded (read
    from the database, never through the driver's store) are in MLflow as step metrics,
    and the run ends FINISHED (issue 26: pruned is a planned end)."""
    from mlflow.tracking import MlflowClient

    from models.plan import EpochMetrics
    from service.orchestration.mlflow_mirror import MirroredStore, MlflowMirror, end_mirror
    from workers.store import MemoryStore

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "mlruns").as_uri()
    recorded: list[EpochMetrics] = []  # the run's epoch rows, as the runner writes them
    mirror = MlflowMirror(uri, experiment="pruned", run_name="r1", params={}, tags={})
    store = MirroredStore(MemoryStore(), mirror, read_epochs=lambda: list(recorded),
                          read_artifact=lambda name: None)
    store.set_phase("train")  # before the runner's first epoch
    base = ("train", 32, 1e-3, 0.1, 0.1, 0.1, 0.2, 2.0, 500.0)
    recorded += [EpochMetrics(1, *base), EpochMetrics(2, *base)]  # then pruned at epoch 2
    end_mirror(store, "pruned")  # what the driver does after the pipeline
    client = MlflowClient(tracking_uri=uri)
    assert client.get_run(mirror.run_id).info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(mirror.run_id, "val_mse")) == [1, 2]


def test_two_runs_creating_the_same_mlflow_experiment_at_once_both_mirror(
        tmp_path: Path, monkeypatch) -> None:
    """The race: another run's driver creates the experiment between this one's read
    (none yet) and its create (RESOURCE_ALREADY_EXISTS). The experiment is read again by
    name and the run mirrored into it, not skipped."""
    from mlflow.tracking import MlflowClient

    from service.orchestration.mlflow_mirror import MlflowMirror

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "mlruns").as_uri()
    other = MlflowClient(tracking_uri=uri).create_experiment("aelab-1 race")
    read = MlflowClient.get_experiment_by_name
    reads: list[str] = []

    def late(self: MlflowClient, name: str) -> object:  # the first read came too early
        reads.append(name)
        return None if len(reads) == 1 else read(self, name)

    monkeypatch.setattr(MlflowClient, "get_experiment_by_name", late)
    mirror = MlflowMirror(uri, experiment="aelab-1 race", run_name="r2", params={}, tags={})
    mirror.end("FINISHED")
    assert mirror.skipped is None
    assert MlflowClient(tracking_uri=uri).get_run(mirror.run_id).info.experiment_id == other
