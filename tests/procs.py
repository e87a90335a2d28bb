"""Real processes for tests that kill things: `aelab serve` and a private PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from service.orchestration.ray_head import free_port
from tests.utils import API, wait_for

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _as_postgres(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[bytes]:
    """Run a PostgreSQL tool as the ``postgres`` user when we are root (initdb refuses
    to run as root)."""
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    return subprocess.run(cmd, check=True, capture_output=True, **kw)


class PrivatePostgres:
    """A throwaway PostgreSQL cluster on a free port with password (SCRAM) auth, that a
    test may stop and start without harming anything else."""

    user = "aelab"

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="aelab-pg-"))
        self.data = self.folder / "data"
        self.port = free_port()
        self.password = "pw-" + secrets.token_hex(8)
        pwfile = self.folder / "pw"
        pwfile.write_text(self.password)
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres")
            shutil.chown(pwfile, "postgres")
        _as_postgres([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", self.user,
                      "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8"])
        pwfile.unlink()
        self.start()
        _as_postgres([str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                      "-U", self.user, "aelab"], env={**os.environ, "PGPASSWORD": self.password})

    @property
    def url(self) -> str:
        return (f"postgresql+psycopg://{self.user}:{self.password}@127.0.0.1:{self.port}"
                "/aelab")

    def database(self, name: str) -> str:
        """A new, empty database; its SQLAlchemy URL (password included)."""
        _as_postgres([str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                      "-U", self.user, name], env={**os.environ, "PGPASSWORD": self.password})
        return self.url.rsplit("/", 1)[0] + f"/{name}"

    def start(self) -> None:
        _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-w", "-l",
                      str(self.folder / "log"), "-o",
                      f"-p {self.port} -h 127.0.0.1 -k {self.folder}", "start"])

    def stop(self) -> None:
        _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-w", "-m", "fast",
                      "stop"])

    def close(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


class Served:
    """`aelab serve` as a user starts it, in a process group of its own."""

    def __init__(self, home: Path, *, env: dict[str, str] | None = None,
                 port: int | None = None) -> None:
        self.home = home
        self.port = port or free_port()
        self.env = {**os.environ, "AELAB_HOME": str(home), "AELAB_DASHBOARD_PORT": "0",
                    "AELAB_DISPATCH_INTERVAL_S": "0.5", "AELAB_RECONCILE_INTERVAL_S": "2",
                    "AELAB_ALLOW_DOWNLOAD": "false", **(env or {})}
        if "RAY_ADDRESS" not in (env or {}):
            self.env.pop("RAY_ADDRESS", None)  # embedded mode: the service's own head
        self.log = home / f"serve-{self.port}.log"
        home.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "service.cli", "serve", "--port", str(self.port)],
                env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: self.get("/healthz"), 60, "the API")

    def get(self, path: str) -> Any:
        try:
            r = httpx.get(self.base + path, timeout=10)
            return r.json() if r.status_code == 200 else None
        except httpx.HTTPError:
            return None

    def post(self, path: str, json: Any) -> httpx.Response:
        return httpx.post(self.base + API + path, json=json, timeout=30)

    def experiment(self, exp_id: int) -> dict[str, Any]:
        return self.get(f"{API}/experiments/{exp_id}")

    def ended(self, exp_id: int) -> dict[str, Any] | None:
        exp = self.experiment(exp_id)
        return exp if exp and exp["status"] in ("succeeded", "failed", "cancelled") else None

    def kill9(self) -> None:
        """No graceful anything: the process alone (the Ray head lives in its own group)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def terminate(self, sig: int = signal.SIGTERM) -> float:
        """Send ``sig`` (as docker/k8s or Ctrl-C do); returns the seconds until exit."""
        assert self.process is not None
        started = time.monotonic()
        self.process.send_signal(sig)
        self.process.wait(timeout=60)
        return time.monotonic() - started

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
