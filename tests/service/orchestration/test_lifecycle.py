"""Never twice, never lost, nothing left behind — with real processes and `kill -9`, on
SQLite and on a private PostgreSQL, in the default deployment: `aelab serve` with its
embedded Ray head and Ray token auth on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.context import context_of
from service.orchestration.ray_head import LocalRayHead, _processes_of
from service.orchestration.run_store import DbRunStore
from service.persistence import repository as repo
from service.persistence.db import transaction
from service.persistence.tables import ReferenceClassifier
from tests.procs import Served
from tests.utils import API, CPU, tiny_spec, wait_for
from workers.store import RunCancelled, StaleAttempt

pytestmark = [pytest.mark.ray, pytest.mark.slow]

RUN = tiny_spec(epochs=10, data={"train_limit": 1024, "test_limit": 64}, resources=CPU)


def _jobs_of(dashboard: str, uid: str) -> list[str]:
    from ray.job_submission import JobSubmissionClient

    return [j.submission_id for j in JobSubmissionClient(dashboard).list_jobs()
            if (j.submission_id or "").endswith(uid)]


def _walk(root: Path) -> list[str]:
    return [str(p.relative_to(root)) for p in root.rglob("*")] if root.exists() else []


def test_an_api_crash_keeps_its_head_and_runs_each_epoch_once(lifecycle_db: str,
                                                                 tmp_path: Path) -> None:
    home = tmp_path / "home"
    server = Served(home, env={"AELAB_DATABASE_URL": lifecycle_db})
    try:
        exp = server.post("/experiments", RUN).json()
        wait_for(lambda: server.experiment(exp["id"])["runs"][0]["epoch"] >= 1, 300,
                 "training to start", 0.5)
        record = LocalRayHead.load(home / "ray")
        assert record is not None and record.session
        # The head's session (training included) and the job driver's (Ray starts it in
        # a session of its own) yield the CPU to the API's: Linux shares the CPU between
        # sessions before nice levels count.
        if Path("/proc/self/autogroup").exists():
            drivers = _drivers(home, exp["runs"][0]["id"])
            assert drivers
            for pid in [record.pid, *drivers]:  # AELAB_TRAINING_NICENESS, default 10
                assert Path(f"/proc/{pid}/autogroup").read_text().split()[-1] == "10", pid
            assert server.process is not None  # the API's session keeps its share
            assert Path(f"/proc/{server.process.pid}/autogroup").read_text().split()[-1] \
                == "0"
        server.kill9()  # the API alone: its head (own process group) survives

        server.start()  # the same home: it must re-adopt that head, not start another
        done = wait_for(lambda: server.ended(exp["id"]), 300, "the experiment", 1)
        assert done["status"] == "succeeded", done
        run = server.get(f"{API}/runs/{done['runs'][0]['id']}")
        assert run["attempt"] == 0 and [a["attempt"] for a in run["attempts"]] == [0]
        assert [e["epoch"] for e in run["epochs"]] == list(range(1, 11))
        assert "re-adopting the local Ray head" in server.output()
        after = LocalRayHead.load(home / "ray")
        assert after is not None and (after.pid, after.session) == (record.pid,
                                                                    record.session)
        assert server.output().count("starting a local Ray head") == 1  # one head, ever
        uid = run["ray_job_id"].rsplit("-", 1)[1]
        assert _jobs_of(record.dashboard, uid) == [run["ray_job_id"]]

        # A finished attempt removes its own trial checkpoints (up to 276 MB an epoch for
        # the ResNet arms); the artifacts stay.
        trial_folder = f"run-{run['id']}-{uid}/a0"
        assert not [p for p in _walk(home / "ray_results") if p.startswith(trial_folder)]
        assert any(p.startswith(f"run-{run['id']}/a0/") for p in _walk(home / "artifacts"))

        # SIGTERM with nothing in flight: prompt, and the head goes with the service.
        assert server.terminate(signal.SIGTERM) < 10
        assert not os.path.exists(record.temp_dir)
        assert not _processes_of(record.temp_dir, record.gcs)
        assert LocalRayHead.load(home / "ray") is None
    finally:
        server.close()
        _cleanup_heads(home)


def _drivers(home: Path, run_id: int) -> list[int]:
    """Job driver processes of run ``run_id`` (any attempt) of the service at ``home``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if b"service.orchestration.run_job" in cmdline and \
                f"--run-id {run_id} ".encode() in cmdline and \
                f"AELAB_HOME={home}\0".encode() in environ:
            found.append(int(entry.name))
    return found


def httpx_delete(server: Served, exp_id: int) -> int:
    import httpx

    return httpx.delete(f"{server.base}{API}/experiments/{exp_id}", timeout=30).status_code


def _cleanup_heads(home: Path) -> None:
    record = LocalRayHead.load(home / "ray")
    if record is not None:
        LocalRayHead(state_dir=home / "ray", record=record).stop()


def test_a_dead_head_is_cleaned_up_replaced_and_its_runs_requeued(lifecycle_db: str,
                                                                   tmp_path: Path) -> None:
    home = tmp_path / "home"
    server = Served(home, env={"AELAB_DATABASE_URL": lifecycle_db})
    try:
        exp = server.post("/experiments", RUN).json()
        wait_for(lambda: server.experiment(exp["id"])["runs"][0]["epoch"] >= 2, 300,
                 "training to start", 0.5)
        dead = LocalRayHead.load(home / "ray")
        assert dead is not None
        drivers = _drivers(home, exp["runs"][0]["id"])
        assert drivers  # its shell and its python
        os.killpg(dead.pid, signal.SIGKILL)  # the head dies; the API stays up

        def readiness() -> dict | None:
            import httpx

            r = httpx.get(f"{server.base}/readyz", timeout=10)
            return r.json() if r.status_code == 503 else None

        why = wait_for(readiness, 60, "readyz to say Ray is down", 0.3)
        assert why["checks"]["ray"].startswith("unreachable: ")
        assert server.get(f"{API}/experiments/{exp['id']}") is not None  # reads still work

        requeued = wait_for(lambda: server.experiment(exp["id"])["runs"][0]["attempt"] == 1
                            and server.experiment(exp["id"])["runs"][0]["epoch"] >= 1,
                            300, "the run to restart on a new head", 1)
        assert requeued
        new = LocalRayHead.load(home / "ray")
        assert new is not None and new.session != dead.session
        assert not os.path.exists(dead.temp_dir)  # cleaned up, not orphaned
        assert not _processes_of(dead.temp_dir, dead.gcs)
        assert not any(Path(f"/proc/{pid}").exists() for pid in drivers)  # its driver too

        # Ctrl-C with a run in flight: prompt; the head stays for the next start.
        assert server.terminate(signal.SIGINT) < 10
        assert "left the local Ray head running with 1 run(s) in flight" in server.output()
        assert not LocalRayHead(state_dir=home / "ray", record=new).exited()
        server.start()
        done = wait_for(lambda: server.ended(exp["id"]), 300, "the experiment", 1)
        assert done["status"] == "succeeded", done
        run = server.get(f"{API}/runs/{done['runs'][0]['id']}")
        assert [e["epoch"] for e in run["epochs"]] == list(range(1, 11))
        first, second = run["attempts"]
        assert first["status"] == "failed" and f"({dead.session}) is gone" in first["error"]
        assert second["status"] == "succeeded" and second["cluster"] == new.session

        # The run has ended for good: the checkpoints the killed attempt 0 left behind go
        # with its last attempt's (up to 276 MB an epoch for the ResNet arms).
        artifacts, trials = home / "artifacts", home / "ray_results"
        wait_for(lambda: not [p for p in _walk(trials) if p.startswith(f"run-{run['id']}-")],
                 60, "the lost attempt's checkpoints to be removed", 0.5)
        # DELETE leaves nothing of the experiment: rows and artifacts.
        assert any(p.startswith(f"run-{run['id']}/") for p in _walk(artifacts))
        assert httpx_delete(server, exp["id"]) == 204
        assert not [p for p in _walk(artifacts) if p.startswith(f"run-{run['id']}")]
        assert not [p for p in _walk(trials) if p.startswith(f"run-{run['id']}-")]
        assert server.get(f"{API}/runs/{run['id']}") is None
    finally:
        server.close()
        _cleanup_heads(home)


def test_a_database_outage_loses_and_doubles_nothing(private_postgres, tmp_path: Path
                                                      ) -> None:
    import httpx

    url = private_postgres.database("outage")
    home = tmp_path / "home"
    server = Served(home, env={"AELAB_DATABASE_URL": url})
    try:
        spec = {**RUN, "epochs": 12}
        exp = server.post("/experiments", spec).json()
        wait_for(lambda: server.experiment(exp["id"])["runs"][0]["epoch"] >= 2, 300,
                 "training to start", 0.5)
        private_postgres.stop()
        try:
            ready = httpx.get(f"{server.base}/readyz", timeout=30)
            assert ready.status_code == 503
            assert ready.json()["checks"]["database"].startswith("unreachable")
            for path in (f"{API}/experiments", f"{API}/experiments/{exp['id']}",
                         f"{API}/runs/{exp['runs'][0]['id']}"):
                r = httpx.get(server.base + path, timeout=30)
                assert r.status_code == 503, (path, r.text)
                assert r.json()["detail"] == ("service unavailable: the database cannot "
                                              "be reached")
            time.sleep(6)  # the driver keeps training and retries its writes
        finally:
            private_postgres.start()
        done = wait_for(lambda: server.ended(exp["id"]), 300, "the experiment", 1)
        assert done["status"] == "succeeded", done
        run = server.get(f"{API}/runs/{done['runs'][0]['id']}")
        assert [e["epoch"] for e in run["epochs"]] == list(range(1, 13))
        assert run["attempt"] == 0 and run["measures"]["mse"] > 0
        assert len(run["lr_trials"]) == 1

        # The password travels in no job record, job log or service log.
        from ray.job_submission import JobSubmissionClient

        record = LocalRayHead.load(home / "ray")
        assert record is not None
        client = JobSubmissionClient(record.dashboard)
        for job in client.list_jobs():
            assert private_postgres.password not in repr(job)
            assert private_postgres.password not in client.get_job_logs(job.submission_id)
        assert private_postgres.password not in server.output()
        logs = server.get(f"{API}/runs/{run['id']}/logs")
        assert private_postgres.password not in logs["text"]
    finally:
        server.close()
        _cleanup_heads(home)


# --- fencing and shared work, without Ray ---------------------------------------------


def _running_run(client: TestClient) -> int:
    exp = client.post(f"{API}/experiments", json={**RUN, "models": ["baseline", "resnet"]})
    run_ids = [r["id"] for r in exp.json()["runs"]]
    with transaction(context_of(client.app).sessions) as s:
        for run_id in run_ids:
            repo.start_attempt(s, run_id=run_id, attempt=0, job_id=f"job-{run_id}",
                               cluster="c1")
    return run_ids[0]


def test_a_stale_drivers_writes_are_refused(client: TestClient) -> None:
    from models.plan import EpochMetrics

    app = client.app
    run_id = _running_run(client)
    stale = DbRunStore(context_of(app).sessions, context_of(app).artifacts, run_id, attempt=0)
    epoch = EpochMetrics(1, "phase1", 32, 1e-3, 0.5, 0.4, 0.4, 0.5, 1.0, 100.0)
    stale.record_epoch(epoch)
    with transaction(context_of(app).sessions) as s:
        assert repo.requeue(s, run_id=run_id, attempt=0, reason="its cluster is gone")
        repo.start_attempt(s, run_id=run_id, attempt=1, job_id="job-a1", cluster="c2")
    current = DbRunStore(context_of(app).sessions, context_of(app).artifacts, run_id, attempt=1)
    current.record_epoch(epoch)
    for write in (lambda: stale.record_epoch(epoch), lambda: stale.set_phase("train"),
                  lambda: stale.record_measures({"mse": 1.0}), stale.succeed,
                  lambda: stale.fail("boom"),
                  lambda: stale.save_artifact("samples.png", "samples", b"x", "image/png")):
        with pytest.raises(StaleAttempt):
            write()
    assert stale.is_cancelled() and not current.is_cancelled()
    run = client.get(f"{API}/runs/{run_id}").json()
    assert run["status"] == "running" and run["attempt"] == 1 and run["artifacts"] == []
    assert [e["epoch"] for e in run["epochs"]] == [1]
    assert not list(Path(context_of(app).settings.artifact_root).rglob("samples.png"))
    client.post(f"{API}/experiments/{run['experiment_id']}/cancel")
    with pytest.raises(RunCancelled):
        current.record_epoch(epoch)


def test_a_pipeline_whose_attempt_was_replaced_stops_and_changes_nothing(
        client: TestClient) -> None:
    from workers.context import RunEnv
    from workers.pipeline import LocalSteps, run_pipeline
    from workers.spec import RunSpec

    app = client.app
    run_id = _running_run(client)
    with transaction(context_of(app).sessions) as s:
        repo.requeue(s, run_id=run_id, attempt=0, reason="lost")
        spec = RunSpec.model_validate(repo.get_run(s, run_id=run_id).spec)
    stale = DbRunStore(context_of(app).sessions, context_of(app).artifacts, run_id, attempt=0)
    env = RunEnv(data_root="/unused", weights_dir="/unused", allow_download=False)
    assert run_pipeline(spec, stale, LocalSteps(env)) is False
    run = client.get(f"{API}/runs/{run_id}").json()
    assert (run["status"], run["attempt"], run["epochs"], run["error"]) == ("queued", 1, [],
                                                                            None)


_CLAIMER = """
import sys, time
from service.persistence.artifacts import ArtifactStore
from service.persistence.db import make_engine, make_sessionmaker
from service.orchestration.run_store import DbRunStore
store = DbRunStore(make_sessionmaker(make_engine(sys.argv[1])), ArtifactStore(sys.argv[2]),
                   int(sys.argv[3]), heartbeat_s=0.5, claim_expiry_s=4)
store.reference_classifier("synthetic-small-k", "synthetic",
                           lambda: (time.sleep(3600), (b"", 0.0))[1])
"""


def test_a_dead_classifier_trainers_claim_is_taken_over(client: TestClient,
                                                         settings) -> None:
    app = client.app
    first = _running_run(client)
    second = first + 1
    trainer = subprocess.Popen([sys.executable, "-c", _CLAIMER, settings.sqlalchemy_url,
                                settings.artifact_root, str(first)])
    try:
        def beats() -> object:
            with context_of(app).sessions() as s:
                row = s.get(ReferenceClassifier, "synthetic-small-k")
                return row is not None and row.owner == f"run-{first}-a0"

        wait_for(beats, 60, "the first trainer's claim", 0.2)
        waiter = DbRunStore(context_of(app).sessions, context_of(app).artifacts, second,
                            claim_expiry_s=4)
        time.sleep(2)
        assert waiter._claim("synthetic-small-k", "synthetic") is False  # alive: wait
        trainer.send_signal(signal.SIGKILL)
        trainer.wait()
        killed = time.monotonic()
        trained: list[bool] = []
        blob, accuracy = waiter.reference_classifier(
            "synthetic-small-k", "synthetic",
            lambda: (trained.append(True), (b"weights", 0.75))[1])
        waited = time.monotonic() - killed
        assert trained == [True] and (blob, accuracy) == (b"weights", 0.75)
        assert 2 <= waited < 15  # the claim expired (4 s after the last beat), no sooner
        with context_of(app).sessions() as s:
            row = s.get(ReferenceClassifier, "synthetic-small-k")
            assert (row.status.value, row.owner, row.accuracy) == (
                "succeeded", f"run-{second}-a0", 0.75)
    finally:
        if trainer.poll() is None:
            trainer.kill()


def test_a_taken_dashboard_port_is_named_not_joined(tmp_path: Path) -> None:
    """Another process on AELAB_DASHBOARD_PORT: no head is started, nothing is joined, and
    readiness says which setting to change."""
    import socket

    from service.errors import Unavailable
    from service.orchestration.ray_head import EmbeddedHead

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        head = EmbeddedHead(tmp_path / "ray", dashboard_port=port)
        with pytest.raises(Unavailable, match=f"dashboard port {port} "
                                              r"\(AELAB_DASHBOARD_PORT\) is taken"):
            head.ensure()
        assert head.head is None and LocalRayHead.load(tmp_path / "ray") is None
        with pytest.raises(Unavailable, match="failed to start"):  # and it does not spin
            head.ensure()


def test_one_service_per_home_and_a_clear_line_when_the_database_is_down(
        tmp_path: Path) -> None:
    home = tmp_path / "home"
    server = Served(home)  # holds the home
    try:
        second = subprocess.run(
            [sys.executable, "-m", "service.cli", "serve", "--port", "1"],
            env={**server.env}, capture_output=True, text=True, timeout=120)
        assert second.returncode == 1
        assert f"another aelab serve uses AELAB_HOME={home}" in second.stderr
    finally:
        assert server.terminate() < 10
        server.close()
        _cleanup_heads(home)
    down = subprocess.run(
        [sys.executable, "-m", "service.cli", "serve"],
        env={**server.env, "AELAB_DATABASE_URL":
             "postgresql+psycopg://aelab:pw-secret@127.0.0.1:1/aelab"},
        capture_output=True, text=True, timeout=120)
    assert down.returncode == 3
    lines = [ln for ln in down.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(
        "error: the database at postgresql+psycopg://aelab:***@127.0.0.1:1/aelab cannot be "
        "reached (")
    assert "pw-secret" not in down.stderr + down.stdout
