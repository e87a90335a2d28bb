"""A multi-host aelab cluster on one machine: a Ray head and worker nodes, each in a network
namespace of its own on a private link, joined as README's "Adding another machine" says.

    python bench/cluster.py smoke [--workers 2] [--keep]   # up, two GPU runs, checks, down
    python bench/cluster.py up                              # up; prints addresses; Ctrl-C: down
    python bench/cluster.py down                            # removes what a killed `up` left

Topology (``ip netns`` + veth, addresses of the link 10.77.0.0/24 only; a bridge in the
root namespace at 10.77.0.254 lets this script reach every node):

- ``aelab-h`` (10.77.0.1): the Ray head (``ray start --head``, no GPU), a private
  PostgreSQL (``initdb``/``pg_ctl``, listening on 10.77.0.1 only, password auth) and the
  API (``aelab serve`` with ``RAY_ADDRESS=http://10.77.0.1:8265``, ``AELAB_GPU_CLUSTER``).
- ``aelab-w1``, ``aelab-w2``… (10.77.0.11, .12…): ``ray start --address=10.77.0.1:6379
  --num-gpus=1 --block`` with the cluster's ``RAY_AUTH_MODE=token``/``RAY_AUTH_TOKEN``
  — fake GPUs: Ray schedules on them, torch finds no CUDA and trains on the CPU.

Runs ask for a GPU, so their warm runners are placed on the workers; runners reach the
database across the link, and write artifacts and checkpoints to the shared storage
(``AELAB_HOME`` on one directory every node mounts: here one filesystem, as NFS would be).
Where namespaces cannot be made (no CAP_NET_ADMIN) the script says so and runs the same
nodes on this host's loopback, with a port set of their own each.

Needs root (or CAP_NET_ADMIN) for namespaces, and PostgreSQL's server binaries
(``PG_BIN``). Kills only what it started (process groups it made) and removes its
namespaces, bridge and folder on the way out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
PG_BIN = Path(os.environ.get("AELAB_PG_BIN", "/usr/lib/postgresql/15/bin"))
SUBNET = "10.77.0"
BRIDGE = "aelabbr0"
HEAD_NS = "aelab-h"
API_PORT = 8000
GCS_PORT = 6379
DASHBOARD_PORT = 8265
PG_PORT = 5432
STATE = Path(tempfile.gettempdir()) / "aelab-cluster.json"  # what `down` removes

# Ray's per-node ports; in the loopback fallback every node gets its own set.
RAY_NODE_PORT_FLAGS = ("node-manager-port", "object-manager-port", "metrics-export-port",
                       "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                       "runtime-env-agent-port", "min-worker-port", "max-worker-port")


def log(line: str) -> None:
    print(f"[cluster {time.strftime('%H:%M:%S')}] {line}", flush=True)


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), check=check, capture_output=True, text=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait(predicate: Any, timeout_s: float, what: str, interval_s: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")


@dataclass
class Node:
    """One Ray node: its namespace (None in the loopback fallback) and address."""

    name: str
    ns: str | None
    ip: str
    gpus: int
    process: subprocess.Popen[bytes] | None = None
    ports: dict[str, int] = field(default_factory=dict)


class LinkCluster:
    """The cluster; :meth:`up` builds it, :meth:`down` removes every trace. The fault
    methods (``kill_*``, ``start_*``, ``stop_postgres``) are the chaos soak's."""

    def __init__(self, *, workers: int = 2, gpus_per_worker: int = 1,
                 root: Path | None = None, netns: bool | None = None,
                 api_env: dict[str, str] | None = None) -> None:
        self.root = root or Path(tempfile.mkdtemp(prefix="aelabc-", dir="/tmp"))
        self.shared = self.root / "shared"  # the storage every node mounts (NFS-like)
        self.home = self.shared / "home"
        self.token = secrets.token_hex(32)
        self.pg_password = "pw-" + secrets.token_hex(8)
        self.netns = self._can_make_namespaces() if netns is None else netns
        self.api_env = api_env or {}
        if self.netns:
            self.head = Node("head", HEAD_NS, f"{SUBNET}.1", 0)
            self.workers = [Node(f"w{i + 1}", f"aelab-w{i + 1}", f"{SUBNET}.{11 + i}",
                                 gpus_per_worker) for i in range(workers)]
        else:
            self.head = Node("head", None, "127.0.0.1", 0)
            self.workers = [Node(f"w{i + 1}", None, "127.0.0.1", gpus_per_worker)
                            for i in range(workers)]
        self.gcs_port = GCS_PORT if self.netns else free_port()
        self.dashboard_port = DASHBOARD_PORT if self.netns else free_port()
        self.pg_port = PG_PORT if self.netns else free_port()
        self.api_port = API_PORT if self.netns else free_port()
        self.api: subprocess.Popen[bytes] | None = None
        self.pg_data = self.root / "pg"
        self.keep = False  # leave it up on the way out (`down` removes it later)

    # --- addresses ------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return f"http://{self.head.ip}:{self.api_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://{self.head.ip}:{self.dashboard_port}"

    @property
    def database_url(self) -> str:
        return (f"postgresql+psycopg://aelab:{self.pg_password}@{self.head.ip}:{self.pg_port}"
                "/aelab")

    # --- the link -------------------------------------------------------------------------

    @staticmethod
    def _can_make_namespaces() -> bool:
        probe = f"aelab-probe-{os.getpid()}"
        try:
            sh("ip", "netns", "add", probe)
            sh("ip", "netns", "del", probe)
            return True
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = exc.stderr.strip() if isinstance(exc, subprocess.CalledProcessError) \
                else str(exc)
            log(f"network namespaces cannot be made here ({detail}); falling back to "
                "same-host nodes on 127.0.0.1")
            return False

    def _make_link(self) -> None:
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
        sh("ip", "addr", "add", f"{SUBNET}.254/24", "dev", BRIDGE)
        sh("ip", "link", "set", BRIDGE, "up")
        for node in [self.head, *self.workers]:
            assert node.ns is not None
            outer = f"aelab-{node.name}"
            sh("ip", "netns", "add", node.ns)
            sh("ip", "link", "add", outer, "type", "veth", "peer", "name", "eth0", "netns",
               node.ns)
            sh("ip", "link", "set", outer, "master", BRIDGE)
            sh("ip", "link", "set", outer, "up")
            for cmd in (["ip", "addr", "add", f"{node.ip}/24", "dev", "eth0"],
                        ["ip", "link", "set", "eth0", "up"], ["ip", "link", "set", "lo", "up"]):
                sh("ip", "netns", "exec", node.ns, *cmd)
        log(f"link {SUBNET}.0/24: bridge {BRIDGE} ({SUBNET}.254), "
            + ", ".join(f"{n.ns} {n.ip}" for n in [self.head, *self.workers]))

    def _remove_link(self) -> None:
        for node in [self.head, *self.workers]:
            if node.ns:
                sh("ip", "netns", "del", node.ns, check=False)
                sh("ip", "link", "del", f"aelab-{node.name}", check=False)
        sh("ip", "link", "del", BRIDGE, check=False)

    def _in(self, node: Node, cmd: list[str]) -> list[str]:
        return ["ip", "netns", "exec", node.ns, *cmd] if node.ns else cmd

    def _spawn(self, node: Node, cmd: list[str], env: dict[str, str], log_name: str
               ) -> subprocess.Popen[bytes]:
        out = (self.root / "logs" / log_name).open("ab")
        return subprocess.Popen(self._in(node, cmd), env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=str(REPO))

    # --- PostgreSQL -----------------------------------------------------------------------

    def _as_postgres(self, cmd: list[str]) -> subprocess.CompletedProcess[str]:
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return sh(*self._in(self.head, cmd))

    def _init_postgres(self) -> None:
        pwfile = self.root / "pgpw"
        pwfile.write_text(self.pg_password)
        if os.geteuid() == 0:
            for path in (self.root, pwfile):
                shutil.chown(path, "postgres")
        self._as_postgres([str(PG_BIN / "initdb"), "-D", str(self.pg_data), "-U", "aelab",
                           "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8"])
        pwfile.unlink()
        with (self.pg_data / "pg_hba.conf").open("a") as hba:  # the link, nothing else
            hba.write(f"host all all {self.head.ip}/24 scram-sha-256\n")
        self.start_postgres()
        env = {**os.environ, "PGPASSWORD": self.pg_password}
        subprocess.run(self._in(self.head, [
            "runuser", "-u", "postgres", "--", str(PG_BIN / "createdb"), "-h", self.head.ip,
            "-p", str(self.pg_port), "-U", "aelab", "aelab"] if os.geteuid() == 0 else [
            str(PG_BIN / "createdb"), "-h", self.head.ip, "-p", str(self.pg_port), "-U",
            "aelab", "aelab"]), env=env, check=True, capture_output=True)
        log(f"PostgreSQL listening on {self.head.ip}:{self.pg_port} (password auth)")

    def start_postgres(self) -> None:
        self._as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.pg_data), "-w", "-l",
                           str(self.root / "postgres.log"), "-o",
                           f"-p {self.pg_port} -h {self.head.ip} -k {self.root}", "start"])

    def stop_postgres(self) -> None:
        self._as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.pg_data), "-w", "-m",
                           "immediate", "stop"])

    # --- Ray ------------------------------------------------------------------------------

    def _ray_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("AELAB_", "RAY_")) and k not in ("DATABASE_URL",)}
        return {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token,
                "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}"}

    def _node_flags(self, node: Node) -> list[str]:
        if self.netns:
            return []
        if not node.ports:
            node.ports = {flag: free_port() for flag in RAY_NODE_PORT_FLAGS[:-2]}
            low = 20000 + 1000 * ([self.head, *self.workers].index(node))
            node.ports["min-worker-port"], node.ports["max-worker-port"] = low, low + 999
        return [f"--{flag}={port}" for flag, port in node.ports.items()]

    def start_head(self) -> None:
        node = self.head
        ray = str(Path(sys.executable).parent / "ray")
        cmd = [ray, "start", "--head", "--block", f"--node-ip-address={node.ip}",
               f"--port={self.gcs_port}", "--dashboard-host=0.0.0.0",
               f"--dashboard-port={self.dashboard_port}", "--num-cpus=1", "--num-gpus=0",
               f"--temp-dir={self.root / 'ray-head'}", "--disable-usage-stats",
               *self._node_flags(node)]
        if not self.netns:
            cmd.append(f"--ray-client-server-port={free_port()}")
        node.process = self._spawn(node, cmd, self._ray_env(), "ray-head.log")
        wait(lambda: self._dashboard_session(), 180, "the Ray head's dashboard")
        log(f"Ray head up at {node.ip}:{self.gcs_port} (dashboard {self.dashboard_url})")

    def start_worker(self, i: int) -> None:
        """README's step on a GPU machine: ``ray start --address=<head>:6379
        --num-gpus=<n> --block`` with the cluster's token."""
        node = self.workers[i]
        ray = str(Path(sys.executable).parent / "ray")
        cmd = [ray, "start", f"--address={self.head.ip}:{self.gcs_port}",
               f"--num-gpus={node.gpus}", "--num-cpus=2", "--block",
               f"--node-ip-address={node.ip}", f"--temp-dir={self.root / ('ray-' + node.name)}",
               *self._node_flags(node)]
        node.process = self._spawn(node, cmd, self._ray_env(), f"ray-{node.name}.log")

    def wait_for_workers(self, timeout_s: float = 180) -> None:
        ips = {w.ip for w in self.workers if w.process and w.process.poll() is None}

        def joined() -> bool:
            dead = [w.name for w in self.workers if w.process and w.process.poll() is not None]
            if dead:
                raise RuntimeError(f"worker node(s) {dead} exited; see {self.root}/logs")
            nodes = self.alive_nodes()
            return sum(1 for n in nodes if n["gpus"] > 0) >= len(ips)

        wait(joined, timeout_s, "the worker nodes to join", 1.0)
        log("nodes: " + ", ".join(f"{n['ip']} ({n['gpus']:g} GPU, {n['cpus']:g} CPU)"
                                  for n in self.alive_nodes()))

    def _dashboard_session(self) -> str | None:
        try:
            r = httpx.get(f"{self.dashboard_url}/api/version", timeout=3,
                          headers={"Authorization": f"Bearer {self.token}"})
            return str(r.json()["session_name"]) if r.status_code == 200 else None
        except (httpx.HTTPError, ValueError, KeyError):
            return None

    def alive_nodes(self) -> list[dict[str, Any]]:
        """The cluster's live nodes as its dashboard lists them: ip, GPUs, CPUs."""
        try:
            r = httpx.get(f"{self.dashboard_url}/nodes?view=summary", timeout=5,
                          headers={"Authorization": f"Bearer {self.token}"})
            rows = r.json()["data"]["summary"]
        except (httpx.HTTPError, ValueError, KeyError):
            return []
        out = []
        for row in rows:
            raylet = row.get("raylet", {})
            if raylet.get("state") != "ALIVE":
                continue
            total = raylet.get("resourcesTotal", {})
            out.append({"ip": row.get("ip"), "gpus": total.get("GPU", 0.0),
                        "cpus": total.get("CPU", 0.0), "node_id": raylet.get("nodeId")})
        return out

    # --- the API --------------------------------------------------------------------------

    def api_environment(self) -> dict[str, str]:
        return {**self._ray_env(), "AELAB_HOME": str(self.home),
                "DATABASE_URL": self.database_url, "RAY_ADDRESS": self.dashboard_url,
                "AELAB_GPU_CLUSTER": "true", "AELAB_ALLOW_DOWNLOAD": "false",
                "AELAB_DISPATCH_INTERVAL_S": "0.5", "AELAB_RECONCILE_INTERVAL_S": "5",
                "AELAB_RUNNER_IDLE_S": "60", **self.api_env}

    def start_api(self) -> None:
        self.api = self._spawn(self.head, [
            sys.executable, "-m", "service.cli", "serve", "--host", self.head.ip,
            "--port", str(self.api_port)], self.api_environment(), "api.log")

        def ready() -> bool:
            try:
                return httpx.get(f"{self.api_url}/readyz", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait(ready, 180, "the API to be ready")
        log(f"API ready at {self.api_url}")

    # --- faults ---------------------------------------------------------------------------

    @staticmethod
    def _kill_group(process: subprocess.Popen[bytes] | None) -> None:
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def kill_api(self) -> None:
        """``kill -9`` of the API process alone."""
        if self.api is not None and self.api.poll() is None:
            self.api.send_signal(signal.SIGKILL)
            self.api.wait()

    def kill_head(self) -> None:
        """``kill -9`` of every process of the head node (raylet, GCS, dashboard, drivers)."""
        self._kill_group(self.head.process)
        for pid in self._pids_under(self.root / "ray-head"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def kill_worker(self, i: int) -> None:
        self._kill_group(self.workers[i].process)

    @staticmethod
    def _pids_under(temp_dir: Path) -> list[int]:
        """Processes whose command line or environment names ``temp_dir`` (Ray's, started
        by its nodes; the API, whose AELAB_HOME is there), never this one."""
        pids = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            try:
                if any(str(temp_dir).encode() in (proc / part).read_bytes()
                       for part in ("cmdline", "environ")):
                    pids.append(int(proc.name))
            except OSError:
                continue
        return pids

    # --- all of it ------------------------------------------------------------------------

    def up(self) -> LinkCluster:
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        STATE.write_text(json.dumps({"root": str(self.root), "netns": self.netns,
                                     "workers": len(self.workers), "pid": os.getpid()}))
        if self.netns:
            self._make_link()
        self._init_postgres()
        self.start_head()
        for i in range(len(self.workers)):
            self.start_worker(i)
        self.wait_for_workers()
        self.start_api()
        return self

    def down(self) -> None:
        self.kill_api()
        for i in range(len(self.workers)):
            self.kill_worker(i)
        self.kill_head()
        for pid in self._pids_under(self.root):  # drivers and runners Ray started
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop_postgres()
        if self.netns:
            self._remove_link()
        shutil.rmtree(self.root, ignore_errors=True)
        STATE.unlink(missing_ok=True)
        log("down: processes, namespaces, bridge and folder removed")

    def __enter__(self) -> LinkCluster:
        try:
            return self.up()
        except BaseException:
            self.down()
            raise

    def __exit__(self, *exc: object) -> None:
        if self.keep:
            log(f"kept up for inspection: {self.root} (logs/, postgres at "
                f"{self.database_url.split('@')[1]}, dashboard {self.dashboard_url}, "
                f"token {self.token}); `python bench/cluster.py down` removes it")
            return
        self.down()


def down_leftovers() -> None:
    """What an `up` that was killed left behind (its state file names it)."""
    if not STATE.is_file():
        log("nothing to remove")
        return
    state = json.loads(STATE.read_text())
    cluster = LinkCluster(workers=state["workers"], root=Path(state["root"]),
                          netns=state["netns"])
    cluster.down()


# --- the smoke test: runs placed on the workers, crossing the link ----------------------------

SMOKE_SPEC = {
    "name": "cluster smoke", "models": ["baseline", "pixel_shuffle"], "datasets": ["synthetic"],
    "epochs": 2, "batch_size": 32, "pretrained": False, "latent_dim": 16,
    "data": {"train_limit": 256, "test_limit": 64}, "lr_search": {"method": "fixed"},
    "classifier": {"enabled": False}, "resources": {"gpus_per_run": 1, "cpus_per_run": 1},
}


def runner_nodes(cluster: LinkCluster, run: dict[str, Any]) -> set[str]:
    """The IPs of the nodes whose runners trained ``run`` (from its job log's runner names
    and the dashboard's actor list)."""
    log_text = httpx.get(f"{cluster.api_url}/api/v1/runs/{run['id']}/logs",
                         timeout=30).json()["text"]
    names = {w.split()[0] for w in log_text.split("started on runner ")[1:]}
    r = httpx.get(f"{cluster.dashboard_url}/api/v0/actors", timeout=30,
                  params={"limit": 10000, "detail": "true"},
                  headers={"Authorization": f"Bearer {cluster.token}"})
    actors = r.json()["data"]["result"]["result"]
    ip_of = {n["node_id"]: n["ip"] for n in cluster.alive_nodes()}
    return {ip_of.get(a.get("node_id"), a.get("node_id") or "?") for a in actors
            if a.get("name") in names}


def smoke(cluster: LinkCluster) -> int:
    started = time.monotonic()
    r = httpx.post(f"{cluster.api_url}/api/v1/experiments", json=SMOKE_SPEC, timeout=30)
    r.raise_for_status()
    exp_id = r.json()["id"]

    def ended() -> dict[str, Any] | None:
        exp = httpx.get(f"{cluster.api_url}/api/v1/experiments/{exp_id}", timeout=30).json()
        return exp if exp["status"] in ("succeeded", "failed", "cancelled") else None

    exp = wait(ended, 900, "the smoke experiment", 2.0)
    worker_ips = {w.ip for w in cluster.workers}
    failures = []
    for summary in exp["runs"]:
        run = httpx.get(f"{cluster.api_url}/api/v1/runs/{summary['id']}", timeout=30).json()
        nodes = runner_nodes(cluster, run)
        files = [a["name"] for a in run["artifacts"]]
        on_disk = list((cluster.home / "artifacts").rglob(f"run-{run['id']}*/**/model.pt"))
        print(f"run {run['id']} {run['model']}: {run['status']}, {len(run['epochs'])} epochs, "
              f"runner on {sorted(nodes) or '?'}, artifacts {len(files)}, model.pt in the "
              f"shared store: {bool(on_disk)}")
        if run["status"] != "succeeded":
            failures.append(f"run {run['id']} {run['status']}: {run['error']}")
        if not nodes or not nodes <= worker_ips:
            failures.append(f"run {run['id']} trained on {nodes or 'an unknown node'}, not "
                            f"on a worker ({sorted(worker_ips)})")
        if not on_disk:
            failures.append(f"run {run['id']}: model.pt not in the shared store")
    print(f"smoke: {len(exp['runs'])} runs in {time.monotonic() - started:.0f} s; "
          + ("OK" if not failures else "FAILED:\n  " + "\n  ".join(failures)))
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("command", choices=["up", "down", "smoke"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-netns", action="store_true",
                        help="same-host nodes on 127.0.0.1 (what happens without namespaces)")
    parser.add_argument("--keep", action="store_true",
                        help="smoke: leave the cluster up afterwards (`down` removes it)")
    args = parser.parse_args(argv)
    if args.command == "down":
        down_leftovers()
        return 0
    with LinkCluster(workers=args.workers, netns=False if args.no_netns else None) as cluster:
        cluster.keep = args.keep
        print(json.dumps({"api": cluster.api_url, "dashboard": cluster.dashboard_url,
                          "database": cluster.database_url.split("@")[1],
                          "shared": str(cluster.shared), "ray_token": cluster.token,
                          "netns": cluster.netns}), flush=True)
        if args.command == "smoke":
            return smoke(cluster)
        log("up; Ctrl-C takes it down")
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
    return 0


if __name__ == "__main__":
    sys.exit(main())
