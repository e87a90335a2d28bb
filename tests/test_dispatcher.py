"""The dispatcher against an in-memory executor (the Ray executor has its own tests)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from service.errors import Unavailable
from service.orchestration.dispatcher import Dispatcher, JobRequest, JobState

API = "/api/v1"
SPEC = {"models": ["baseline", "pixel_shuffle"], "datasets": ["synthetic"]}


class FakeExecutor:
    def __init__(self) -> None:
        self.jobs: dict[str, JobState] = {}
        self.submitted: list[JobRequest] = []
        self.stopped: list[str] = []
        self.down = False

    def submit(self, job: JobRequest) -> None:
        if self.down:
            raise Unavailable("ray is down")
        self.submitted.append(job)
        self.jobs.setdefault(job.job_id, JobState.running)

    def state(self, job_id: str) -> JobState | None:
        return self.jobs.get(job_id)

    def stop(self, job_id: str) -> None:
        self.stopped.append(job_id)
        self.jobs[job_id] = JobState.stopped

    def failure_reason(self, job_id: str) -> str:
        return f"job {job_id} crashed: CUDA out of memory"

    def logs(self, job_id: str) -> str | None:
        return f"log of {job_id}\n" if job_id in self.jobs else None

    def check(self) -> None:
        if self.down:
            raise Unavailable("cannot reach the Ray dashboard")

    @property
    def dashboard_url(self) -> str:
        return "http://ray-head:8265"


def make(client: TestClient, max_in_flight: int = 3) -> tuple[Dispatcher, FakeExecutor]:
    executor = FakeExecutor()
    dispatcher = Dispatcher(client.app.state.sessions, executor, max_in_flight=max_in_flight)
    client.app.state.dispatcher = dispatcher
    return dispatcher, executor


def runs(client: TestClient, exp_id: int) -> list[dict]:
    return client.get(f"{API}/experiments/{exp_id}").json()["runs"]


def test_admits_oldest_first_up_to_the_limit_with_readable_job_ids(client: TestClient) -> None:
    first = client.post(f"{API}/experiments", json=SPEC).json()
    second = client.post(f"{API}/experiments", json=SPEC).json()
    dispatcher, executor = make(client, max_in_flight=3)
    dispatcher.tick()
    assert [t.run_id for t in executor.submitted] == \
        [r["id"] for r in first["runs"]] + [second["runs"][0]["id"]]
    ticket = executor.submitted[0]
    assert ticket.job_id.startswith(f"aelab-e{first['id']}-r{ticket.run_id}-baseline-synthetic-a0-")
    assert ticket.metadata == {"experiment": str(first["id"]), "run": str(ticket.run_id),
                               "model": "baseline", "dataset": "synthetic"}
    assert [r["status"] for r in runs(client, first["id"])] == ["running", "running"]
    assert runs(client, second["id"])[1]["status"] == "queued"
    exp = client.get(f"{API}/experiments/{first['id']}").json()
    assert exp["status"] == "running"
    assert exp["links"]["ray_dashboard"] == "http://ray-head:8265/#/jobs"
    dispatcher.tick()
    assert len(executor.submitted) == 3  # nothing more until a slot frees


def test_a_crashed_job_fails_its_run_with_the_reason(client: TestClient) -> None:
    exp = client.post(f"{API}/experiments", json=SPEC).json()
    dispatcher, executor = make(client)
    dispatcher.tick()
    executor.jobs[executor.submitted[0].job_id] = JobState.failed
    dispatcher.tick()
    crashed, alive = runs(client, exp["id"])
    assert crashed["status"] == "failed" and "CUDA out of memory" in crashed["error"]
    assert alive["status"] == "running"


def test_runs_ray_forgot_are_requeued_once_and_never_duplicated(client: TestClient) -> None:
    exp = client.post(f"{API}/experiments", json=SPEC).json()
    dispatcher, executor = make(client)
    dispatcher.tick()
    lost = executor.submitted[0].job_id
    del executor.jobs[lost]  # e.g. the Ray cluster restarted
    dispatcher.tick()  # not reconciling: a fresh submit may not be visible yet
    assert runs(client, exp["id"])[0]["status"] == "running"
    dispatcher.tick(reconcile=True)
    run = runs(client, exp["id"])[0]
    assert run["attempt"] == 1
    assert "-a1-" in executor.submitted[-1].job_id  # re-admitted in the same pass
    assert len([t for t in executor.submitted if t.run_id == run["id"]]) == 2


def test_ray_down_keeps_the_api_up_and_resumes_later(client: TestClient) -> None:
    exp = client.post(f"{API}/experiments", json=SPEC).json()
    dispatcher, executor = make(client)
    executor.down = True
    dispatcher.tick()
    assert executor.submitted == []
    ready = client.get("/readyz")
    assert ready.status_code == 503 and "cannot reach" in ready.json()["checks"]["ray"]
    assert client.get(f"{API}/experiments/{exp['id']}").status_code == 200
    executor.down = False
    dispatcher.tick()
    assert len(executor.submitted) == 2
    assert client.get("/readyz").status_code == 200


def test_cancel_stops_running_jobs(client: TestClient) -> None:
    exp = client.post(f"{API}/experiments", json={**SPEC, "datasets": ["synthetic", "mnist"]}
                      ).json()
    dispatcher, executor = make(client, max_in_flight=2)
    dispatcher.tick()
    r = client.post(f"{API}/experiments/{exp['id']}/cancel").json()
    assert r["status"] == "cancelled"
    assert {x["status"] for x in r["runs"]} == {"cancelled"}
    assert sorted(executor.stopped) == sorted(t.job_id for t in executor.submitted)
    dispatcher.tick()
    assert len(executor.submitted) == 2  # cancelled runs are never admitted
