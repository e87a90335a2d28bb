"""Every endpoint and error of the REST API, on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from tests.utils import API, spec

SMALL = spec("baseline", "pixel_shuffle")


def count_experiments(client: TestClient) -> int:
    return len(client.get(f"{API}/experiments", params={"limit": 200}).json()["items"])


def test_minimal_spec_gets_the_studys_defaults(client: TestClient) -> None:
    r = client.post(f"{API}/experiments", json={"models": ["baseline", "feature_loss"],
                                               "datasets": ["mnist", "cifar10"]})
    assert r.status_code == 201, r.text
    body = r.json()
    assert r.headers["location"] == f"{API}/experiments/{body['id']}"
    assert body["status"] == "queued"
    assert [(x["model"], x["dataset"]) for x in body["runs"]] == [
        ("baseline", "mnist"), ("feature_loss", "mnist"),
        ("baseline", "cifar10"), ("feature_loss", "cifar10")]
    assert all(x["status"] == "queued" and x["epochs_total"] == 15 for x in body["runs"])
    run = client.get(body["runs"][0]["links"]["self"]).json()
    assert run["spec"]["epochs"] == 15 and run["spec"]["lr_search"]["method"] == "tune"
    assert run["spec"]["data"]["validation"] == "holdout"
    assert run["lr_trials"] == [] and run["epochs"] == [] and run["measures"] is None


def test_shipped_study_example_is_valid(client: TestClient) -> None:
    import json
    from importlib.resources import files

    spec = json.loads(files("service").joinpath("examples/study.json").read_text())
    r = client.post(f"{API}/experiments", params={"dry_run": True}, json=spec)
    assert r.status_code == 200, r.text
    assert len(r.json()["runs"]) == 12 and r.json()["spec"]["epochs"] == 15


@pytest.mark.parametrize("body,loc", [
    ({**SMALL, "colour": "red"}, ["body", "colour"]),
    ({**SMALL, "models": ["vae"]}, ["body", "models", 0]),
    ({**SMALL, "datasets": []}, ["body", "datasets"]),
    ({**SMALL, "epochs": 0}, ["body", "epochs"]),
    ({**SMALL, "epochs": 51}, ["body", "epochs"]),  # settings.max_epochs is 50 here
    ({**SMALL, "lr_search": {"method": "grid"}}, ["body", "lr_search", "method"]),
    ({**SMALL, "lr_search": {"min_lr": 1e-2, "max_lr": 1e-3}}, ["body", "lr_search"]),
    ({**SMALL, "resources": {"gpus_per_run": -1}}, ["body", "resources", "gpus_per_run"]),
    ({**SMALL, "data": {"validation": "train"}}, ["body", "data", "validation"]),
    ({"models": ["baseline"]}, ["body", "datasets"]),
    ({**SMALL, "models": ["baseline", "baseline"]}, ["body"]),
])
def test_invalid_spec_is_422_naming_the_field_and_stores_nothing(
        client: TestClient, body: dict, loc: list) -> None:
    r = client.post(f"{API}/experiments", json=body)
    assert r.status_code == 422, r.text
    assert any(e["loc"][: len(loc)] == loc for e in r.json()["detail"]), r.json()
    assert count_experiments(client) == 0


def test_every_problem_is_named_at_once(client: TestClient) -> None:
    r = client.post(f"{API}/experiments", json={"models": ["vae"], "datasets": ["x"],
                                               "epochs": -1})
    locs = {tuple(e["loc"][:2]) for e in r.json()["detail"]}
    assert {("body", "models"), ("body", "datasets"), ("body", "epochs")} <= locs


def test_too_many_runs_is_refused(client: TestClient) -> None:
    r = client.post(f"{API}/experiments", json={
        "models": ["baseline", "pixel_shuffle", "progressive_resizing", "resnet",
                   "pretrained_resnet", "feature_loss"],
        "datasets": ["mnist", "cifar10", "synthetic"]})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "models"]
    assert "18 runs" in r.json()["detail"][0]["msg"]


def test_dry_run_answers_runs_and_estimate_without_storing(client: TestClient) -> None:
    r = client.post(f"{API}/experiments", params={"dry_run": "true"},
                    json={**SMALL, "epochs": 3, "data": {"train_limit": 1000},
                          "lr_search": {"method": "tune", "num_samples": 4,
                                        "budget_epochs": 1}})
    assert r.status_code == 200
    body = r.json()
    assert body["dry_run"] is True and len(body["runs"]) == 2
    assert body["estimate"]["train_epochs"] == 6
    assert body["estimate"]["lr_search_epochs"] == 8
    assert body["estimate"]["images_processed"] == 2 * (3 + 4) * 1000
    assert count_experiments(client) == 0


def test_idempotency_key_returns_the_first_experiment(client: TestClient) -> None:
    headers = {"Idempotency-Key": "abc-123"}
    first = client.post(f"{API}/experiments", json=SMALL, headers=headers)
    again = client.post(f"{API}/experiments", json=SMALL, headers=headers)
    assert first.status_code == 201 and again.status_code == 200
    assert first.json()["id"] == again.json()["id"]
    assert count_experiments(client) == 1


def test_an_idempotency_key_replays_an_experiment_stored_before_a_new_field(
        client: TestClient) -> None:
    """A retry after an upgrade: the stored spec lacks a field added since with its
    default (``precision``), yet it is the same request (200, the same experiment); a
    different value of that field is another request (422)."""
    from sqlalchemy import update

    from service.context import context_of
    from service.persistence.db import transaction
    from service.persistence.tables import Experiment

    headers = {"Idempotency-Key": "before-precision"}
    first = client.post(f"{API}/experiments", json=SMALL, headers=headers).json()
    with transaction(context_of(client.app).sessions) as s:
        stored = s.get(Experiment, first["id"]).spec
        assert stored["precision"] == "auto"
        older = {k: v for k, v in stored.items() if k != "precision"}
        s.execute(update(Experiment).where(Experiment.id == first["id"]).values(spec=older))
    again = client.post(f"{API}/experiments", json=SMALL, headers=headers)
    assert again.status_code == 200 and again.json()["id"] == first["id"]
    other = client.post(f"{API}/experiments", json={**SMALL, "precision": "bf16"},
                        headers=headers)
    assert other.status_code == 422
    assert other.json()["detail"][0]["type"] == "idempotency_key_reused"
    assert count_experiments(client) == 1


def test_list_is_newest_first_filtered_and_paginated(client: TestClient) -> None:
    ids = [client.post(f"{API}/experiments", json={**SMALL, "name": f"e{i}"}).json()["id"]
           for i in range(5)]
    client.post(f"{API}/experiments/{ids[0]}/cancel")
    page = client.get(f"{API}/experiments", params={"limit": 2}).json()
    assert [e["id"] for e in page["items"]] == ids[::-1][:2]
    page2 = client.get(f"{API}/experiments", params={"limit": 2, "cursor": page["next"]}).json()
    assert [e["id"] for e in page2["items"]] == ids[::-1][2:4]
    page3 = client.get(f"{API}/experiments", params={"limit": 2, "cursor": page2["next"]}).json()
    assert [e["id"] for e in page3["items"]] == [ids[0]] and page3["next"] is None
    cancelled = client.get(f"{API}/experiments", params={"status": "cancelled"}).json()
    assert [e["id"] for e in cancelled["items"]] == [ids[0]]
    assert cancelled["items"][0]["runs"] == {"total": 2, "cancelled": 2}
    assert page["items"][0]["runs"] == {"total": 2, "queued": 2}
    assert client.get(f"{API}/experiments", params={"status": "nope"}).status_code == 422
    assert client.get(f"{API}/experiments", params={"cursor": "x"}).status_code == 422
    assert client.get(f"{API}/experiments", params={"limit": 0}).status_code == 422


def test_unknown_ids_are_404(client: TestClient) -> None:
    for path in ("/experiments/999", "/experiments/999/results", "/runs/999",
                 "/runs/999/samples.png", "/runs/999/artifacts/model.pt"):
        assert client.get(API + path).status_code == 404, path
    assert client.post(f"{API}/experiments/999/cancel").status_code == 404
    assert client.delete(f"{API}/experiments/999").status_code == 404
    assert client.get(f"{API}/experiments/abc").status_code == 422


def test_cancel_then_delete(client: TestClient) -> None:
    exp = client.post(f"{API}/experiments", json=SMALL).json()
    assert client.delete(f"{API}/experiments/{exp['id']}").status_code == 409
    r = client.post(f"{API}/experiments/{exp['id']}/cancel")
    assert r.status_code == 200
    assert r.json()["status"] == "cancelled"
    assert {x["status"] for x in r.json()["runs"]} == {"cancelled"}
    again = client.post(f"{API}/experiments/{exp['id']}/cancel")
    assert again.status_code == 409 and "already cancelled" in again.json()["detail"]
    assert client.delete(f"{API}/experiments/{exp['id']}").status_code == 204
    assert client.get(f"{API}/experiments/{exp['id']}").status_code == 404
    assert client.get(f"{API}/runs/{exp['runs'][0]['id']}").status_code == 404


def test_artifact_names_never_leave_the_run(client: TestClient) -> None:
    exp = client.post(f"{API}/experiments", json=SMALL).json()
    run_id = exp["runs"][0]["id"]
    for name in ("..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "model.pt", "%2E%2E"):
        r = client.get(f"{API}/runs/{run_id}/artifacts/{name}")
        assert r.status_code == 404, name


def test_catalog_lists_variants_and_dataset_availability(client: TestClient) -> None:
    body = client.get(f"{API}/catalog").json()
    variants = {v["name"]: v for v in body["variants"]}
    assert set(variants) == {"baseline", "pixel_shuffle", "progressive_resizing",
                             "pretrained_resnet", "resnet", "feature_loss",
                             "factorized_prior"}
    assert variants["resnet"]["latent_dim"] == 1024
    assert variants["baseline"]["params"] == 3_080_629
    datasets = {d["name"]: d for d in body["datasets"]}
    assert datasets["synthetic"]["available"] is True
    assert datasets["cifar10"]["available"] is False  # no files in this test's home


def test_catalog_says_which_weights_this_deployment_holds(client: TestClient, settings,
                                                          monkeypatch) -> None:
    from pathlib import Path

    from models.assets import WEIGHTS_URLS

    monkeypatch.setenv("TORCH_HOME", str(Path(settings.weights_path).parent / "torch"))
    body = client.get(f"{API}/catalog").json()
    variants = {v["name"]: v for v in body["variants"]}
    weights = {w["name"]: w for w in body["weights"]}
    assert variants["pretrained_resnet"]["pretrained_weights"] == ["resnet34"]
    assert variants["feature_loss"]["pretrained_weights"] == ["vgg16_bn"]
    assert variants["baseline"]["pretrained_weights"] == []
    assert variants["baseline"]["pretrained_weights_present"] is True
    assert variants["pretrained_resnet"]["pretrained_weights_present"] is False
    assert weights["resnet34"] == {"name": "resnet34", "file": "resnet34-b627a593.pth",
                                   "folder": settings.weights_path, "present": False,
                                   "problem": None}
    assert body["classifier_pretrained_weights_present"] is False
    Path(settings.weights_path).mkdir(parents=True)
    placed = Path(settings.weights_path) / "resnet34-b627a593.pth"
    placed.write_bytes(b"garbage")  # present but not the weights: named as corrupt
    body = client.get(f"{API}/catalog").json()
    resnet = {w["name"]: w for w in body["weights"]}["resnet34"]
    assert resnet["present"] is False and "is corrupt (SHA-256" in resnet["problem"]
    # A whole file: its SHA-256 starts as its name says (a 3-digit name keeps the search
    # for such bytes short; the real names carry 8).
    monkeypatch.setitem(WEIGHTS_URLS, "resnet34", "https://x/resnet34-b62.pth")
    placed.unlink()
    (Path(settings.weights_path) / "resnet34-b62.pth").write_bytes(
        _bytes_with_sha256_prefix("b62"))
    body = client.get(f"{API}/catalog").json()
    assert {v["name"]: v for v in body["variants"]}["pretrained_resnet"][
        "pretrained_weights_present"] is True
    assert body["classifier_pretrained_weights_present"] is True


def _bytes_with_sha256_prefix(prefix: str) -> bytes:
    """Bytes whose SHA-256 hex digest starts with ``prefix`` (a short one: brute force)."""
    import hashlib
    import itertools

    for i in itertools.count():
        data = f"stand-in {i}".encode()
        if hashlib.sha256(data).hexdigest().startswith(prefix):
            return data
    raise AssertionError


def test_dry_run_lists_what_the_spec_needs_and_what_is_missing(client: TestClient,
                                                               settings) -> None:
    r = client.post(f"{API}/experiments", params={"dry_run": True}, json={
        "models": ["feature_loss", "baseline"], "datasets": ["cifar10", "synthetic"]})
    body = r.json()
    needed = {(n["kind"], n["name"]): n for n in body["needs"]}
    assert set(needed) == {("dataset", "cifar10"), ("weights", "vgg16_bn"),
                           ("weights", "resnet34")}
    assert needed[("weights", "vgg16_bn")]["files"] == ["vgg16_bn-6c64b313.pth"]
    assert needed[("dataset", "cifar10")]["folder"].endswith("cifar-10-batches-py")
    assert "test_batch" in needed[("dataset", "cifar10")]["files"]
    assert {(m["kind"], m["name"]) for m in body["missing"]} == set(needed)
    offline = client.post(f"{API}/experiments", params={"dry_run": True}, json=spec(
        pretrained=False, classifier={"pretrained": False})).json()
    assert offline["needs"] == [] and offline["missing"] == []


def test_logs_of_a_run_that_never_started_are_empty(client: TestClient) -> None:
    exp = client.post(f"{API}/experiments", json=SMALL).json()
    logs = client.get(f"{API}/runs/{exp['runs'][0]['id']}/logs").json()
    assert logs["text"] == "" and logs["source"] == "none" and not logs["complete"]
    assert client.get(f"{API}/runs/999/logs").status_code == 404


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200
    assert r.json()["checks"] == {"database": "ok", "ray": "disabled", "artifacts": "ok"}
    assert client.get("/docs").status_code == 200
    assert "/api/v1/experiments" in client.get("/openapi.json").json()["paths"]


def test_token_guards_writes(settings) -> None:
    from service.app import create_app

    settings.api_token = "s3cret"  # type: ignore[assignment]
    from pydantic import SecretStr

    settings.api_token = SecretStr("s3cret")
    with TestClient(create_app(settings)) as c:
        assert c.post(f"{API}/experiments", json=SMALL).status_code == 401
        bad = {"Authorization": "Bearer nope"}
        assert c.post(f"{API}/experiments", json=SMALL, headers=bad).status_code == 403
        good = {"Authorization": "Bearer s3cret"}
        r = c.post(f"{API}/experiments", json=SMALL, headers=good)
        assert r.status_code == 201
        assert c.post(f"{API}/experiments/{r.json()['id']}/cancel").status_code == 401
        assert c.get(f"{API}/experiments").status_code == 200  # reads stay open by default
    settings.protect_reads = True
    with TestClient(create_app(settings)) as c:
        assert c.get(f"{API}/experiments").status_code == 401
        assert c.get(f"{API}/experiments", headers=good).status_code == 200


def test_database_down_is_503_and_health_stays_up(tmp_path) -> None:
    from service.app import create_app
    from service.settings import Settings

    settings = Settings(home=tmp_path, migrate_on_start=False,
                        database_url="postgresql+psycopg://postgres@127.0.0.1:1/none")
    with TestClient(create_app(settings)) as c:
        assert c.get("/healthz").status_code == 200
        r = c.get(f"{API}/experiments")
        assert r.status_code == 503 and "unavailable" in r.json()["detail"]
        ready = c.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"].startswith("unreachable")


def test_service_never_imports_torch(tmp_path) -> None:
    code = f"""
import sys
from fastapi.testclient import TestClient
from service.app import create_app
from service.settings import Settings
import service.cli, service.orchestration.run_store, service.orchestration.dispatcher
app = create_app(Settings(home={str(tmp_path)!r}))
with TestClient(app) as c:
    assert c.get('/api/v1/catalog').status_code == 200
    assert c.post('/api/v1/experiments', json={{'models': ['baseline'],
                                               'datasets': ['synthetic']}}).status_code == 201
assert 'torch' not in sys.modules, 'the service imported torch'
"""
    subprocess.run([sys.executable, "-c", code], check=True)
