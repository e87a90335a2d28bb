"""The service's own local Ray head: started in a process group of its own, recorded,
re-adopted, and cleaned up only when confirmed dead.

Without ``RAY_ADDRESS`` the service runs an *embedded* head (:class:`EmbeddedHead`):
started in the background (the API answers at once), recorded in
``AELAB_HOME/ray/head.json``, probed with the cluster's token, re-adopted with its runs by
a restarted service, and — only when confirmed dead — cleaned up (every process of it and
its temp folder, found through Linux ``/proc``) and replaced. A cluster is known by its Ray
*session* (``/api/version``'s ``session_name``, unique to one start of a head); the
sessions of heads confirmed dead are remembered in ``dead_sessions.json``, so their runs
may be re-queued. With ``RAY_ADDRESS`` none of this runs: the cluster is never started,
stopped or cleaned by aelab.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from service.errors import Unavailable
from service.orchestration.ray_auth import probe, use_token_auth
from service.settings import without_secrets
from workers.priority import TRAINING_NICENESS, yield_session_cpu
from workers.text import first_line

log = logging.getLogger("aelab.ray")
HEAD_START_TIMEOUT_S = 120
RESTART_BACKOFF_S = 30.0  # after a failed start, before the next attempt
DEFAULT_DASHBOARD_PORT = 8265


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _port_open(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


def _processes_of(temp_dir: str, gcs: str) -> list[int]:
    """Processes that belong to one head: their command line names its temp folder
    (raylet, GCS, dashboard, workers) or their environment its GCS port (job drivers,
    which Ray starts in sessions of their own, with RAY_ADDRESS=<node ip>:<port>).
    Linux /proc."""
    driver = re.compile(rb"(?:^|\0)RAY_ADDRESS=[^\0]*:" + gcs.rsplit(":", 1)[1].encode()
                        + rb"\0")
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if temp_dir.encode() in cmdline or driver.search(environ):
            found.append(int(entry.name))
    return found


def _kill(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


@dataclass
class HeadRecord:
    """What ``head.json`` remembers of a local head."""

    dashboard: str
    gcs: str
    pid: int  # the `ray start --block` process, leader of its process group
    temp_dir: str
    started: float  # time.time()
    session: str | None = None


class LocalRayHead:
    """`ray start --head --block` in a process group of its own: it outlives this
    process (a restarted service re-adopts it) and stops when we stop it."""

    def __init__(self, *, state_dir: Path, dashboard_port: int = 0,
                 num_cpus: int | None = None, num_gpus: int | None = None,
                 temp_dir: str | None = None, record: HeadRecord | None = None,
                 niceness: int = TRAINING_NICENESS) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        use_token_auth(state_dir)
        self.state_dir = state_dir
        self.process: subprocess.Popen[bytes] | None = None
        if record is not None:  # adopting a head a previous service started
            self.record = record
            return
        gcs_port = free_port()
        dashboard_port = dashboard_port or free_port()
        # Ray's socket paths must stay short: a private folder under /tmp, not deep paths.
        temp_dir = temp_dir or tempfile.mkdtemp(prefix="aelab-ray-")
        ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
        cmd = [ray, "start", "--head", "--block", f"--port={gcs_port}",
               "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
               f"--temp-dir={temp_dir}", "--disable-usage-stats", "--include-dashboard=true"]
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
        # Its output goes to a file, not a pipe: the head outlives this process. Its
        # processes inherit its environment: the API's secrets stay out of it.
        with (state_dir / "head.log").open("ab") as out:
            self.process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True,
                                            env=without_secrets(os.environ))
        if niceness:
            yield_session_cpu(self.process.pid, niceness)  # the API keeps its CPU
        self.record = HeadRecord(f"http://127.0.0.1:{dashboard_port}",
                                 f"127.0.0.1:{gcs_port}", self.process.pid, temp_dir,
                                 time.time())
        self.save()

    # --- the record ---------------------------------------------------------------------

    @property
    def record_path(self) -> Path:
        return self.state_dir / "head.json"

    def save(self) -> None:
        tmp = self.record_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self.record)))
        os.replace(tmp, self.record_path)

    @staticmethod
    def load(state_dir: Path) -> HeadRecord | None:
        try:
            return HeadRecord(**json.loads((state_dir / "head.json").read_text()))
        except (OSError, ValueError, TypeError):
            return None

    @property
    def dashboard_url(self) -> str:
        return self.record.dashboard

    @property
    def gcs_address(self) -> str:
        return self.record.gcs

    # --- life and death -----------------------------------------------------------------

    def exited(self) -> bool:
        """Whether the head's `ray start` process is gone (for an adopted head: no live
        process with its pid runs with its temp folder, so a reused pid is not it)."""
        if self.process is not None:
            return self.process.poll() is not None
        try:
            cmdline = Path(f"/proc/{self.record.pid}/cmdline").read_bytes()
        except OSError:
            return not _pid_alive(self.record.pid)
        return self.record.temp_dir.encode() not in cmdline

    def owns(self, session: str) -> bool:
        """Whether ``session`` is this head's: Ray names a session after the pid of the
        process that started it, so another cluster on our port never passes for ours."""
        return session.endswith(f"_{self.record.pid}")

    def failure(self) -> str:
        """Why the head stopped, from its log: the last line that says so."""
        lines = [ln.strip() for ln in self.log_tail(20_000).splitlines() if ln.strip()]
        for line in reversed(lines):
            if re.search(r"error|occupied|failed|exception", line, re.IGNORECASE):
                return line[:300]
        return lines[-1][:300] if lines else "no output"

    def log_tail(self, n: int = 2000) -> str:
        try:
            return (self.state_dir / "head.log").read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop every process of this head and remove its temp folder and record."""
        record = self.record
        if not self.exited():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(record.pid, signal.SIGTERM)  # `ray start --block` stops its own
            deadline = time.monotonic() + timeout_s
            while not self.exited() and time.monotonic() < deadline:
                time.sleep(0.1)
        self.cleanup()

    def cleanup(self) -> None:
        """Kill whatever is left of this head (SIGKILL) and remove its traces."""
        record = self.record
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(record.pid, signal.SIGKILL)
        if self.process is not None:
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log.warning("the Ray head process %s did not exit", record.pid)
        deadline = time.monotonic() + 2
        while (left := _processes_of(record.temp_dir, record.gcs)) and \
                time.monotonic() < deadline:  # SIGKILL is delivered, not awaited: wait
            _kill(left, signal.SIGKILL)
            time.sleep(0.2)
        if left:
            log.warning("processes %s of the dead Ray head would not die", left)
        for _ in range(3):  # a dying process may still write a file into it
            shutil.rmtree(record.temp_dir, ignore_errors=True)
            if not os.path.exists(record.temp_dir):
                break
            time.sleep(0.2)
        if record.session:
            mark_dead(self.state_dir, record.session)
        if (current := self.load(self.state_dir)) is not None and current.pid == record.pid:
            self.record_path.unlink(missing_ok=True)


def dead_sessions(state_dir: Path) -> set[str]:
    try:
        return set(json.loads((state_dir / "dead_sessions.json").read_text()))
    except (OSError, ValueError):
        return set()


def mark_dead(state_dir: Path, session: str) -> None:
    """Remember a cluster confirmed dead and cleaned up: its runs may be re-queued."""
    sessions = sorted(dead_sessions(state_dir) | {session})[-1000:]
    tmp = state_dir / "dead_sessions.tmp"
    tmp.write_text(json.dumps(sessions))
    os.replace(tmp, state_dir / "dead_sessions.json")


class EmbeddedHead:
    """The service's own local head: adopted if a previous service left one alive,
    started in the background otherwise, replaced when confirmed dead."""

    def __init__(self, state_dir: Path, *, dashboard_port: int = 8265,
                 dead_after_s: float = 30.0, niceness: int = TRAINING_NICENESS,
                 announce: Callable[[str], None] | None = None) -> None:
        self.state_dir = state_dir
        self.announce = announce  # where a person sees the head's news (`aelab serve`)
        self.dashboard_port = dashboard_port
        self.niceness = niceness  # the head's session's, so the API keeps the CPU it needs
        self.dead_after_s = dead_after_s
        self.head: LocalRayHead | None = None
        self.session: str | None = None
        self._silent_since: float | None = None
        self._failed: tuple[float, str] | None = None  # when and why a start failed
        self._lock = threading.Lock()
        state_dir.mkdir(parents=True, exist_ok=True)
        use_token_auth(state_dir)

    def _tell(self, message: str) -> None:
        """Log what happened to the head and tell the person running the service."""
        log.info(message)
        if self.announce is not None:
            self.announce(f"aelab: {message}")

    def ensure(self) -> str:
        """The head's dashboard URL once it answers; raises :class:`Unavailable` with
        what is happening meanwhile (starting, dead and being replaced)."""
        with self._lock:
            if self.head is None:
                if self._failed and time.monotonic() - self._failed[0] < RESTART_BACKOFF_S:
                    raise Unavailable(f"the local Ray head failed to start: {self._failed[1]}")
                self.head = self._adopt_or_start()
            head = self.head
            try:
                session = probe(head.dashboard_url, timeout_s=2.0)
                if not head.owns(session):
                    raise Unavailable(
                        f"another Ray cluster ({session}) answers at {head.dashboard_url}, "
                        "not the head aelab started: set AELAB_DASHBOARD_PORT to a free "
                        "port (0 picks one)")
            except Unavailable as exc:
                self._unanswered(head, exc)
                raise
            if session != head.record.session:
                head.record.session = session
                head.save()
                self._tell(f"local Ray head up (session {session}), dashboard at "
                           f"{head.dashboard_url}")
            self.session = session
            self._silent_since = None
            return head.dashboard_url

    def _adopt_or_start(self) -> LocalRayHead:
        record = LocalRayHead.load(self.state_dir)
        if record is not None:
            head = LocalRayHead(state_dir=self.state_dir, record=record)
            if not head.exited():
                self._tell(f"re-adopting the local Ray head at {record.dashboard} (pid "
                           f"{record.pid}, recorded in {self.state_dir / 'head.json'})")
                return head
            log.warning("the recorded local Ray head (pid %s) is gone: cleaning it up",
                        record.pid)
            head.cleanup()
        port = self.dashboard_port
        if port and not _port_free(port):
            if port != DEFAULT_DASHBOARD_PORT:
                self._failed = (time.monotonic(), f"its dashboard port {port} "
                                "(AELAB_DASHBOARD_PORT) is taken; set a free one, or 0")
                raise Unavailable(f"the local Ray head cannot start: {self._failed[1]}")
            port = 0
            log.warning("the Ray dashboard's default port %s is taken (another Ray?): the "
                        "local head uses a free port instead", DEFAULT_DASHBOARD_PORT)
        return LocalRayHead(state_dir=self.state_dir, dashboard_port=port,
                            niceness=self.niceness)

    def _unanswered(self, head: LocalRayHead, exc: Exception) -> None:
        now = time.monotonic()
        if self._silent_since is None:
            self._silent_since = now
        starting = head.record.session is None and \
            time.time() - head.record.started < HEAD_START_TIMEOUT_S
        # Dead: its process is gone, or it stopped answering and its GCS port is closed. A
        # head that is merely slow (a loaded machine) is never killed: its runs live on it.
        dead = head.exited() or (not starting and now - self._silent_since > self.dead_after_s
                                 and not _port_open(head.gcs_address))
        if not dead:
            if starting:
                raise Unavailable("starting the local Ray head") from exc
            return
        if head.record.session is None:  # it never came up
            reason = head.failure()
            log.error("the local Ray head failed to start: %s (full log: %s)", reason,
                      self.state_dir / "head.log")
            head.cleanup()
            self.head = None
            self._silent_since = None
            self._failed = (now, reason)
            raise Unavailable(f"the local Ray head failed to start: {reason}") from exc
        log.error("the local Ray head (pid %s) is dead (%s); cleaning it up and starting "
                  "a new one; its last words: %s (log: %s)", head.record.pid,
                  first_line(str(exc), 200), head.failure(), self.state_dir / "head.log")
        head.cleanup()
        self.head = None
        self.session = None
        self._silent_since = None
        raise Unavailable("the local Ray head died; starting a new one") from exc

    def dead(self, session: str) -> bool:
        return session in dead_sessions(self.state_dir)

    def close(self, *, in_flight: int | None) -> None:
        """Stop the head with nothing in flight; otherwise (or not knowing: the database
        is away) leave it for the next start."""
        head = self.head
        if head is None or head.exited():
            return
        if in_flight is None or in_flight:
            what = (f"{in_flight} run(s) in flight" if in_flight is not None
                    else "runs possibly in flight (the database is unreachable)")
            self._tell(f"left the local Ray head running with {what} (dashboard "
                       f"{head.dashboard_url}); the next `aelab serve` re-adopts them. To "
                       f"stop it now: kill -TERM -{head.record.pid}")
            return
        head.stop(timeout_s=3.0)
