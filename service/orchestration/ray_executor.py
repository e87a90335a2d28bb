"""The Executor on Ray: one Ray job per run, through Ray's job-submission API.

Each run appears in the Ray dashboard's job list under its readable id, with its logs;
stopping the job stops its Tune trials and frees their GPUs. Without ``RAY_ADDRESS`` a
local head (with dashboard) is started and owned by this process.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from service.errors import Unavailable
from service.orchestration.dispatcher import JobRequest, JobState
from service.settings import Settings, job_environment

log = logging.getLogger("aelab.ray")
HEAD_START_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def use_token_auth(state_dir: Path) -> str:
    """Token auth for a head we own: one token file under ``state_dir``, announced to
    this process (job clients) and inherited by the head (and so by every job). A token
    this process was already given (RAY_AUTH_TOKEN[_PATH]) wins: Ray reads it once."""
    if os.environ.get("RAY_AUTH_MODE") == "token":
        if os.environ.get("RAY_AUTH_TOKEN"):
            return os.environ["RAY_AUTH_TOKEN"]
        if os.environ.get("RAY_AUTH_TOKEN_PATH"):
            return Path(os.environ["RAY_AUTH_TOKEN_PATH"]).read_text().strip()
    state_dir.mkdir(parents=True, exist_ok=True)
    token_file = state_dir / "auth_token"
    if not token_file.is_file():
        token_file.write_text(secrets.token_hex(32))
        token_file.chmod(0o600)
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(token_file)
    return token_file.read_text().strip()


class LocalRayHead:
    """`ray start --head --block` as a child process: it stops when we stop it.

    Its address is written to ``state_dir/head.json``: a service restarted after a crash
    finds the head (and the runs on it) still alive and reuses it.
    """

    def __init__(self, *, state_dir: Path, dashboard_port: int = 0,
                 num_cpus: int | None = None, num_gpus: int | None = None,
                 temp_dir: str | None = None) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        use_token_auth(state_dir)
        self.record = state_dir / "head.json"
        self.gcs_port = free_port()
        self.dashboard_port = dashboard_port or free_port()
        # Ray's socket paths must stay short: a private folder under /tmp, not deep paths.
        self.owns_temp_dir = temp_dir is None
        self.temp_dir = temp_dir or tempfile.mkdtemp(prefix="aelab-ray-")
        ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
        cmd = [ray, "start", "--head", "--block", f"--port={self.gcs_port}",
               "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
               f"--temp-dir={self.temp_dir}", "--disable-usage-stats", "--include-dashboard=true"]
        # Ray's agents default to fixed ports; a second Ray on the machine would collide.
        for flag in ("dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                     "runtime-env-agent-port", "metrics-export-port",
                     "ray-client-server-port"):
            cmd.append(f"--{flag}={free_port()}")
        if num_cpus is not None:
            cmd.append(f"--num-cpus={num_cpus}")
        if num_gpus is not None:
            cmd.append(f"--num-gpus={num_gpus}")
        log.info("starting a local Ray head: %s", " ".join(cmd))
        self.process: subprocess.Popen[bytes] | None = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        self.record.write_text(json.dumps({"dashboard": self.dashboard_url,
                                           "pid": self.process.pid}))

    @classmethod
    def running(cls, state_dir: Path) -> str | None:
        """The dashboard URL of a head recorded under ``state_dir`` that still answers."""
        record = state_dir / "head.json"
        if not record.is_file():
            return None
        use_token_auth(state_dir)
        url = json.loads(record.read_text())["dashboard"]
        try:
            with urllib.request.urlopen(f"{url}/api/version", timeout=3):
                return url
        except OSError:
            return None

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
            if self.owns_temp_dir:  # the session logs of a head that is gone
                shutil.rmtree(self.temp_dir, ignore_errors=True)
        self.record.unlink(missing_ok=True)


class RayExecutor:
    def __init__(self, address: str, *, job_env: dict[str, str],
                 head: LocalRayHead | None = None) -> None:
        self.address = address
        self.job_env = job_env
        self.head = head
        self._client: Any = None

    @classmethod
    def from_settings(cls, settings: Settings) -> RayExecutor:
        head = None
        address = settings.ray_address
        state_dir = settings.home_path / "ray"
        if not address:
            address = LocalRayHead.running(state_dir)
            if address:
                print(f"aelab: reusing the local Ray head at {address}", flush=True)
        if not address:
            head = LocalRayHead(state_dir=state_dir, dashboard_port=settings.dashboard_port)
            address = head.dashboard_url
        elif not address.startswith(("http://", "https://")):
            # A GCS address (host:6379): the job API lives on the dashboard port.
            address = f"http://{address.split(':')[0]}:8265"
        executor = cls(address, job_env=job_environment(settings), head=head)
        if head is not None:
            executor.wait_until_up(HEAD_START_TIMEOUT_S)
            print(f"aelab: local Ray head up, dashboard at {address}", flush=True)
        return executor

    def wait_until_up(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.check()
                return
            except Unavailable as exc:
                process = self.head.process if self.head is not None else None
                if process is not None and process.poll() is not None:
                    err = process.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
                    raise RuntimeError(f"the local Ray head exited: {err}") from exc
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)

    def client(self) -> Any:
        if self._client is None:
            from ray.job_submission import JobSubmissionClient

            try:
                self._client = JobSubmissionClient(self.address)
            except Exception as exc:  # ConnectionError, auth errors, …
                raise Unavailable(f"Ray at {self.address}: {exc}") from exc
        return self._client

    def check(self) -> None:
        try:
            self.client().get_version()
        except Unavailable:
            raise
        except Exception as exc:
            self._client = None
            raise Unavailable(f"Ray at {self.address}: {exc}") from exc

    @property
    def dashboard_url(self) -> str | None:
        return self.address

    def submit(self, job: JobRequest) -> None:
        try:
            self.client().submit_job(
                entrypoint=f"{sys.executable} -m service.orchestration.run_job "
                           f"--run-id {job.run_id}",
                submission_id=job.job_id,
                runtime_env={"env_vars": self.job_env},
                metadata=job.metadata,
                entrypoint_num_cpus=0,
            )
        except Unavailable:
            raise
        except Exception as exc:
            if "already exists" in str(exc):
                return  # submitted before a crash: the job is running, nothing to do
            # Unreachable, or up but not ready ("No available agent"): try again later.
            raise Unavailable(f"submitting {job.job_id}: {exc}") from exc

    def state(self, job_id: str) -> JobState | None:
        try:
            status = self.client().get_job_status(job_id)
        except Unavailable:
            raise
        except Exception as exc:
            if "does not exist" in str(exc) or "not found" in str(exc).lower():
                return None
            raise Unavailable(str(exc)) from exc
        return JobState(str(status.value if hasattr(status, "value") else status))

    def stop(self, job_id: str) -> None:
        try:
            self.client().stop_job(job_id)
        except Exception as exc:
            if "does not exist" not in str(exc):
                raise Unavailable(str(exc)) from exc

    def failure_reason(self, job_id: str) -> str:
        """One line: the last error the job's log shows, else Ray's own message."""
        try:
            info = self.client().get_job_info(job_id)
            logs = self.client().get_job_logs(job_id)
        except Exception as exc:
            return f"job {job_id} ended; its details are unavailable ({type(exc).__name__})"
        return last_error_line(logs) or first_line(info.message or "the job failed")

    def logs(self, job_id: str) -> str | None:
        """The job driver's log as Ray keeps it, or None when Ray does not know the job."""
        try:
            return self.client().get_job_logs(job_id)
        except Unavailable:
            raise
        except Exception as exc:
            if "does not exist" in str(exc) or "not found" in str(exc).lower():
                return None
            raise Unavailable(str(exc)) from exc

    def close(self) -> None:
        if self.head is not None:
            self.head.stop()


_ERROR_LINE = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Failed)\b.*)$")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def first_line(text: str, limit: int = 500) -> str:
    line = next((ln.strip() for ln in _ANSI.sub("", text).splitlines() if ln.strip()), "")
    return line[:limit]


def last_error_line(log: str) -> str | None:
    """The last ``SomeError: message`` line of a log (ANSI codes dropped), if any."""
    for line in reversed(_ANSI.sub("", log).splitlines()):
        match = _ERROR_LINE.match(line.strip())
        if match:
            return match.group(1)[:500]
    return None
