"""A search trained for real (issue 26): samples proposed by the dispatcher, each run by the
one pipeline in this process (``LocalSteps``, no Ray) reporting through the database store
— so the ASHA pruner decides from epochs that real training recorded."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.context import context_of
from service.orchestration.dispatcher import Dispatcher, JobRequest, JobState
from service.orchestration.run_store import DbRunStore
from service.persistence import repository as repo
from tests.service.orchestration.test_dispatcher import FakeExecutor
from tests.utils import API, tiny_spec

pytestmark = pytest.mark.slow


@pytest.fixture(params=["sqlite"])
def db_url(request, tmp_path: Path) -> str:  # training is the cost here, not the database
    return f"sqlite:///{tmp_path / 'aelab.db'}"


def test_asha_prunes_the_samples_whose_lr_diverges(client: TestClient,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """LR drawn from [1e-3, 3]: seed 3 draws 2.4 (hopeless for Adam), then 0.0038. The
    executor trains the lower LR first (one_cycle: the sampled LR acts from epoch 1); at
    rung epoch 1 ASHA stops what is worse than the best quarter of what reached it. The
    pruned run's driver says so (not "cancelled") and keeps its log, as run_job does."""
    from workers.context import RunEnv
    from workers.pipeline import LocalSteps, run_pipeline
    from workers.spec import RunSpec

    body = tiny_spec(epochs=2, schedule="one_cycle", gallery_samples=2,
                     compression={"codecs": ["jpeg"]}, search={
        "algorithm": "random", "metric": "q_psnr", "num_samples": 2, "seed": 3,
        "pruner": "asha", "space": {"lr": {"loguniform": [1e-3, 3.0]}}})
    body.pop("lr_search")
    exp = client.post(f"{API}/experiments", json=body)
    assert exp.status_code == 201, exp.text
    ctx = context_of(client.app)
    executor = FakeExecutor()
    Dispatcher(ctx.sessions, executor, max_in_flight=2, artifacts=ctx.artifacts).tick()
    env = RunEnv(data_root="/unused", weights_dir="/unused", allow_download=False)

    def spec_of(job: JobRequest) -> RunSpec:
        with ctx.sessions() as s:
            return RunSpec.model_validate(repo.get_run(s, run_id=job.run_id).spec)

    jobs: list[tuple[JobRequest, RunSpec]] = sorted(
        ((job, spec_of(job)) for job in executor.submitted), key=lambda j: j[1].fixed_lr)
    assert [round(spec.fixed_lr, 4) for _, spec in jobs] == [0.0038, 2.4054]
    kept = []
    for job, spec in jobs:
        store = DbRunStore(ctx.sessions, ctx.artifacts, job.run_id, attempt=job.attempt,
                           log_reader=lambda run_id=job.run_id: f"log of {run_id}".encode())
        with caplog.at_level(logging.INFO, logger="aelab.run"):
            run_pipeline(spec, store, LocalSteps(env))
        kept.append(store.keep_pruned_log())
        executor.jobs[job.job_id] = JobState.succeeded
    assert kept == [False, True]  # the succeeded run's log was kept as it ended
    runs: list[dict[str, Any]] = client.get(f"{API}/experiments/{exp.json()['id']}").json()["runs"]
    by_lr = {round(spec.fixed_lr, 4): next(r for r in runs if r["id"] == job.run_id)
             for job, spec in jobs}
    assert by_lr[0.0038]["status"] == "succeeded"
    hopeless = by_lr[2.4054]
    assert hopeless["status"] == "pruned", hopeless
    assert hopeless["epoch"] == 1 and hopeless["error"].startswith("pruned at epoch 1 (asha)")
    said = [r.getMessage() for r in caplog.records
            if r.name == "aelab.run" and "pruned" in r.getMessage()]
    assert said == [f"run {jobs[1][1].label()} {hopeless['error']}"]
    assert not [r for r in caplog.records if "cancelled" in r.getMessage()]
    log_file = client.get(f"{API}/runs/{hopeless['id']}/artifacts/job.log")
    assert log_file.status_code == 200 and log_file.content == f"log of {hopeless['id']}".encode()
    detail = client.get(f"{API}/runs/{hopeless['id']}").json()
    assert [e["epoch"] for e in detail["epochs"]] == [1]  # stopped at the boundary
    assert detail["measures"] is None  # never evaluated
    experiment = client.get(f"{API}/experiments/{exp.json()['id']}").json()
    assert experiment["status"] == "succeeded", experiment  # pruned is no failure


@pytest.mark.parametrize(("pruner", "status"), [("asha", "pruned"), ("none", "failed")])
def test_a_sample_whose_loss_goes_non_finite_is_pruned_where_the_search_prunes(
        client: TestClient, pruner: str, status: str) -> None:
    """The trainer raises before the epoch is reported (no val_mse for the pruner to see):
    with a pruner the sample is hopeless and ends pruned, saying why; without one it fails
    with its one-line error, as any run does (tests/service/test_results.py). An LR of 1e12
    (past what a spec accepts, put into the sample's run spec as the driver receives it)
    makes Adam's loss non-finite in epoch 1."""
    from workers.context import RunEnv
    from workers.pipeline import LocalSteps, run_pipeline
    from workers.spec import RunSpec

    body = tiny_spec(epochs=2, schedule="one_cycle", gallery_samples=2,
                     compression={"codecs": []}, search={
        "algorithm": "random", "metric": "q_psnr", "num_samples": 1, "seed": 0,
        "pruner": pruner, "space": {"latent_dim": {"choice": [16]}}})
    exp = client.post(f"{API}/experiments", json=body)
    assert exp.status_code == 201, exp.text
    ctx = context_of(client.app)
    executor = FakeExecutor()
    Dispatcher(ctx.sessions, executor, max_in_flight=1, artifacts=ctx.artifacts).tick()
    [job] = executor.submitted
    with ctx.sessions() as s:
        spec = RunSpec.model_validate(repo.get_run(s, run_id=job.run_id).spec)
    spec = spec.model_copy(update={"lr_search": spec.lr_search.model_copy(
        update={"lr": 1e12})})
    store = DbRunStore(ctx.sessions, ctx.artifacts, job.run_id, attempt=job.attempt)
    env = RunEnv(data_root="/unused", weights_dir="/unused", allow_download=False)
    assert run_pipeline(spec, store, LocalSteps(env)) is False
    run = client.get(f"{API}/runs/{job.run_id}").json()
    assert run["status"] == status, run
    assert "\n" not in run["error"]
    if status == "pruned":
        assert re.fullmatch(r"pruned at epoch 1 \(asha\): training loss is (nan|inf) "
                            r"\(diverged\)", run["error"]), run["error"]
        assert client.get(f"{API}/experiments/{exp.json()['id']}").json()["status"] == \
            "succeeded"  # its one sample pruned: nothing failed
    else:
        assert re.fullmatch(r"TrainingDiverged: training loss is (nan|inf) at epoch 1: "
                            r"training diverged \(try a lower learning rate\)",
                            run["error"]), run["error"]
    assert run["epochs"] == [] and run["measures"] is None
