"""Webhooks: a local receiver gets each event once, correctly signed, also when the API
is killed (SIGKILL) and restarted between the event and its delivery."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from unittest import mock

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from service.app import create_app
from service.context import context_of
from service.orchestration.run_store import DbRunStore, sessions_for
from service.persistence import repository as repo
from service.persistence.artifacts import ArtifactStore
from service.persistence.db import transaction
from service.persistence.tables import Status
from service.settings import Settings, job_environment
from service.webhooks import events_of
from tests.procs import Served
from tests.utils import API, tiny_spec, wait_for

SECRET = "webhook-test-secret"


class Receiver:
    """An HTTP receiver on a free port that answers ``status`` and keeps every request."""

    def __init__(self) -> None:
        self.status = 503
        self.requests: list[tuple[dict[str, str], bytes, int]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = receiver.status
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()},
                                          body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def accepted(self, event: str) -> list[tuple[dict[str, str], bytes, int]]:
        return [r for r in self.requests if r[0]["x-aelab-event"] == event and r[2] == 200]

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture()
def receiver():
    r = Receiver()
    yield r
    r.close()


def driver_sessions(api: Settings) -> sessionmaker[Session]:
    """The sessions a job driver of an API with settings ``api`` opens (``run_job.main``):
    its settings rebuilt from the job's environment, as Ray gives it to the driver."""
    env = {k: v for k, v in os.environ.items()
           if not k.upper().startswith("AELAB_") and k.upper() != "DATABASE_URL"}
    with mock.patch.dict(os.environ, {**env, **job_environment(api)}, clear=True):
        driver = Settings(_env_file=None)
    assert driver.webhook_urls is None  # the URLs never travel; whether to record does
    return sessions_for(driver.sqlalchemy_url, webhook_events=bool(driver.webhook_events))


def test_a_forced_failure_is_delivered_once_signed_across_a_kill(
        tmp_path: Path, receiver: Receiver) -> None:
    home = tmp_path / "home"
    server = Served(home, env={
        "AELAB_WEBHOOK_URLS": receiver.url, "AELAB_WEBHOOK_SECRET": SECRET,
        "AELAB_LOG_FORMAT": "json", "AELAB_START_DISPATCHER": "false",
        "AELAB_PUBLIC_URL": "https://aelab.example",
        "RAY_ADDRESS": "http://127.0.0.1:9"})  # no Ray: this test runs no job
    try:
        exp = server.post("/experiments", json=tiny_spec("baseline")).json()
        run_id = exp["runs"][0]["id"]
        # The run fails as its job driver reports a failure: through the driver's store,
        # on the sessions a driver of this API opens.
        sessions = driver_sessions(Settings(_env_file=None, home=home,
                                            webhook_urls=receiver.url, webhook_secret=SECRET))
        with sessions.begin() as s:
            repo.set_run(s, run_id=run_id, status=Status.running)
        DbRunStore(sessions, ArtifactStore(str(home / "artifacts")), run_id).fail(
            "RuntimeError: forced failure\nsecond line")
        # The receiver refuses (503) until the API has been killed.
        wait_for(lambda: {r[0]["x-aelab-event"] for r in receiver.requests}
                 >= {"run.failed", "experiment.finished"}, 30, "refused attempts")
        server.kill9()
        with sessions() as s:
            pending = events_of(s, state="pending")
        assert sorted(e.event for e in pending) == ["experiment.finished", "run.failed"]
        receiver.status = 200
        server.start()
        wait_for(lambda: receiver.accepted("run.failed")
                 and receiver.accepted("experiment.finished"), 60, "deliveries")
        metrics = httpx.get(server.base + "/metrics", timeout=10).text
        wait_for(lambda: not events_of(sessions(), state="pending"), 10, "the outbox marks")
        server.kill9()  # and once more: nothing delivered is sent again
        server.start()
        time.sleep(2.5)
        log_lines = server.output().splitlines()
    finally:
        server.close()

    failed, finished = receiver.accepted("run.failed"), receiver.accepted("experiment.finished")
    assert len(failed) == 1 and len(finished) == 1
    for headers, body, _ in (*failed, *finished):
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert headers["x-aelab-signature"] == expected
        assert headers["content-type"] == "application/json"
    # Every attempt of an event carries its one delivery id; the two events differ.
    ids = {event: {r[0]["x-aelab-delivery"] for r in receiver.requests
                   if r[0]["x-aelab-event"] == event}
           for event in ("run.failed", "experiment.finished")}
    assert all(len(v) == 1 for v in ids.values()) and len(set.union(*ids.values())) == 2
    run_event = json.loads(failed[0][1])
    assert run_event["event"] == "run.failed"
    assert run_event["delivery_id"] == failed[0][0]["x-aelab-delivery"]
    assert run_event["run"] | {"seed": None} == {
        "id": run_id, "experiment_id": exp["id"], "model": "baseline",
        "dataset": "synthetic", "seed": None, "attempt": 0, "status": "failed",
        "error": "RuntimeError: forced failure"}
    assert run_event["url"] == f"https://aelab.example/runs/{run_id}"
    exp_event = json.loads(finished[0][1])
    assert exp_event["experiment"]["status"] == "failed"
    assert exp_event["experiment"]["runs"] == {"failed": 1}
    assert exp_event["url"] == f"https://aelab.example/experiments/{exp['id']}"
    # /metrics counted them; the API's log lines are JSON objects.
    assert 'aelab_webhook_deliveries_total{event="run.failed"} 1.0' in metrics
    assert 'aelab_webhook_outbox{state="delivered"} 2.0' in metrics
    records = [json.loads(line) for line in log_lines if line.startswith("{")]
    assert any(r["logger"] == "aelab.webhooks" and "delivered" in r["message"]
               and r.get("run_id") == run_id for r in records)
    assert any(r["logger"] == "aelab.access" and r.get("request_id") for r in records)


def test_events_are_recorded_only_where_webhooks_are_configured(tmp_path: Path) -> None:
    """Without AELAB_WEBHOOK_URLS neither the API nor its job drivers record an event, so
    URLs set later receive none of the runs that ended meanwhile; with them, both do."""
    home = tmp_path / "home"
    off = Settings(_env_file=None, home=home, start_dispatcher=False)
    on = Settings(_env_file=None, home=home, start_dispatcher=False,
                  webhook_urls="http://127.0.0.1:9/hook", webhook_secret=SECRET)
    assert (off.webhook_events, on.webhook_events) == (False, True)
    assert job_environment(off)["AELAB_WEBHOOK_EVENTS"] == "false"
    assert job_environment(on)["AELAB_WEBHOOK_EVENTS"] == "true"

    def end_runs(api: Settings) -> list[str]:
        """One experiment cancelled through the API, one whose run a driver fails: the
        events recorded."""
        with TestClient(create_app(api)) as client:
            cancelled = client.post(f"{API}/experiments", json=tiny_spec("baseline")).json()
            client.post(f"{API}/experiments/{cancelled['id']}/cancel")
            failing = client.post(f"{API}/experiments", json=tiny_spec("baseline")).json()
        sessions = driver_sessions(api)
        run_id = failing["runs"][0]["id"]
        with sessions.begin() as s:
            repo.set_run(s, run_id=run_id, status=Status.running)
        DbRunStore(sessions, ArtifactStore(str(home / "artifacts")), run_id).fail("boom")
        with sessions() as s:
            return [e.event for e in events_of(s)]

    assert end_runs(off) == []
    assert end_runs(on) == ["run.cancelled", "experiment.finished",
                            "run.failed", "experiment.finished"]
    with pytest.raises(ValueError, match="webhook_events is false while webhook_urls"):
        Settings(_env_file=None, home=home, webhook_urls="http://127.0.0.1:9/hook",
                 webhook_secret=SECRET, webhook_events=False)


@pytest.mark.parametrize("last_run_ends", ["cancelled", "succeeded"])
def test_a_cancelled_experiment_finishes_once_its_last_running_run_has_ended(
        tmp_path: Path, last_run_ends: str) -> None:
    """Cancelling an experiment whose run is running: the experiment is cancelled at once,
    but ``experiment.finished`` (and ``finished_at``) come when that run has stopped —
    after its ``run.cancelled``, counting no run as running. A run that got to succeed
    before it was stopped still ends the experiment."""
    settings = Settings(_env_file=None, home=tmp_path / "home", start_dispatcher=False,
                        webhook_urls="http://127.0.0.1:9/hook", webhook_secret=SECRET)
    with TestClient(create_app(settings)) as client:
        exp = client.post(f"{API}/experiments", json=tiny_spec("baseline", "pixel_shuffle")
                          ).json()
        running, queued = (r["id"] for r in exp["runs"])
        ctx = context_of(client.app)
        with transaction(ctx.sessions) as s:  # as the dispatcher admits it
            repo.start_attempt(s, run_id=running, attempt=0, job_id="job-0", cluster=None)
        # The cancel endpoint's first transaction; its runs are stopped after it.
        with transaction(ctx.sessions) as s:
            _, stopping = repo.request_cancel(s, experiment_id=exp["id"])
        assert [r.id for r in stopping] == [running]
        with ctx.sessions() as s:
            assert [(e.event, e.run_id) for e in events_of(s)] == [("run.cancelled", queued)]
        now = client.get(f"{API}/experiments/{exp['id']}").json()
        assert (now["status"], now["finished_at"]) == ("cancelled", None)
        if last_run_ends == "cancelled":
            ctx.stop_runs(stopping)  # what the dispatcher does once Ray stopped its job
        else:
            with transaction(ctx.sessions) as s:  # its driver got there first
                repo.finish_run(s, run_id=running, status=Status.succeeded, attempt=0)
        with ctx.sessions() as s:
            events = events_of(s)
        assert [(e.event, e.run_id) for e in events] == [
            ("run.cancelled", queued), (f"run.{last_run_ends}", running),
            ("experiment.finished", None)]
        body = json.loads(events[-1].body)["experiment"]
        assert body["status"] == "cancelled"
        assert body["runs"] == ({"cancelled": 2} if last_run_ends == "cancelled"
                                else {"cancelled": 1, "succeeded": 1})
        assert client.get(f"{API}/experiments/{exp['id']}").json()["finished_at"] is not None
        # Ending is once: a late word from the stopped run changes nothing.
        with transaction(ctx.sessions) as s:
            repo.refresh_experiment_status(s, experiment_id=exp["id"])
        with ctx.sessions() as s:
            assert len(events_of(s)) == 3


def test_a_pruned_run_sends_run_pruned_and_the_readme_lists_every_run_event(
        tmp_path: Path) -> None:
    """A search's sample its pruner stops ends ``pruned``: its event is ``run.pruned``
    (with why), and the README's settings table and webhooks section list it with the
    other run events (one per final status a run can end in)."""
    from service.client.states import FINISHED

    api = Settings(_env_file=None, home=tmp_path / "home", start_dispatcher=False,
                   webhook_urls="http://127.0.0.1:9/hook", webhook_secret=SECRET)
    with TestClient(create_app(api)) as client:
        run_id = client.post(f"{API}/experiments", json=tiny_spec("baseline")).json()[
            "runs"][0]["id"]
    sessions = driver_sessions(api)
    with transaction(sessions) as s:
        repo.set_run(s, run_id=run_id, status=Status.running)
        repo.finish_run(s, run_id=run_id, status=Status.pruned,
                        error="pruned at epoch 1 (asha): val_mse 0.9 is not in the best 1/4")
    with sessions() as s:
        [event] = [e for e in events_of(s) if e.run_id == run_id]
    assert event.event == "run.pruned"
    assert json.loads(event.body)["run"]["error"].startswith("pruned at epoch 1 (asha)")
    readme = (Path(__file__).parents[3] / "README.md").read_text()
    table = next(line for line in readme.splitlines() if "`AELAB_WEBHOOK_URLS`" in line)
    section = readme.split("### Webhooks", 1)[1].split("\n### ", 1)[0]
    for status in FINISHED:
        assert f"`run.{status.value}`" in table and f"`run.{status.value}`" in section
