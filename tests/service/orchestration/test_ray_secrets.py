"""The API's secrets stay with the API: the session's Ray head is started as `aelab serve`
starts its embedded head, with the API token and the database URL and password in its
environment (``RAY_HEAD_SECRETS``, tests/conftest.py), and no process of that cluster —
GCS, raylet, dashboard, workers, a job's driver — holds any of them (Linux ``/proc``),
while a job's driver still gets from its job environment (``job_environment``) the
database and no token."""

from __future__ import annotations

import json
import os
import shlex
import sys
import textwrap
from pathlib import Path

import pytest

from tests.utils import RAY_HEAD_SECRETS, wait_for

pytestmark = [pytest.mark.ray]


def _environ(pid: int | str) -> bytes:
    return Path(f"/proc/{pid}/environ").read_bytes()


def _leaks(environ: bytes) -> list[str]:
    """The secrets' names or values found in a process's environment."""
    entries = environ.split(b"\0")
    names = {e.split(b"=", 1)[0].decode(errors="replace").upper() for e in entries}
    found = sorted(n for n in RAY_HEAD_SECRETS if n in names)
    found += sorted({f"value of {n}" for n, v in RAY_HEAD_SECRETS.items()
                     if v.encode() in environ})
    return found


def test_no_process_of_the_cluster_holds_the_apis_secrets(ray_driver) -> None:
    import ray

    from service.orchestration.ray_head import _processes_of

    head = ray_driver

    @ray.remote(num_cpus=0)
    def worker_pid() -> int:
        return os.getpid()

    worker = ray.get(worker_pid.remote(), timeout=120)
    pids = set(_processes_of(head.record.temp_dir, head.gcs_address)) | {worker}
    kinds: dict[str, list[int]] = {}
    leaks: dict[str, list[str]] = {}
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            environ = _environ(pid)
        except OSError:  # ended meanwhile
            continue
        # Workers name themselves "ray::IDLE", "ray::<task>" (their process title).
        kind = "worker" if cmdline.startswith(b"ray::") else next(
            (k for k in ("gcs_server", "raylet", "dashboard.py", "ray start")
             if k.encode() in cmdline), "other")
        kinds.setdefault(kind, []).append(pid)
        if found := _leaks(environ):
            leaks[f"{pid} {cmdline[:120].decode(errors='replace')}"] = found
    # The check reads the processes it is about (a worker is the task's own process).
    assert {"gcs_server", "raylet", "dashboard.py", "worker"} <= set(kinds), kinds
    assert worker in kinds["worker"]
    assert leaks == {}


def test_a_jobs_driver_gets_the_database_and_no_secret(ray_driver, tmp_path: Path) -> None:
    from ray.job_submission import JobStatus, JobSubmissionClient

    from service.settings import Settings, job_environment

    url = "postgresql+psycopg://aelab:job-db-password@db.example/aelab"
    settings = Settings(home=tmp_path / "home", database_url=url, api_token="job-token")
    env = job_environment(settings, database_url_file=settings.database_url_for_jobs())
    probe = textwrap.dedent("""
        import json
        from pathlib import Path
        from service.settings import Settings
        s = Settings()
        print("AELAB-PROBE " + json.dumps({
            "url": s.sqlalchemy_url, "token": s.api_token is not None,
            "environ": Path("/proc/self/environ").read_bytes().decode(errors="replace")}))
    """)
    client = JobSubmissionClient(ray_driver.dashboard_url)
    job = client.submit_job(entrypoint=f"{sys.executable} -c {shlex.quote(probe)}",
                            runtime_env={"env_vars": env}, entrypoint_num_cpus=0)
    status = wait_for(lambda: (s := client.get_job_status(job)).is_terminal() and s, 120,
                      "the probe job to end", 0.5)
    logs = client.get_job_logs(job)
    assert status == JobStatus.SUCCEEDED, logs
    line = next(ln for ln in logs.splitlines() if ln.startswith("AELAB-PROBE "))
    seen = json.loads(line.removeprefix("AELAB-PROBE "))
    assert seen["url"] == url and seen["token"] is False
    environ = seen["environ"].encode()
    assert _leaks(environ) == []
    assert b"job-db-password" not in environ and b"job-token" not in environ
