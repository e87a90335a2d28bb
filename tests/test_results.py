"""Real (small) runs through the worker pipeline and the DB store, read back over REST."""

from __future__ import annotations

import csv
import io

from fastapi.testclient import TestClient
from PIL import Image

from tests.utils import execute_runs

API = "/api/v1"
SPEC = {"name": "tiny study", "models": ["baseline", "pixel_shuffle"],
        "datasets": ["synthetic"], "epochs": 2, "batch_size": 32,
        "lr_search": {"method": "fixed"}, "data": {"train_limit": 256, "test_limit": 64},
        "classifier": {"arch": "small", "frozen_epochs": 1, "unfrozen_epochs": 0,
                       "pretrained": False},
        "pretrained": False}


def test_results_in_three_formats_from_real_runs(client: TestClient) -> None:
    experiment = client.post(f"{API}/experiments", json=SPEC).json()
    assert execute_runs(client, experiment) == [True, True]

    exp = client.get(f"{API}/experiments/{experiment['id']}").json()
    assert exp["status"] == "succeeded"
    assert all(r["status"] == "succeeded" and r["progress"] == 1.0 for r in exp["runs"])

    table = client.get(f"{API}/experiments/{experiment['id']}/results").json()
    rows = {r["model"]: r for r in table["rows"]}
    assert set(rows) == {"baseline", "pixel_shuffle"}
    for r in rows.values():
        assert 0 < r["mse"] < 1 and r["mae"] ** 2 <= r["mse"] <= r["mae"]
        assert 0 <= r["classifier_accuracy"] <= 1 and 0 <= r["original_accuracy"] <= 1
        assert r["lr"] == 1e-3 and r["latent_dim"] == 1000 and r["status"] == "succeeded"
        assert r["training_time_s"] > 0 and r["compression_ratio"] == 3.072
    assert rows["baseline"]["params"] == 3_080_629
    # One reference classifier served both runs.
    assert rows["baseline"]["original_accuracy"] == rows["pixel_shuffle"]["original_accuracy"]

    text = client.get(f"{API}/experiments/{experiment['id']}/results",
                      params={"format": "csv"})
    assert text.headers["content-type"].startswith("text/csv")
    parsed = list(csv.DictReader(io.StringIO(text.text)))
    assert [p["model"] for p in parsed] == ["baseline", "pixel_shuffle"]
    assert float(parsed[0]["mse"]) == rows["baseline"]["mse"]

    md = client.get(f"{API}/experiments/{experiment['id']}/results",
                    params={"format": "markdown"}).text
    assert "# tiny study" in md and "## Synthetic shapes" in md
    assert "| Original images | n/a | n/a | n/a | n/a | " \
        f"{rows['baseline']['original_accuracy']:.4f}" in md
    assert f"| Baseline | {rows['baseline']['mae']:.6f} | {rows['baseline']['mse']:.6f} |" in md
    assert "| Pixel Shuffle |" in md
    assert client.get(f"{API}/experiments/{experiment['id']}/results",
                      params={"format": "xml"}).status_code == 422

    run = client.get(f"{API}/runs/{experiment['runs'][0]['id']}").json()
    assert [e["epoch"] for e in run["epochs"]] == [1, 2]
    assert run["epochs"][0]["phase"] == "phase1" and run["epochs"][1]["phase"] == "phase2"
    assert run["lr_trials"] == [{"method": "fixed", "lr": 1e-3, "loss": None, "iterations": 0,
                                 "stopped_early": False, "chosen": True}]
    assert run["measures"]["mse"] == rows["baseline"]["mse"]
    assert {a["name"] for a in run["artifacts"]} == {
        "samples.png", "model.pt", "gallery-inputs.png", "gallery-recon.png", "gallery.json",
        "timings.json"}
    timings = client.get(f"{API}/runs/{run['id']}/artifacts/timings.json").json()
    assert set(timings) == {"pipeline_started_unix", "training_started_unix", "prepare_s",
                            "search_s", "train_s", "classifier_s", "evaluate_s", "wall_s"}
    assert timings["train_s"] >= run["measures"]["training_time_s"]
    png = client.get(f"{API}/runs/{run['id']}/samples.png")
    assert png.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).size[0] > 0
    weights = client.get(f"{API}/runs/{run['id']}/artifacts/model.pt")
    assert weights.status_code == 200 and len(weights.content) > 1_000_000

    assert client.delete(f"{API}/experiments/{experiment['id']}").status_code == 204
    assert client.get(f"{API}/runs/{run['id']}/samples.png").status_code == 404


def test_a_failing_run_fails_alone_with_its_error(client: TestClient) -> None:
    experiment = client.post(f"{API}/experiments", json={
        **SPEC, "classifier": {"enabled": False}}).json()
    outcomes = execute_runs(client, experiment, lr={"baseline": 1e12})
    assert outcomes == [False, True]
    exp = client.get(f"{API}/experiments/{experiment['id']}").json()
    failed, ok = exp["runs"]
    assert failed["status"] == "failed" and "TrainingDiverged" in failed["error"]
    assert ok["status"] == "succeeded" and ok["error"] is None
    assert exp["status"] == "failed" and exp["error"] == "1 of 2 runs failed"
    rows = client.get(f"{API}/experiments/{experiment['id']}/results").json()["rows"]
    assert rows[0]["mse"] is None and rows[1]["mse"] is not None
    md = client.get(f"{API}/experiments/{experiment['id']}/results",
                    params={"format": "markdown"}).text
    assert "| Baseline | n/a | n/a |" in md and "| failed |" in md
