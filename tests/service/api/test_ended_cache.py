"""Answers about an experiment that has ended for good (detail, its runs' counts in the list,
results) are computed once and served while its version holds; anything that changes the
version, its deletion or another dashboard is seen on the next read."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from fastapi.testclient import TestClient
from sqlalchemy import event, update

from service.context import context_of
from service.persistence import repository as repo
from service.persistence.db import transaction
from service.persistence.tables import Experiment, Status
from tests.utils import API, tiny_spec

SPEC = tiny_spec("baseline", "pixel_shuffle", name="cached")


@contextmanager
def statements(client: TestClient) -> Iterator[list[str]]:
    """The SQL statements the app runs inside the block."""
    engine = context_of(client.app).engine
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_ended_experiment_reads_are_computed_once_per_version(client: TestClient) -> None:
    app = client.app
    exp = client.post(f"{API}/experiments", json=SPEC).json()
    eid, run_ids = exp["id"], [r["id"] for r in exp["runs"]]
    sessions = context_of(app).sessions
    with transaction(sessions) as s:
        for i, rid in enumerate(run_ids):
            repo.start_attempt(s, run_id=rid, attempt=0, job_id=f"job-{i}", cluster=None)
            repo.set_run(s, run_id=rid, epoch=1, phase="phase1")
        repo.refresh_experiment_status(s, experiment_id=eid)

    # Running: every read sees the latest progress.
    assert [r["epoch"] for r in client.get(f"{API}/experiments/{eid}").json()["runs"]] == [1, 1]
    with transaction(sessions) as s:
        repo.set_run(s, run_id=run_ids[0], epoch=2)
    assert [r["epoch"] for r in client.get(f"{API}/experiments/{eid}").json()["runs"]] == [2, 1]
    listed = client.get(f"{API}/experiments").json()["items"][0]
    assert listed["runs"] == {"total": 2, "running": 2}
    with transaction(sessions) as s:
        repo.set_run(s, run_id=run_ids[1], epoch=2)
        repo.finish_run(s, run_id=run_ids[0], status=Status.succeeded)
    assert client.get(f"{API}/experiments").json()["items"][0]["runs"] == {
        "total": 2, "running": 1, "succeeded": 1}
    with transaction(sessions) as s:
        repo.finish_run(s, run_id=run_ids[1], status=Status.succeeded)

    # Ended: the first read computes, the next ones read the experiment's row only.
    detail = client.get(f"{API}/experiments/{eid}").json()
    assert detail["status"] == "succeeded"
    assert [(r["status"], r["epoch"]) for r in detail["runs"]] == [("succeeded", 2)] * 2
    first_list = client.get(f"{API}/experiments").json()
    assert first_list["items"][0]["runs"] == {"total": 2, "succeeded": 2}
    first_results = client.get(f"{API}/experiments/{eid}/results").json()
    with statements(client) as seen:
        assert client.get(f"{API}/experiments/{eid}").json() == detail
    assert len(seen) == 1 and "experiments" in seen[0]
    with statements(client) as seen:
        assert client.get(f"{API}/experiments").json() == first_list
    assert len(seen) == 1 and "runs" not in seen[0]  # the page, no counting of runs
    with statements(client) as seen:
        assert client.get(f"{API}/experiments/{eid}/results").json() == first_results
    assert len(seen) == 1
    # Each format and aggregate is its own entry, never another's body.
    for params, media in (({"format": "csv"}, "text/csv"),
                          ({"format": "markdown"}, "text/markdown"),
                          ({"aggregate": "seed"}, "application/json")):
        for _ in range(2):
            answer = client.get(f"{API}/experiments/{eid}/results", params=params)
            assert answer.headers["content-type"].startswith(media), params
            if media == "application/json":
                assert answer.json() != first_results and answer.json()["rows"]
            else:
                assert not answer.text.startswith("{")

    # A write that changes the version (here: a run found failed afterwards) is seen.
    with transaction(sessions) as s:
        s.execute(update(Experiment).where(Experiment.id == eid)
                  .values(status=Status.failed, error="1 of 2 runs failed"))
        repo.set_run(s, run_id=run_ids[1], status=Status.failed, error="lost its GPU")
    detail = client.get(f"{API}/experiments/{eid}").json()
    assert detail["status"] == "failed" and detail["runs"][1]["error"] == "lost its GPU"
    assert client.get(f"{API}/experiments").json()["items"][0]["runs"] == {
        "total": 2, "succeeded": 1, "failed": 1}
    assert [r["status"] for r in client.get(f"{API}/experiments/{eid}/results").json()["rows"]
            if r["kind"] == "model"] == ["succeeded", "failed"]

    # The runs' links name the dashboard of the moment (a restarted head has a new one).
    context_of(app).dashboard_url = lambda: "http://127.0.0.1:1234"
    links = [r["links"].get("ray_job") for r in
             client.get(f"{API}/experiments/{eid}").json()["runs"]]
    assert links == ["http://127.0.0.1:1234/#/jobs/job-0", "http://127.0.0.1:1234/#/jobs/job-1"]

    # Deleted: gone at once from every read.
    assert client.delete(f"{API}/experiments/{eid}").status_code == 204
    assert client.get(f"{API}/experiments/{eid}").status_code == 404
    assert client.get(f"{API}/experiments/{eid}/results").status_code == 404
    assert client.get(f"{API}/experiments").json()["items"] == []


def test_the_cache_is_bounded_by_bytes_least_recently_used_out() -> None:
    from service.caches import EndedCache

    cache = EndedCache(max_bytes=8000)
    version = ("succeeded", "t")
    for i in range(10):  # 10 × 900 bytes: the oldest go first
        cache.put(("detail", i), version, b"x" * 900)
    assert cache.size <= 8000 and len(cache) == 8
    assert cache.get(("detail", 0), version) is None
    assert cache.get(("detail", 2), version) == b"x" * 900  # now the most recent
    cache.put(("detail", 10), version, b"y" * 900)
    assert cache.get(("detail", 2), version) is not None
    assert cache.get(("detail", 3), version) is None
    cache.put(("detail", 11), version, b"z" * 1001)  # beyond an eighth of the bound
    assert cache.get(("detail", 11), version) is None
    cache.put(("detail", 2), version, b"w" * 10)  # replaced, its size with it
    assert cache.size == 7 * 900 + 10
    assert cache.get(("detail", 2), ("failed", "t")) is None  # another version
