"""The dispatcher against an in-memory executor (the Ray executor has its own tests)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.context import context_of
from service.errors import Unavailable
from service.orchestration.dispatcher import ENDED, Dispatcher, JobRequest, JobState
from tests.utils import API, spec

SPEC = spec("baseline", "pixel_shuffle")


class FakeExecutor:
    def __init__(self) -> None:
        self.session = "session-1"
        self.gone: set[str] = set()
        self.jobs: dict[str, JobState] = {}
        self.submitted: list[JobRequest] = []
        self.stopped: list[str] = []
        self.down = False
        self.calls: list[str] = []  # state reads the dispatcher made, by kind

    def submit(self, job: JobRequest) -> None:
        if self.down:
            raise Unavailable("ray is down")
        self.submitted.append(job)
        self.jobs.setdefault(job.job_id, JobState.running)

    def state(self, job_id: str) -> JobState | None:
        self.calls.append("state")
        return self.jobs.get(job_id)

    def states(self, job_ids: list[str]) -> dict[str, JobState | None]:
        self.calls.append("states")
        return {job_id: self.jobs.get(job_id) for job_id in job_ids}

    def live_jobs(self) -> dict[str, JobState]:
        return {job_id: state for job_id, state in self.jobs.items() if state not in ENDED}

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

    @property
    def cluster_id(self) -> str | None:
        return None if self.down else self.session

    def is_gone(self, cluster: str) -> bool:
        return cluster in self.gone

    def restart(self) -> None:
        """The cluster restarts: its jobs are gone, it answers as a new session."""
        self.gone.add(self.session)
        self.session = f"session-{len(self.gone) + 1}"
        self.jobs.clear()


def make(client: TestClient, max_in_flight: int = 3) -> tuple[Dispatcher, FakeExecutor]:
    executor = FakeExecutor()
    dispatcher = Dispatcher(context_of(client.app).sessions, executor, max_in_flight=max_in_flight,
                            artifacts=context_of(client.app).artifacts)
    context_of(client.app).dispatcher = dispatcher
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
                               "model": "baseline", "dataset": "synthetic", "attempt": "0"}
    assert [r["status"] for r in runs(client, first["id"])] == ["running", "running"]
    assert runs(client, second["id"])[1]["status"] == "queued"
    exp = client.get(f"{API}/experiments/{first['id']}").json()
    assert exp["status"] == "running"
    assert exp["links"]["ray_dashboard"] == "http://ray-head:8265/#/jobs"
    dispatcher.tick()
    assert len(executor.submitted) == 3  # nothing more until a slot frees


def test_jobs_start_a_few_at_a_time_and_the_next_are_submitted_as_drivers_start(
        client: TestClient) -> None:
    """At most ``max_starting`` jobs are starting at once (submitted, driver not yet in
    the pipeline), however many runs may be in flight: the rest are submitted as drivers
    start, while the first ones train."""
    from service.persistence import repository as repo
    from service.persistence.db import transaction

    client.post(f"{API}/experiments", json={**SPEC, "datasets": ["synthetic", "mnist"]})
    dispatcher, executor = make(client, max_in_flight=3)
    dispatcher.max_starting = 2
    dispatcher.tick()
    first = [job.run_id for job in executor.submitted]
    assert len(first) == 2
    dispatcher.tick()
    assert len(executor.submitted) == 2  # both still starting
    with transaction(context_of(client.app).sessions) as s:  # one driver runs its pipeline
        repo.set_run(s, run_id=first[0], phase="preflight")
    dispatcher.tick()
    assert len(executor.submitted) == 3  # one more starts; in flight is now at its limit
    with transaction(context_of(client.app).sessions) as s:
        repo.set_run(s, run_id=first[1], phase="preflight")
    dispatcher.tick()
    assert len(executor.submitted) == 3  # max_in_flight still bounds the whole


def test_a_runheld_by_starting_jobs_is_submitted_as_soon_as_a_driver_starts(
        client: TestClient) -> None:
    """Runs held back only by ``max_starting`` are submitted within a fraction of a second
    of a driver starting its pipeline, not a whole pass (``interval_s``) later; once the
    room in flight is what holds them, the dispatcher stops looking early."""
    import time

    from service.persistence import repository as repo
    from service.persistence.db import transaction

    client.post(f"{API}/experiments", json={**SPEC, "datasets": ["synthetic", "mnist"]})
    dispatcher, executor = make(client, max_in_flight=2)
    dispatcher.max_starting, dispatcher.interval_s = 1, 60.0

    def submitted(n: int, within_s: float) -> float:
        began = time.monotonic()
        while len(executor.submitted) < n and time.monotonic() - began < within_s:
            time.sleep(0.02)
        assert len(executor.submitted) == n
        return time.monotonic() - began

    dispatcher.start()
    try:
        submitted(1, 5.0)
        time.sleep(0.5)
        assert len(executor.submitted) == 1  # its job is still starting
        with transaction(context_of(client.app).sessions) as s:  # its driver starts
            repo.set_run(s, run_id=executor.submitted[0].run_id, phase="preflight")
        assert submitted(2, 5.0) < 2.0  # the pass itself comes only after 60 s
        with transaction(context_of(client.app).sessions) as s:
            repo.set_run(s, run_id=executor.submitted[1].run_id, phase="preflight")
        time.sleep(3 * dispatcher.starting_poll_s)
        assert len(executor.submitted) == 2  # two in flight: the room holds the rest now
        assert not dispatcher.held_by_starting
    finally:
        dispatcher.stop()


def _held(client: TestClient, max_starting: int) -> tuple[Dispatcher, FakeExecutor]:
    """Four runs, room for three in flight, ``max_starting`` starting: the rest are held
    by starting jobs; the passes 60 s apart."""
    client.post(f"{API}/experiments", json={**SPEC, "datasets": ["synthetic", "mnist"]})
    dispatcher, executor = make(client, max_in_flight=3)
    dispatcher.max_starting, dispatcher.interval_s = max_starting, 60.0
    return dispatcher, executor


def test_between_passes_runs_are_admitted_but_no_search_sample_is_proposed(
        client: TestClient) -> None:
    """The admits between passes read queued runs alone: search samples are proposed by
    the passes (their cost grows with the unfinished experiments)."""
    import time

    dispatcher, executor = _held(client, max_starting=1)
    proposals = []
    real_propose = dispatcher.propose
    dispatcher.propose = lambda: proposals.append(1) or real_propose()  # type: ignore
    dispatcher.start()
    try:
        time.sleep(10 * dispatcher.starting_poll_s)  # held by the starting job all along
        assert len(executor.submitted) == 1 and dispatcher.held_by_starting
        assert len(proposals) == 1  # the pass's
    finally:
        dispatcher.stop()


def test_a_submit_ray_refused_is_tried_again_by_the_next_pass_only(
        client: TestClient) -> None:
    import time

    dispatcher, executor = _held(client, max_starting=2)
    tries = []

    def refuse(job: JobRequest) -> None:
        tries.append(job.job_id)
        raise Unavailable("No available agent to submit job")

    executor.submit = refuse  # type: ignore[method-assign]
    dispatcher.start()
    try:
        time.sleep(10 * dispatcher.starting_poll_s)
        assert len(tries) == 2  # the pass's two, not again 0.2 s later
    finally:
        dispatcher.stop()


def test_a_run_cancelled_after_admit_read_it_stays_cancelled(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cancel that lands between admit reading the queued runs and starting them wins:
    the run is not started nor submitted (on PostgreSQL read committed, on SQLite the
    read before the write transaction, both let the cancel commit in between)."""
    from service.persistence import repository as repo

    exp = client.post(f"{API}/experiments", json=SPEC).json()
    dispatcher, executor = make(client)
    read = repo.queued_runs

    def then_cancelled(session: object, *, limit: int) -> object:
        queued = read(session, limit=limit)  # type: ignore[arg-type]
        assert client.post(f"{API}/experiments/{exp['id']}/cancel").status_code == 200
        return queued

    monkeypatch.setattr(repo, "queued_runs", then_cancelled)
    dispatcher.tick()
    assert executor.submitted == []
    assert [r["status"] for r in runs(client, exp["id"])] == ["cancelled", "cancelled"]
    assert client.get(f"{API}/experiments/{exp['id']}").json()["status"] == "cancelled"


def test_an_experiment_whose_runs_ended_together_is_settled_when_reconciling(
        client: TestClient) -> None:
    """Seen in the long chaos soak on PostgreSQL: an experiment's runs ended within 0.2 s
    of each other, each transaction derived the experiment's status while the others'
    runs still read as running (read committed), and the experiment stayed ``running``
    with every run succeeded. The reconciling pass settles it, with its end event."""
    from sqlalchemy import update

    from service.persistence.db import transaction
    from service.persistence.tables import Run

    exp = client.post(f"{API}/experiments", json=SPEC).json()
    dispatcher, executor = make(client)
    dispatcher.tick()
    sessions = context_of(client.app).sessions
    with transaction(sessions) as s:  # both runs end; neither derived the experiment's end
        s.execute(update(Run).where(Run.experiment_id == exp["id"])
                  .values(status="succeeded", phase=None))
    for job in executor.submitted:
        executor.jobs[job.job_id] = JobState.succeeded
    dispatcher.tick()
    assert client.get(f"{API}/experiments/{exp['id']}").json()["status"] == "running"
    executor.down = True  # settling needs the database alone
    dispatcher.tick(reconcile=True)
    settled = client.get(f"{API}/experiments/{exp['id']}").json()
    assert settled["status"] == "succeeded" and settled["finished_at"] is not None


def test_each_tick_reads_every_job_in_flight_with_one_call(client: TestClient) -> None:
    client.post(f"{API}/experiments", json={**SPEC, "datasets": ["synthetic", "mnist"]})
    dispatcher, executor = make(client, max_in_flight=4)
    dispatcher.tick()
    assert len(executor.submitted) == 4
    executor.calls.clear()
    dispatcher.tick()
    assert executor.calls == ["states"]  # not one status call per running job
    # A cancelled run's job is followed in that same call until its log is kept.
    exp = client.get(f"{API}/experiments").json()["items"][0]
    client.post(f"{API}/experiments/{exp['id']}/cancel")
    executor.calls.clear()
    dispatcher.tick()
    assert executor.calls == ["states"]


def test_a_crashed_driver_requeues_its_run_with_the_reason(client: TestClient) -> None:
    exp = client.post(f"{API}/experiments", json=SPEC).json()
    dispatcher, executor = make(client)
    dispatcher.tick()
    executor.jobs[executor.submitted[0].job_id] = JobState.failed  # died without reporting
    dispatcher.tick()
    crashed, alive = runs(client, exp["id"])
    assert crashed["status"] == "running" and crashed["attempt"] == 1
    detail = client.get(f"{API}/runs/{crashed['id']}").json()
    assert "CUDA out of memory" in detail["attempts"][0]["error"]
    assert alive["status"] == "running" and alive["attempt"] == 0


def test_a_job_stopped_outside_aelab_cancels_its_run(client: TestClient) -> None:
    exp = client.post(f"{API}/experiments", json=SPEC).json()
    dispatcher, executor = make(client)
    dispatcher.tick()
    executor.jobs[executor.submitted[0].job_id] = JobState.stopped  # `ray job stop`
    dispatcher.tick()
    stopped = runs(client, exp["id"])[0]
    assert stopped["status"] == "cancelled" and stopped["error"] == "its Ray job was stopped"


def test_runs_lost_with_their_cluster_are_requeued_once_and_never_duplicated(
        client: TestClient) -> None:
    exp = client.post(f"{API}/experiments", json=SPEC).json()
    dispatcher, executor = make(client)
    dispatcher.tick()
    executor.restart()  # the Ray cluster restarted: a new session, its jobs gone
    dispatcher.tick()
    run = client.get(f"{API}/runs/{exp['runs'][0]['id']}").json()
    assert run["attempt"] == 1 and run["status"] == "running"
    assert "-a1-" in executor.submitted[-1].job_id  # re-admitted in the same pass
    assert len([t for t in executor.submitted if t.run_id == run["id"]]) == 2
    first, second = run["attempts"]
    assert (first["attempt"], first["status"], first["cluster"]) == (0, "failed", "session-1")
    assert "its Ray cluster (session-1) is gone" in first["error"]
    assert (second["attempt"], second["status"], second["cluster"]) == (1, "running",
                                                                      "session-2")
    dispatcher.tick(reconcile=True)  # nothing more to do: attempt 1 runs on session-2
    assert len(executor.submitted) == 4


def test_a_job_its_own_cluster_never_saw_is_submitted_again_not_requeued(
        client: TestClient) -> None:
    """A crash between recording the job and submitting it: same attempt, same job id."""
    exp = client.post(f"{API}/experiments", json=SPEC).json()
    dispatcher, executor = make(client)
    dispatcher.tick()
    lost = executor.submitted[0]
    del executor.jobs[lost.job_id]
    dispatcher.tick()  # not reconciling: nothing
    assert len(executor.submitted) == 2
    dispatcher.tick(reconcile=True)
    assert executor.submitted[-1] == lost and executor.jobs[lost.job_id] == "RUNNING"
    assert runs(client, exp["id"])[0]["attempt"] == 0


def test_a_job_unknown_to_a_different_cluster_is_left_alone(client: TestClient) -> None:
    """The restarted-service bug: asking a second head about the first head's job."""
    exp = client.post(f"{API}/experiments", json=SPEC).json()
    dispatcher, executor = make(client)
    dispatcher.tick()
    executor.session = "some-other-head"  # alive elsewhere, not confirmed gone
    executor.jobs.clear()
    dispatcher.tick(reconcile=True)
    assert [r["attempt"] for r in runs(client, exp["id"])] == [0, 0]
    assert [r["status"] for r in runs(client, exp["id"])] == ["running", "running"]
    assert len(executor.submitted) == 2


def test_attempts_are_capped_and_every_attempts_error_stays(client: TestClient) -> None:
    exp = client.post(f"{API}/experiments", json={**SPEC, "models": ["baseline"]}).json()
    dispatcher, executor = make(client)
    dispatcher.max_attempts = 3
    dispatcher.tick()
    for _ in range(3):
        executor.jobs[executor.submitted[-1].job_id] = JobState.failed  # the driver died
        dispatcher.tick()
    run = client.get(f"{API}/runs/{exp['runs'][0]['id']}").json()
    assert run["status"] == "failed" and run["attempt"] == 2
    assert run["error"].startswith(
        "gave up after 3 attempts (3 of 3 attempts lost by the run itself); the last one was "
        "lost: its driver died: job ") and "CUDA out of memory" in run["error"]
    assert [(a["attempt"], a["status"]) for a in run["attempts"]] == [
        (0, "failed"), (1, "failed"), (2, "failed")]
    assert all("CUDA out of memory" in a["error"] for a in run["attempts"])
    # Each lost attempt's driver log stays, beside the others'.
    logs = {a["name"] for a in run["artifacts"]}
    assert {"job-a0.log", "job-a1.log", "job-a2.log"} <= logs
    text = client.get(f"{API}/runs/{run['id']}/artifacts/job-a1.log").text
    assert text == f"log of {executor.submitted[1].job_id}\n"
    assert len(executor.submitted) == 3
    dispatcher.tick(reconcile=True)
    assert len(executor.submitted) == 3  # never again


def test_losses_of_the_cluster_do_not_spend_the_runs_own_attempts(
        client: TestClient) -> None:
    """Issue 25: a head replaced twice, then a driver killed twice, and the run still has
    its last own attempt; the cluster's losses have a budget of their own."""
    exp = client.post(f"{API}/experiments", json={**SPEC, "models": ["baseline"]}).json()
    run_id = exp["runs"][0]["id"]
    dispatcher, executor = make(client)
    dispatcher.max_attempts, dispatcher.max_cluster_retries = 3, 2
    dispatcher.tick()
    for loss in ("cluster", "run", "cluster", "run"):
        if loss == "cluster":
            executor.restart()
        else:
            executor.jobs[executor.submitted[-1].job_id] = JobState.failed
        dispatcher.tick()
    run = client.get(f"{API}/runs/{run_id}").json()
    assert (run["status"], run["attempt"]) == ("running", 4)
    executor.restart()  # the third loss of its cluster: over the budget of 2 re-queues
    dispatcher.tick()
    run = client.get(f"{API}/runs/{run_id}").json()
    assert (run["status"], run["attempt"]) == ("failed", 4)
    assert [a["lost_to"] for a in run["attempts"]] == [
        "cluster", "run", "cluster", "run", "cluster"]
    assert run["error"].startswith(
        "gave up after 5 attempts (its cluster lost 3 times, more than the 2 re-queues "
        "allowed); the last one was lost: its Ray cluster (session-3) is gone")
    assert len(executor.submitted) == 5


def test_the_runs_own_losses_end_it_at_its_cap_whatever_the_cluster_did(
        client: TestClient) -> None:
    exp = client.post(f"{API}/experiments", json={**SPEC, "models": ["baseline"]}).json()
    run_id = exp["runs"][0]["id"]
    dispatcher, executor = make(client)
    dispatcher.max_attempts, dispatcher.max_cluster_retries = 2, 5
    dispatcher.tick()
    executor.jobs[executor.submitted[-1].job_id] = JobState.failed
    dispatcher.tick()
    executor.restart()
    dispatcher.tick()
    assert client.get(f"{API}/runs/{run_id}").json()["status"] == "running"
    executor.jobs[executor.submitted[-1].job_id] = JobState.failed  # its 2nd own loss
    dispatcher.tick()
    run = client.get(f"{API}/runs/{run_id}").json()
    assert (run["status"], run["attempt"]) == ("failed", 2)
    assert "(2 of 2 attempts lost by the run itself)" in run["error"]
    dispatcher.tick(reconcile=True)
    assert len(executor.submitted) == 3


def test_the_default_budgets_are_the_settings_the_readme_names() -> None:
    from service.settings import Settings

    defaults = Settings()
    readme = (Path(__file__).parents[3] / "README.md").read_text()
    assert (f"`AELAB_MAX_RUN_ATTEMPTS` ({defaults.max_run_attempts})" in readme
            and f"`AELAB_MAX_CLUSTER_RETRIES` ({defaults.max_cluster_retries})" in readme)


def test_a_refused_submit_stays_visible_in_readiness_until_one_succeeds(
        client: TestClient) -> None:
    client.post(f"{API}/experiments", json=SPEC)
    dispatcher, executor = make(client)

    def refuse(job: JobRequest) -> None:
        raise Unavailable("Authentication required: Unauthorized\nsecond line")

    executor.submit = refuse  # type: ignore[method-assign]
    for _ in range(3):  # the cluster answers checks, yet refuses every submit
        dispatcher.tick()
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["ray"].startswith("refusing jobs: submitting aelab-e1")
        assert "second line" not in ready.json()["checks"]["ray"]
    del executor.submit
    dispatcher.tick()
    assert client.get("/readyz").status_code == 200


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


def test_a_cancel_whose_stop_could_not_reach_ray_stops_the_jobs_on_reconcile(
        client: TestClient) -> None:
    """The cancel is recorded while Ray cannot be reached: the jobs run on, until the next
    reconciling pass stops them (and keeps their logs once stopped)."""
    exp = client.post(f"{API}/experiments", json=SPEC).json()
    dispatcher, executor = make(client)
    dispatcher.tick()
    jobs = sorted(t.job_id for t in executor.submitted)

    def unreachable(job_id: str) -> None:
        raise Unavailable("cannot reach the Ray dashboard")

    executor.stop = unreachable  # type: ignore[method-assign]
    r = client.post(f"{API}/experiments/{exp['id']}/cancel").json()
    assert {x["status"] for x in r["runs"]} == {"cancelled"}
    assert [executor.jobs[j] for j in jobs] == [JobState.running] * 2  # still running
    del executor.stop  # Ray answers again
    dispatcher.tick()  # not reconciling: nothing yet
    assert executor.stopped == []
    dispatcher.tick(reconcile=True)
    assert sorted(executor.stopped) == jobs
    dispatcher.tick()  # stopped now: their logs are kept
    for run in exp["runs"]:
        detail = client.get(f"{API}/runs/{run['id']}").json()
        assert detail["status"] == "cancelled"
        assert [a["name"] for a in detail["artifacts"]] == ["job.log"]


def test_runs_of_an_experiment_cancelled_by_an_api_that_died_before_stopping_them(
        client: TestClient) -> None:
    """The cancel committed, the API was killed before it stopped the runs' jobs: on the
    next reconciling pass the runs are cancelled and their jobs stopped, not left to
    train on in a cancelled experiment."""
    from service.persistence import repository as repo
    from service.persistence.db import transaction

    exp = client.post(f"{API}/experiments", json=SPEC).json()
    dispatcher, executor = make(client)
    dispatcher.tick()
    with transaction(context_of(client.app).sessions) as s:
        _, running = repo.request_cancel(s, experiment_id=exp["id"])
    assert len(running) == 2  # ... and the API dies here, before stop_runs
    dispatcher.tick()
    assert [r["status"] for r in runs(client, exp["id"])] == ["running", "running"]
    dispatcher.tick(reconcile=True)
    assert [r["status"] for r in runs(client, exp["id"])] == ["cancelled", "cancelled"]
    assert sorted(executor.stopped) == sorted(t.job_id for t in executor.submitted)


def test_reconcile_stops_a_job_its_run_moved_on_from_and_nothing_else(
        client: TestClient) -> None:
    """A job still in flight for an attempt its run has left (re-queued meanwhile) is
    stopped; the run's current job, a finished run's job still exiting, and a job this
    database never named (another service's) are left alone."""
    from service.client.states import Status
    from service.persistence import repository as repo
    from service.persistence.db import transaction

    exp = client.post(f"{API}/experiments", json=SPEC).json()
    dispatcher, executor = make(client)
    dispatcher.tick()
    moved, done = (t for t in executor.submitted)
    with transaction(context_of(client.app).sessions) as s:
        repo.requeue(s, run_id=moved.run_id, attempt=0, reason="its node was lost")
        repo.finish_run(s, run_id=done.run_id, status=Status.succeeded, attempt=0)
    dispatcher.tick()  # attempt 1 of `moved` is submitted; attempt 0's job is still alive
    current = executor.submitted[-1]
    assert (current.run_id, current.attempt) == (moved.run_id, 1)
    executor.jobs["someone-elses-job"] = JobState.running
    dispatcher.tick(reconcile=True)
    assert executor.stopped == [moved.job_id]
    assert executor.jobs[current.job_id] == executor.jobs[done.job_id] == JobState.running
    assert runs(client, exp["id"])[0]["status"] == "running"


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_a_cancelled_run_deleted_before_its_job_stops_leaves_no_log_behind(
        client: TestClient) -> None:
    exp = client.post(f"{API}/experiments", json=SPEC).json()
    dispatcher, executor = make(client)
    dispatcher.tick()
    job_id = executor.submitted[0].job_id
    executor.stop = lambda job: None  # type: ignore[method-assign]  # the job stops slowly
    client.post(f"{API}/experiments/{exp['id']}/cancel")
    assert client.delete(f"{API}/experiments/{exp['id']}").status_code == 204
    executor.jobs[job_id] = JobState.stopped  # now it has stopped: its log is collectable
    dispatcher.tick()
    root = Path(context_of(client.app).artifacts.root)
    assert _files(root) == []


def test_a_log_whose_run_is_deleted_while_it_is_stored_is_removed_again(
        client: TestClient) -> None:
    exp = client.post(f"{API}/experiments", json=SPEC).json()
    dispatcher, executor = make(client)
    dispatcher.tick()
    ticket = executor.submitted[0]

    def logs_then_deleted(job_id: str) -> str:  # the DELETE lands between check and insert
        client.post(f"{API}/experiments/{exp['id']}/cancel")
        assert client.delete(f"{API}/experiments/{exp['id']}").status_code == 204
        return "log\n"

    executor.logs = logs_then_deleted  # type: ignore[method-assign]
    with pytest.raises(Exception):  # noqa: B017  # the insert is refused (no run row)
        dispatcher.keep_log(ticket.run_id, ticket.job_id)
    assert _files(Path(context_of(client.app).artifacts.root)) == []


def test_a_submit_that_fails_after_its_driver_started_leaves_the_run_to_it(
        client: TestClient) -> None:
    """A submit can raise after Ray took the job (a timeout on the answer): a driver that
    started meanwhile, or a run that ended meanwhile, is never put back in the queue (that
    would run the attempt twice, or turn an ended run into a queued one)."""
    from service.client.states import Status
    from service.persistence import repository as repo
    from service.persistence.db import transaction

    exp = client.post(f"{API}/experiments", json=SPEC).json()
    dispatcher, executor = make(client)
    sessions = context_of(client.app).sessions
    first, second = (r["id"] for r in exp["runs"])

    def accepted_then_raised(job: JobRequest) -> None:
        executor.jobs[job.job_id] = JobState.running
        with transaction(sessions) as s:  # the drivers got going before the answer
            if job.run_id == first:
                repo.set_run(s, run_id=first, phase="preflight")
            else:
                repo.finish_run(s, run_id=second, status=Status.failed, error="bad data")
        raise Unavailable("submitting: read timed out")

    executor.submit = accepted_then_raised  # type: ignore[method-assign]
    dispatcher.tick()
    runs = {r["id"]: r for r in client.get(f"{API}/experiments/{exp['id']}").json()["runs"]}
    assert (runs[first]["status"], runs[first]["phase"]) == ("running", "preflight")
    assert runs[first]["ray_job_id"] is not None
    assert (runs[second]["status"], runs[second]["error"]) == ("failed", "bad data")
    detail = client.get(f"{API}/runs/{first}").json()
    assert [a["attempt"] for a in detail["attempts"]] == [0]

    # A submit refused before any driver started still puts the run back, as before.
    exp2 = client.post(f"{API}/experiments", json={**SPEC, "models": ["baseline"]}).json()

    def refused(job: JobRequest) -> None:
        raise Unavailable("No available agent")

    executor.submit = refused  # type: ignore[method-assign]
    dispatcher.tick()
    run = client.get(f"{API}/experiments/{exp2['id']}").json()["runs"][0]
    assert (run["status"], run["ray_job_id"]) == ("queued", None)
