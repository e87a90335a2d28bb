"""GET /metrics: Prometheus's text format, run gauges read from the database at scrape
time, requests counted by route template, protected like any read."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from service.app import create_app
from service.context import context_of
from service.persistence import repository as repo
from service.persistence.tables import Run, Status
from service.settings import Settings
from tests.utils import API, tiny_spec, wait_for


def scrape(client: TestClient, **headers: str) -> dict[str, dict[tuple, float]]:
    """name → {labels (sorted items): value} of every sample."""
    answer = client.get("/metrics", headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=")
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = \
                sample.value
    return samples


def test_run_gauges_match_the_database_and_requests_count_by_route(tmp_path) -> None:
    settings = Settings(home=tmp_path, start_dispatcher=False)
    with TestClient(create_app(settings)) as client:
        first = client.post(f"{API}/experiments",
                            json=tiny_spec("baseline", "pixel_shuffle")).json()
        client.post(f"{API}/experiments", json=tiny_spec("baseline"))
        runs = [r["id"] for r in first["runs"]]
        sessions = context_of(client.app).sessions
        with sessions.begin() as s:  # one running, one failed; the third stays queued
            repo.set_run(s, run_id=runs[0], status=Status.running)
            repo.set_run(s, run_id=runs[1], status=Status.running)
            repo.finish_run(s, run_id=runs[1], status=Status.failed, error="forced")
        for run_id in runs:
            client.get(f"{API}/runs/{run_id}")
        client.get(f"{API}/runs/987654")
        metrics = scrape(client)
        with sessions() as s:
            in_db = dict(s.execute(select(Run.status, func.count()).group_by(Run.status)).all())

    assert in_db == {Status.running: 1, Status.failed: 1, Status.queued: 1}
    assert metrics["aelab_runs"] == {
        (("status", status.value),): float(in_db.get(status, 0)) for status in Status}
    assert metrics["aelab_runs_in_flight"] == {(): 1.0}
    assert metrics["aelab_experiments"][(("status", "running"),)] == 1.0
    assert metrics["aelab_experiments"][(("status", "queued"),)] == 1.0
    requests = metrics["aelab_http_requests_total"]
    route = "/api/v1/runs/{run_id}"
    assert requests[(("method", "GET"), ("route", route), ("status", "200"))] == 2.0
    assert requests[(("method", "GET"), ("route", route), ("status", "404"))] == 1.0
    assert requests[(("method", "POST"), ("route", "/api/v1/experiments"),
                     ("status", "201"))] == 2.0
    assert not any("987654" in dict(labels)["route"] for labels in requests)
    latency = metrics["aelab_http_request_duration_seconds_count"]
    assert latency[(("method", "GET"), ("route", route))] == 3.0
    assert metrics["aelab_dispatch_ticks_total"] == {(): 0.0}  # no dispatcher here


def test_metrics_need_the_token_when_reads_are_protected(tmp_path) -> None:
    settings = Settings(home=tmp_path, start_dispatcher=False, api_token="s3cret",
                        protect_reads=True)
    with TestClient(create_app(settings)) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer nope"}
                          ).status_code == 403
        assert "aelab_runs" in scrape(client, Authorization="Bearer s3cret")


class Runner:
    """An actor the state API lists as a warm runner (class ``Runner``, name
    ``aelab-runner-…``) without importing torch, so this test stays seconds long."""

    def ping(self) -> str:
        return "ok"


@pytest.mark.ray
def test_runner_gauges_follow_the_warm_runners_alive_by_shape(ray_driver, tmp_path) -> None:
    """``aelab_runners{gpus,cpus}`` from the dispatcher's reconciling passes (Ray's state
    API): runners of shapes no real run uses here appear, and go when killed."""
    import ray

    from service.orchestration.ray_executor import RayExecutor
    from workers import warm

    assert Runner.__name__ == warm.Runner.__name__  # what the executor counts
    settings = Settings(home=tmp_path, ray_address=ray_driver.dashboard_url,
                        dispatch_interval_s=0.25, reconcile_interval_s=0.25)
    # Shapes that need nothing: the session's head may have every CPU and GPU held by the
    # warm runners of earlier tests (an actor asking for 0.25 CPU then never starts).
    shape = (("cpus", "0"), ("gpus", "0"))
    shapes = {shape: 3}
    actors = [ray.remote(Runner).options(
        name=f"{warm.RUNNER_PREFIX}metrics-test-{i}", namespace=warm.NAMESPACE,
        num_cpus=0, num_gpus=0).remote() for i in range(3)]
    try:
        ray.get([a.ping.remote() for a in actors], timeout=60)
        with TestClient(create_app(settings, executor_factory=RayExecutor.from_settings)
                        ) as client:
            def runners() -> dict[tuple, float]:
                found = scrape(client).get("aelab_runners", {})
                return {k: v for k, v in found.items() if k in shapes}

            wait_for(lambda: runners() == shapes, 30, "the runner gauges",
                     interval_s=0.25, explain=lambda: str(scrape(client).get("aelab_runners")))
            ray.kill(actors[0])
            wait_for(lambda: runners() == {shape: 2},
                     30, "a killed runner to leave the gauge", interval_s=0.25,
                     explain=lambda: str(scrape(client).get("aelab_runners")))
    finally:
        for actor in actors:
            ray.kill(actor)
