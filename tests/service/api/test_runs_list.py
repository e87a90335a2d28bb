"""GET /runs (runs across experiments: filters, order by a measure, keyset pages) and the
experiment list's filters, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from service.context import context_of
from service.persistence import repository as repo
from service.persistence.db import transaction
from tests.utils import API, spec
from workers.measures import RunMeasures

BASE = spec(epochs=2, pretrained=False)


def _measures(mse: float, psnr: float) -> RunMeasures:
    return RunMeasures(mse=mse, mae=mse * 10, psnr=psnr, ssim=0.5, n_images=64,
                       training_time_s=1.0, params=1, latent_dim=1000,
                       compression_ratio=3.072, compression_ratio_bytes=0.768)


def _seed(client: TestClient) -> list[int]:
    """Two experiments, five runs: measures on four of them (one MSE tie)."""
    a = client.post(f"{API}/experiments", json={
        **BASE, "name": "Alpha 100%", "models": ["baseline", "pixel_shuffle"]}).json()
    b = client.post(f"{API}/experiments", json={
        **BASE, "name": "beta", "models": ["baseline", "resnet", "feature_loss"],
        "latent_dim": 64}).json()
    ids = [r["id"] for r in a["runs"] + b["runs"]]
    values = {ids[0]: (0.004, 24.0), ids[1]: (0.002, 27.0), ids[2]: (0.004, 24.1),
              ids[3]: (0.010, 20.0)}  # ids[4] is not evaluated
    sessions = context_of(client.app).sessions
    with transaction(sessions) as s:
        for run_id, (mse, psnr) in values.items():
            repo.record_measures(s, run_id=run_id, measures=_measures(mse, psnr))
            repo.set_run(s, run_id=run_id, status=repo.Status.succeeded)
        repo.set_run(s, run_id=ids[4], status=repo.Status.running, ray_job_id="aelab-job-x")
        for experiment in (a, b):
            repo.refresh_experiment_status(s, experiment_id=experiment["id"])
    return ids


def _all_pages(client: TestClient, **params: Any) -> tuple[list[int], int]:
    seen, pages, cursor = [], 0, None
    while True:
        body = client.get(f"{API}/runs", params={**params, **(
            {"cursor": cursor} if cursor else {})})
        assert body.status_code == 200, body.text
        page = body.json()
        seen += [r["id"] for r in page["items"]]
        pages += 1
        cursor = page["next"]
        if cursor is None:
            return seen, pages


def test_runs_across_experiments_ordered_by_a_measure_page_by_page(client: TestClient) -> None:
    r = _seed(client)
    # MSE ascending: ties by id, the run without measures last.
    assert _all_pages(client, order_by="mse", limit=2) == ([r[1], r[0], r[2], r[3], r[4]], 3)
    assert _all_pages(client, order_by="-mse", limit=2) == ([r[3], r[2], r[0], r[1], r[4]], 3)
    assert _all_pages(client, order_by="-psnr", limit=1) == ([r[1], r[2], r[0], r[3], r[4]], 5)
    assert _all_pages(client, limit=3) == ([r[4], r[3], r[2], r[1], r[0]], 2)  # newest first
    assert _all_pages(client, order_by="id", limit=4) == (r, 2)

    item = client.get(f"{API}/runs", params={"order_by": "mse", "limit": 1}).json()["items"][0]
    assert item["id"] == r[1] and item["model"] == "pixel_shuffle"
    assert item["experiment_name"] == "Alpha 100%" and item["latent_dim"] == 1000
    assert item["measures"]["mse"] == 0.002 and item["measures"]["psnr"] == 27.0
    assert item["links"]["page"] == f"/runs/{r[1]}"


def test_runs_filters(client: TestClient) -> None:
    r = _seed(client)
    exp_b = client.get(f"{API}/runs/{r[2]}").json()["experiment_id"]

    def ids(**params: Any) -> list[int]:
        return _all_pages(client, order_by="id", **params)[0]

    assert ids(experiment=exp_b) == r[2:]
    assert ids(model="baseline") == [r[0], r[2]]
    assert ids(model=["resnet", "pixel_shuffle"]) == [r[1], r[3]]
    assert ids(latent_dim=64) == r[2:]
    assert ids(latent_dim=[1000, 1024]) == r[:2]
    assert ids(status="running") == [r[4]]
    assert ids(dataset="synthetic", status="succeeded", latent_dim=64) == [r[2], r[3]]
    assert ids(dataset="mnist") == []
    # The effective latent size: a resnet's own is 1024, the spec's 64 wins.
    assert client.get(f"{API}/runs/{r[3]}").json()["spec"]["latent_dim"] == 64


def test_runs_bad_queries_are_422_naming_the_parameter(client: TestClient) -> None:
    _seed(client)
    for params, loc in [({"order_by": "loss"}, ["query", "order_by"]),
                        ({"model": "vae"}, ["query", "model", 0]),
                        ({"status": "done"}, ["query", "status", 0]),
                        ({"cursor": "not-a-cursor"}, ["query", "cursor"])]:
        resp = client.get(f"{API}/runs", params=params)
        assert resp.status_code == 422, (params, resp.text)
        assert resp.json()["detail"][0]["loc"] == loc
    cursor = client.get(f"{API}/runs", params={"order_by": "mse", "limit": 1}).json()["next"]
    wrong = client.get(f"{API}/runs", params={"order_by": "-psnr", "cursor": cursor})
    assert wrong.status_code == 422
    assert wrong.json()["detail"][0]["msg"] == "this cursor pages order_by=mse, not -psnr"


def test_a_run_links_to_its_own_ray_job(settings, tmp_path) -> None:
    from service.app import create_app

    settings.public_dashboard_url = "http://ray.example:8265/"
    with TestClient(create_app(settings)) as c:
        r = _seed(c)
        job = "http://ray.example:8265/#/jobs/aelab-job-x"
        assert c.get(f"{API}/runs/{r[4]}").json()["links"]["ray_job"] == job
        items = c.get(f"{API}/runs", params={"status": "running"}).json()["items"]
        assert items[0]["links"]["ray_job"] == job
        exp = c.get(f"{API}/experiments/{items[0]['experiment_id']}").json()
        assert [x["links"].get("ray_job") for x in exp["runs"]] == [None, None, job]


def test_experiment_list_filters(client: TestClient) -> None:
    _seed(client)

    def names(**params: Any) -> list[str]:
        return [e["name"] for e in client.get(f"{API}/experiments", params=params)
                .json()["items"]]

    assert names() == ["beta", "Alpha 100%"]
    assert names(name="ALPHA") == ["Alpha 100%"]
    assert names(name="100%") == ["Alpha 100%"]
    assert names(name="0%") == ["Alpha 100%"] and names(name="a_") == []  # literal % and _
    assert names(model="resnet") == ["beta"]
    assert names(model="baseline", dataset="synthetic") == ["beta", "Alpha 100%"]
    assert names(dataset="mnist") == []
    assert names(status="running") == ["beta"]
    assert names(model="pixel_shuffle", status="succeeded") == ["Alpha 100%"]
    assert names(model="pixel_shuffle", status="running") == []
    page = client.get(f"{API}/experiments", params={"limit": 1, "model": "baseline"}).json()
    assert [e["name"] for e in page["items"]] == ["beta"] and page["next"] is not None
    assert names(model="baseline", limit=1, cursor=page["next"]) == ["Alpha 100%"]


def test_every_order_pages_through_nulls_and_non_finite_values(client: TestClient) -> None:
    """Each order of GET /runs (every orderable measure, both ways), one run a page: every
    run comes exactly once, in order, although cursors stand on runs without measures, on
    measured runs lacking that measure (null) and on NaN and Infinity values; NaN sorts
    above every number, as PostgreSQL has it."""
    exp = client.post(f"{API}/experiments", json={
        **BASE, "models": ["baseline", "pixel_shuffle", "resnet"], "seeds": [0, 1]}).json()
    ids = [r["id"] for r in exp["runs"]]
    nan, inf = float("nan"), float("inf")
    base = _measures(0.004, 24.0).model_dump()
    stored: dict[int, dict[str, Any] | None] = {
        ids[0]: {**base, "psnr": inf, "mse": 0.0, "classifier_accuracy": 0.5, "bpp": 1.0},
        ids[1]: {**base, "psnr": nan, "mse": nan, "classifier_accuracy": 0.5},
        ids[2]: {**base, "psnr": 24.0, "search_time_s": 3.0, "q_mse": -inf},
        ids[3]: {**base, "psnr": -inf, "classifier_accuracy": nan},
        ids[4]: None, ids[5]: None}  # two runs not evaluated: cursors stand on them
    with transaction(context_of(client.app).sessions) as s:
        for run_id, values in stored.items():
            if values is not None:
                repo.record_measures(s, run_id=run_id, measures=RunMeasures(**values))

    def value(run_id: int, key: str) -> Any:
        measures = stored[run_id]
        if key in ("id", "lr", "latent_dim"):
            return {"id": run_id, "lr": None, "latent_dim": 1000}[key]
        return None if measures is None else measures.get(key)

    def expected(key: str, descending: bool) -> list[int]:
        valued = [i for i in ids if value(i, key) is not None]

        def rank(i: int) -> tuple[int, float, int]:
            v = value(i, key)
            return (1, 0.0, i) if v != v else (0, v, i)  # NaN (v != v): the largest

        return sorted(valued, key=rank, reverse=descending) + \
            sorted(set(ids) - set(valued), reverse=descending)

    for key in repo.RUN_ORDERS:
        for order in (key, f"-{key}"):
            seen, pages = _all_pages(client, experiment=exp["id"], order_by=order, limit=1)
            assert seen == expected(key, order.startswith("-")), order
            assert pages == len(ids), order
