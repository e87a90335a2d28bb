"""A chaos soak on the multi-host cluster of ``bench/cluster.py``: small runs (several
experiments, sweeps with seeds, one shared reference classifier, cancels and DELETEs)
under faults, then checks from the database and the artifact store.

    python bench/chaos.py --short [--seed 1]        # 12 runs, one fault of each kind
    python bench/chaos.py --runs 100 --minutes 32   # the long soak (each kind >= 3 times)

Faults: ``kill -9`` of the API (restarted), of the Ray head (restarted; its workers
rejoin), of a worker node (and its return), a PostgreSQL stop (10–60 s; short: 10–15 s),
a live run's driver killed, a warm runner killed. The long soak draws its schedule at
random (a seed makes it repeatable); the short one (``Soak.run_short``) injects one of
each in an order that lets the classifier-claim deadlock show. At the end it checks:
every accepted run ended; each succeeded run has every epoch exactly once and its
artifacts, on disk with their checksums' sizes, all written by its final attempt (as its
``job.log`` is); attempts of a run never overlapped (fencing); no run of the cancelled
experiment trained on or wrote after its cancel; DELETEd experiments left no rows or
files; no Ray job still in flight once its driver had time to exit (``JOB_END_WAIT_S``
after every run ended); every attempt of a run asking for a GPU trained with it (its
driver's line), never on CPUs. It prints the faults and the counts, and exits 1 on any
violation. ``--keep`` leaves the cluster up afterwards
(its database, logs and dashboard) for a look; ``python bench/cluster.py down`` then
removes it.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import re
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.cluster import LinkCluster, log

KINDS = ("api", "head", "worker", "postgres", "driver", "runner")
SMALL_CLASSIFIER = {"arch": "small", "frozen_epochs": 1, "unfrozen_epochs": 0,
                    "pretrained": False}
API = "/api/v1"
REQUIRED = {"model.pt", "samples.png", "job.log", "timings.json"}
# How long the check waits for jobs still in flight once every run ended: a driver exits
# after recording its run's end (seen: 15–30 s on a loaded 2-core machine).
JOB_END_WAIT_S = 120.0
TARGET_WAIT_S = 90.0  # a driver or runner fault waits this long for one to kill
SHORT_EXPERIMENTS = 3  # the short soak: 12 runs (one experiment cancelled)
SHORT_FINISH_S = 240.0  # its runs end within this after the last fault, or are stuck
# (seen: 36–63 s on the loaded 2-core machine; a deadlock never ends)


def experiment_spec(i: int, seeds: int, short: bool = False) -> dict[str, Any]:
    """Experiment ``i``: two models × ``seeds`` seeds on ``synthetic``, each run on half a
    GPU, all sharing one reference classifier. ``short``: 2 epochs of 256 images and no
    codec comparison (the short soak's runs take half as long)."""
    spec: dict[str, Any] = {
        "name": f"chaos {i}", "models": ["baseline", "pixel_shuffle"],
        "datasets": ["synthetic"], "seeds": list(range(1, seeds + 1)), "epochs": 3,
        "batch_size": 32, "pretrained": False, "latent_dim": 16,
        "data": {"train_limit": 512, "test_limit": 64}, "lr_search": {"method": "fixed"},
        "classifier": SMALL_CLASSIFIER,
        "resources": {"gpus_per_run": 0.5, "cpus_per_run": 1}}
    if short:
        spec.update(epochs=2, data={"train_limit": 256, "test_limit": 64},
                    compression={"codecs": []})
    return spec


def schedule(rng: random.Random, duration_s: float, per_kind: int) -> list[tuple[float, str]]:
    """(second, kind): ``per_kind`` faults of each kind at random times, at least 20 s
    apart, each in its own slice of 30 s … ``duration_s`` (the last ends 20 s before it: with
    seed 1, ``--minutes 32`` places them from 135 s to 1,855 s, a 31-minute soak)."""
    kinds = [k for k in KINDS for _ in range(per_kind)]
    rng.shuffle(kinds)
    slot = max(0.0, duration_s - 30) / len(kinds)
    return [(30 + i * slot + rng.uniform(0, max(0.0, slot - 20)), kind)
            for i, kind in enumerate(kinds)]


class Soak:
    """Submits, injects faults, waits for the end. ``short``: the short soak's specs and
    trimmed faults (PostgreSQL away 10–15 s, a worker back after 10 s)."""

    def __init__(self, cluster: LinkCluster, rng: random.Random, short: bool = False
                 ) -> None:
        self.c = cluster
        self.rng = rng
        self.short = short
        self.pg_down_s = (10.0, 15.0) if short else (10.0, 60.0)
        self.worker_away_s = 10.0 if short else 20.0
        self.faults: list[str] = []
        self.accepted: dict[int, int] = {}  # experiment id → runs
        self.cancelled: set[int] = set()
        self.deleted: set[int] = set()
        self.bad: list[str] = []  # violations found before the end (a DELETE removes them)
        self.failed: list[str] = []  # runs that failed, with their errors (at the check)
        self.injected: Counter[str] = Counter()  # the long soak's faults made, by kind

    # --- the API, patiently (it is killed too) ----------------------------------------------

    def call(self, method: str, path: str, **kw: Any) -> httpx.Response | None:
        for _ in range(60):
            try:
                r = httpx.request(method, self.c.api_url + API + path, timeout=30, **kw)
                if r.status_code < 500:
                    return r
            except httpx.HTTPError:
                pass
            time.sleep(2)
        return None

    def submit(self, i: int, seeds: int) -> int | None:
        """POST experiment ``i`` (an idempotency key: a retry after a timeout never makes
        a second one); its id once accepted."""
        r = self.call("POST", "/experiments", json=experiment_spec(i, seeds, self.short),
                      headers={"Idempotency-Key": f"chaos-{os.getpid()}-{i}"})
        if r is not None and r.status_code in (200, 201):
            self.accepted[r.json()["id"]] = len(r.json()["runs"])
            return int(r.json()["id"])
        return None

    def cancel(self, exp_id: int) -> None:
        if (r := self.call("POST", f"/experiments/{exp_id}/cancel")) is not None \
                and r.status_code < 300:
            self.cancelled.add(exp_id)

    def db(self, query: str, **params: Any) -> list[Any]:
        """Rows of ``query`` on the cluster's database; [] while it is away."""
        from sqlalchemy import create_engine, text
        from sqlalchemy.exc import DBAPIError

        engine = create_engine(self.c.database_url)
        try:
            with engine.connect() as db:
                return list(db.execute(text(query), params))
        except DBAPIError:
            return []
        finally:
            engine.dispose()

    # --- faults ------------------------------------------------------------------------------

    def _pids(self, needle: bytes) -> list[int]:
        """This cluster's processes whose command line holds ``needle``: its own only (its
        folder in their environment), never those of another Ray on the machine."""
        ours = set(self.c._pids_under(self.c.root))
        pids = []
        for pid in ours:
            try:
                if needle in Path(f"/proc/{pid}/cmdline").read_bytes():
                    pids.append(pid)
            except OSError:
                continue
        return sorted(pids)

    def live_drivers(self) -> list[int]:
        """The driver processes (the Python process, not the shell Ray starts it with) of
        runs running now at their attempt, outside a cancelled experiment: a kill that
        loses an attempt, not one that hits a driver already stopping."""
        current = {(run_id, attempt) for run_id, attempt, exp_id in self.db(
            "SELECT id, attempt, experiment_id FROM runs WHERE status = 'running'")
            if exp_id not in self.cancelled}
        pids = []
        for pid in self._pids(b"service.orchestration.run_job"):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
            except OSError:
                continue
            if "python" not in Path(argv[0]).name or "--run-id" not in argv:
                continue
            run_id = int(argv[argv.index("--run-id") + 1])
            attempt = int(argv[argv.index("--attempt") + 1])
            if (run_id, attempt) in current:
                pids.append(pid)
        return pids

    def inject(self, kind: str) -> str:
        c = self.c
        if kind == "api":
            c.kill_api()
            time.sleep(2)
            c.start_api()
            return "kill -9 API; restarted"
        if kind == "head":
            c.kill_head()
            for i in range(len(c.workers)):  # their raylets lose the GCS: the node's
                c.kill_worker(i)             # service manager starts `ray start` again
            time.sleep(2)
            c.start_head()
            for i in range(len(c.workers)):
                c.start_worker(i)
            c.wait_for_workers()
            return "kill -9 Ray head; head and workers restarted"
        if kind == "worker":
            i = self.rng.randrange(len(c.workers))
            c.kill_worker(i)
            time.sleep(self.worker_away_s)
            c.start_worker(i)
            return f"kill -9 worker {c.workers[i].name}; back after {self.worker_away_s:.0f} s"
        if kind == "postgres":
            down = self.rng.uniform(*self.pg_down_s)
            c.stop_postgres()
            time.sleep(down)
            c.start_postgres()
            return f"PostgreSQL stopped for {down:.0f} s"
        # A driver or runner is killed while one works: the fault waits for one (runs come
        # and go between experiments), and is reported as not made only if none shows.
        find = self.live_drivers if kind == "driver" else lambda: self._pids(b"ray::Runner")
        pids = self.when(find, TARGET_WAIT_S)
        if not pids:
            return f"{kind}: none running to kill in {TARGET_WAIT_S:.0f} s"
        pid = self.rng.choice(pids)
        os.kill(pid, signal.SIGKILL)
        return f"kill -9 {kind} (pid {pid})"

    def classifier_trainer_runner(self) -> tuple[str, int, str] | None:
        """(name, pid, node IP) of the runner training the reference classifier now: its
        claim's owner run (the database), that run's runner (its log), the runner's
        process and node (the dashboard's actors)."""
        owners = self.db("SELECT owner FROM reference_classifiers WHERE status = 'running'")
        match = re.fullmatch(r"run-(\d+)-a\d+", owners[0][0]) if owners else None
        if match is None:
            return None
        r = self.call("GET", f"/runs/{match.group(1)}/logs")
        if r is None or r.status_code != 200:
            return None
        names = re.findall(r"started on runner (aelab-runner-\w+)", r.json().get("text", ""))
        if not names:
            return None
        try:
            actors = httpx.get(f"{self.c.dashboard_url}/api/v0/actors", timeout=30,
                               params={"limit": 10000, "detail": "true"}, headers={
                                   "Authorization": f"Bearer {self.c.token}"}
                               ).json()["data"]["result"]["result"]
        except (httpx.HTTPError, ValueError, KeyError):
            return None
        actor = next((a for a in actors if a.get("name") == names[-1]
                      and a.get("state") == "ALIVE" and a.get("pid")), None)
        if actor is None:
            return None
        ip = {n["node_id"]: n["ip"] for n in self.c.alive_nodes()}.get(actor.get("node_id"))
        return (names[-1], int(actor["pid"]), ip) if ip else None

    def when(self, predicate: Any, timeout_s: float) -> Any:
        """``predicate()`` once truthy, polled every half second; None after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if value := predicate():
                return value
            time.sleep(0.5)
        return None

    # --- the soak ----------------------------------------------------------------------------

    def run_short(self, experiments: int, seeds: int) -> None:
        """One fault of each kind, in an order that lets the claim deadlock of issue 25
        show. The head is killed first (every run is re-queued); the second experiment is
        cancelled once its runs are in flight; a driver and a runner are killed — all
        before any run reaches the reference classifier. Then, while a run trains the
        classifier and drivers wait for runners (AELAB_MAX_IN_FLIGHT above the runners
        the cluster holds), the worker node of its runner is killed and comes back. Where
        waiting drivers take the node's slots before the trainer has noticed its loss
        (as on a loaded machine) and the runs waiting for the classifier kept their
        runners (the deadlock), the trainer would never get one (nothing later frees
        one: a PostgreSQL stop shorter than the claim's expiry, an API restart) and the
        soak's runs would never end; where the trainer notices first (an idle machine) it
        takes a slot back whatever the waiters do. Then PostgreSQL and the API."""
        started = time.monotonic()

        def fault(kind: str, what: str | None = None) -> None:
            try:
                what = what or self.inject(kind)
            except Exception as exc:  # a fault that could not be made is reported
                what = f"{kind}: FAILED to inject: {type(exc).__name__}: {exc}"
            line = f"{time.monotonic() - started:6.0f} s  {what}"
            self.faults.append(line)
            log(line)

        ids = [self.submit(i, seeds) for i in range(experiments)]
        time.sleep(max(0.0, started + 10 - time.monotonic()))
        fault("head")
        victim = ids[1] if len(ids) > 1 else None
        if victim is not None and self.when(lambda: self.db(
                "SELECT 1 FROM runs WHERE experiment_id = :e AND status = 'running'",
                e=victim), 120):
            time.sleep(3)
            self.cancel(victim)
        self.when(self.live_drivers, 120)
        fault("driver")
        self.when(lambda: self._pids(b"ray::Runner"), 120)
        fault("runner")
        trainer = self.when(self.classifier_trainer_runner, 300)
        node = next((i for i, w in enumerate(self.c.workers)
                     if trainer is not None and w.ip == trainer[2]), None)
        if trainer is not None and node is not None:
            worker = self.c.workers[node]
            self.c.kill_worker(node)
            time.sleep(self.worker_away_s)
            self.c.start_worker(node)
            fault("worker", f"kill -9 worker {worker.name}, whose runner {trainer[0]} "
                            f"trains the reference classifier; back after "
                            f"{self.worker_away_s:.0f} s")
        else:
            fault("worker", "worker: the classifier's trainer was not seen; "
                            + self.inject("worker"))
        for kind in ("postgres", "api"):
            time.sleep(2)
            fault(kind)

    def run(self, experiments: int, seeds: int, duration_s: float, per_kind: int) -> None:
        plan = schedule(self.rng, duration_s, per_kind)
        started = time.monotonic()
        # Experiments arrive over most of the window, so its last faults find runs too.
        spacing = duration_s * 0.85 / experiments
        submitter = threading.Thread(target=self._submit_all, args=(experiments, seeds,
                                                                    spacing), daemon=True)
        submitter.start()
        for at, kind in plan:
            time.sleep(max(0.0, started + at - time.monotonic()))
            try:
                what = self.inject(kind)
            except Exception as exc:  # a fault that could not be made is reported, not hidden
                what = f"{kind}: FAILED to inject: {type(exc).__name__}: {exc}"
            line = f"{time.monotonic() - started:6.0f} s  {what}"
            self.faults.append(line)
            if not what.startswith(f"{kind}:"):  # made, not "none running" or "FAILED"
                self.injected[kind] += 1
            log(line)
        submitter.join()

    def _submit_all(self, experiments: int, seeds: int, spacing: float) -> None:
        for i in range(experiments):
            self.submit(i, seeds)
            if i in (1, experiments // 2) and self.accepted:  # cancelled while training
                exp_id = list(self.accepted)[-1]
                if self.when(lambda e=exp_id: self.training(e), 120):
                    self.cancel(exp_id)
            time.sleep(spacing)

    def training(self, exp_id: int) -> bool:
        """Whether a run of experiment ``exp_id`` is past its start (training, searching
        or evaluating)."""
        r = self.call("GET", f"/experiments/{exp_id}")
        return r is not None and r.status_code == 200 and any(
            run["status"] == "running" and run.get("phase") not in (None, "submitted",
                                                                    "preflight")
            for run in r.json()["runs"])

    def finish(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for every accepted experiment to end, then DELETE the
        cancelled one; whether they all ended."""
        deadline = time.monotonic() + timeout_s
        ended = False
        while not ended and time.monotonic() < deadline:
            r = self.call("GET", "/experiments?limit=200")
            if r is not None and r.status_code == 200:
                ended = all(e["status"] in ("succeeded", "failed", "cancelled")
                            for e in r.json()["items"] if e["id"] in self.accepted)
            if not ended:
                time.sleep(5)
        if not ended and r is not None and r.status_code == 200:
            self.bad += [f"experiment {e['id']} is still {e['status']} "
                         f"{timeout_s:.0f} s after the last fault (its runs: "
                         f"{', '.join(f'{k} {v}' for k, v in e.get('runs', {}).items())})"
                         for e in r.json()["items"] if e["id"] in self.accepted
                         and e["status"] not in ("succeeded", "failed", "cancelled")]
        for exp_id in list(self.cancelled)[:1]:  # a cancelled experiment is DELETEd
            self.bad += cancelled_runs_stopped(self.c.database_url, exp_id)
            r = self.call("DELETE", f"/experiments/{exp_id}")
            if r is not None and r.status_code == 204:
                self.deleted.add(exp_id)
        return ended


def cancelled_runs_stopped(database_url: str, exp_id: int) -> list[str]:
    """Violations among the runs of the cancelled experiment ``exp_id`` (read before it is
    DELETEd): a run that ended otherwise than cancelled after the cancel (it trained on),
    or a cancelled run that recorded an artifact (other than a job log) after its end."""
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    bad = []
    with engine.connect() as db:
        cancelled_at = db.execute(text("SELECT finished_at FROM experiments WHERE id = :e"),
                                  {"e": exp_id}).scalar()
        for run in db.execute(text("SELECT id, status, finished_at FROM runs WHERE "
                                   "experiment_id = :e"), {"e": exp_id}).mappings():
            if run["status"] != "cancelled" and cancelled_at is not None and (
                    run["finished_at"] is None or run["finished_at"] > cancelled_at):
                bad.append(f"run {run['id']} of cancelled experiment {exp_id} ended "
                           f"{run['status']} after the cancel")
            if run["status"] == "cancelled" and run["finished_at"] is not None:
                late = [name for (name,) in db.execute(text(
                    "SELECT name FROM artifacts WHERE run_id = :r AND created_at > :t "
                    "AND name NOT LIKE 'job%'"), {"r": run["id"], "t": run["finished_at"]})]
                if late:
                    bad.append(f"run {run['id']}: wrote {late} after its cancel")
    engine.dispose()
    return bad


# The driver's line naming the GPUs its attempt trains with (service.orchestration.run_job:
# ``aelab run 38 (baseline-synthetic), attempt 0: 0.5 GPU, 1.0 CPU; …``) and the notes
# ``gpus_for_run`` and ``RunnerSteps.prepare`` print when a GPU run waits for a GPU node,
# or (the CPU fallback) trains on CPUs.
DRIVER_LINE = re.compile(r"aelab run (\d+) \(.*?\), attempt (\d+): ([\d.]+) GPU")
WAITS_FOR_GPU = ("with no GPU node joined now; this run waits for",
                 "no node joined now has a GPU; this run waits")
TRAINS_ON_CPUS = "this run trains on CPUs"


def check_logs(run: Any, arts: Any, counts: Counter[str], bad: list[str]) -> None:
    """From the driver logs kept for ``run`` (``job.log``: its last attempt's;
    ``job-a<k>.log``: lost attempt k's): every attempt trained with the GPUs it asked for
    (never the CPU fallback), and a succeeded run's ``job.log`` and artifacts are its final
    attempt's alone (each attempt writes to a folder of its own: a replaced driver's file
    recorded for the run would be another attempt's)."""
    asked = float(run["spec"].get("resources", {}).get("gpus_per_run", 0))
    for a in arts:
        if a["name"] != "job.log" and not a["name"].startswith("job-a"):
            continue
        path = Path(a["uri"].removeprefix("file://"))
        if not path.is_file():
            continue
        log_text = path.read_text(errors="replace")
        counts["driver logs read"] += 1
        lines = DRIVER_LINE.findall(log_text)
        if TRAINS_ON_CPUS in log_text or any(float(g) != asked for *_, g in lines):
            bad.append(f"run {run['id']} asked for {asked:g} GPU and trained with "
                       f"{sorted({float(g) for *_, g in lines})} ({a['name']})")
        if any(note in log_text for note in WAITS_FOR_GPU):
            counts["attempts that waited for a GPU node"] += 1
        if a["name"] == "job.log" and run["status"] == "succeeded" and \
                {int(at) for _, at, _ in lines} != {run["attempt"]}:
            bad.append(f"run {run['id']}: job.log is of attempt(s) "
                       f"{sorted({int(at) for _, at, _ in lines})}, not its final attempt "
                       f"{run['attempt']}")
    if run["status"] == "succeeded":
        folder = f"/run-{run['id']}/a{run['attempt']}/"
        foreign = sorted(a["name"] for a in arts
                         if not a["name"].startswith("job-a") and folder not in a["uri"])
        if foreign:
            bad.append(f"run {run['id']}: {foreign} recorded from another attempt than its "
                       f"final one ({run['attempt']})")


def jobs_in_flight(soak: Soak) -> list[dict[str, Any]]:
    """The cluster's Ray jobs not yet ended, as its dashboard lists them."""
    jobs = httpx.get(f"{soak.c.dashboard_url}/api/jobs/", timeout=30, headers={
        "Authorization": f"Bearer {soak.c.token}"}).json()
    return [j for j in jobs if j["status"] in ("PENDING", "RUNNING")]


def describe_job(job: dict[str, Any], runs: Any) -> str:
    """A Ray job in flight and what the database says of its run (what to look into)."""
    meta = job.get("metadata") or {}
    run_id = int(meta["run"]) if str(meta.get("run", "")).isdigit() else None
    row = next((r for r in runs if r["id"] == run_id), None)
    started = job.get("start_time")
    age = f", started {time.time() - started / 1000:.0f} s ago" if started else ""
    said = ("its run is gone" if row is None else
            f"its run is {row['status']} at attempt {row['attempt']}")
    return (f"{job['submission_id']} ({job['status']}{age}, attempt "
            f"{meta.get('attempt', '?')}; {said})")


def check(soak: Soak) -> tuple[Counter[str], list[str]]:
    """The invariants, from the database and the artifact store."""
    from sqlalchemy import create_engine, text

    engine = create_engine(soak.c.database_url)
    counts: Counter[str] = Counter()
    bad: list[str] = list(soak.bad)
    with engine.connect() as db:
        runs = db.execute(text("SELECT id, experiment_id, status, attempt, spec, finished_at, "
                               "model, dataset, error FROM runs")).mappings().all()
        for run in runs:
            counts[f"runs {run['status']}"] += 1
            if run["status"] == "failed":  # said in the report: a failure must be readable
                soak.failed.append(f"run {run['id']} ({run['model']}/{run['dataset']}, "
                                   f"attempt {run['attempt']}): {run['error']}")
            counts["attempts"] += run["attempt"] + 1
            if run["status"] in ("queued", "running"):
                bad.append(f"run {run['id']} is still {run['status']}")
            epochs = [e for (e,) in db.execute(text(
                "SELECT epoch FROM epoch_metrics WHERE run_id = :r"), {"r": run["id"]})]
            arts = db.execute(text("SELECT name, uri, size, created_at FROM artifacts "
                                   "WHERE run_id = :r"), {"r": run["id"]}).mappings().all()
            if run["status"] == "succeeded":
                want = list(range(1, run["spec"]["epochs"] + 1))
                if sorted(epochs) != want:
                    bad.append(f"run {run['id']}: epochs {sorted(epochs)}, not {want}")
                missing = REQUIRED - {a["name"] for a in arts}
                if missing:
                    bad.append(f"run {run['id']}: artifacts missing {sorted(missing)}")
                for a in arts:
                    path = Path(a["uri"].removeprefix("file://"))
                    if path.is_absolute() and (not path.is_file()
                                               or path.stat().st_size != a["size"]):
                        bad.append(f"run {run['id']}: {a['name']} not in the store as "
                                   "recorded")
            if run["status"] == "cancelled" and run["finished_at"] is not None:
                late = [a["name"] for a in arts if not a["name"].startswith("job")
                        and a["created_at"] > run["finished_at"]]
                if late:
                    bad.append(f"run {run['id']}: wrote {late} after its cancel")
            check_logs(run, arts, counts, bad)
            attempts = db.execute(text(
                "SELECT attempt, started_at, finished_at, lost_to FROM run_attempts "
                "WHERE run_id = :r ORDER BY attempt"), {"r": run["id"]}).mappings().all()
            for a in attempts:
                if a["lost_to"] is not None:
                    counts[f"attempts lost to {a['lost_to']}"] += 1
            for a, b in itertools.pairwise(attempts):
                if a["finished_at"] is None or b["started_at"] < a["finished_at"]:
                    bad.append(f"run {run['id']}: attempts {a['attempt']} and "
                               f"{b['attempt']} overlap")
        for exp_id in soak.deleted:
            left = db.execute(text("SELECT count(*) FROM runs WHERE experiment_id = :e"),
                              {"e": exp_id}).scalar()
            if left:
                bad.append(f"DELETEd experiment {exp_id} left {left} runs")
    engine.dispose()
    store = soak.c.home / "artifacts"
    known = {int(p.name.split("-")[1]) for p in store.glob("run-*")
             if p.name.split("-")[1].isdigit()}
    alive = {r["id"] for r in runs}
    orphans = sorted(known - alive)
    if orphans:
        bad.append(f"files of runs that no longer exist: {orphans[:10]}")
    # A driver records its run's end, then hands its runner back and exits: under load
    # its job ends tens of seconds after the run did. Jobs still in flight are waited for
    # (bounded); those that outlive the wait are orphans.
    waited_from = time.monotonic()
    try:
        live = jobs_in_flight(soak)
        stuck = any(run["status"] in ("queued", "running") for run in runs)
        if live and not stuck:
            counts["jobs still ending at the check"] = len(live)
        while live and not stuck and time.monotonic() - waited_from < JOB_END_WAIT_S:
            time.sleep(2)
            live = jobs_in_flight(soak)
        if live:
            bad.append(("Ray jobs in flight: " if stuck else f"Ray jobs still in flight "
                        f"{JOB_END_WAIT_S:.0f} s after every run ended: ")
                       + "; ".join(describe_job(j, runs) for j in live))
        elif counts["jobs still ending at the check"]:
            counts["s until they ended"] = round(time.monotonic() - waited_from)
    except (httpx.HTTPError, ValueError) as exc:
        bad.append(f"could not list Ray jobs: {exc}")
    counts["experiments deleted"] = len(soak.deleted)
    counts["experiments cancelled"] = len(soak.cancelled)
    return counts, bad


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--short", action="store_true",
                        help=f"{SHORT_EXPERIMENTS * 4} runs, one fault of each kind")
    parser.add_argument("--finish-s", type=float, default=None,
                        help="how long the runs may take to end after the last fault "
                             f"(default {SHORT_FINISH_S:.0f} s short, 900 s long)")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--per-kind", type=int, default=3,
                        help="faults of each kind in the long soak's random schedule")
    parser.add_argument("--no-netns", action="store_true")
    parser.add_argument("--keep", action="store_true",
                        help="leave the cluster up after the checks, to inspect its database "
                             "and logs (`python bench/cluster.py down` removes it)")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    seeds = 2
    started = time.monotonic()
    # Short: more drivers in flight (8: every run, so that the later ones start while the
    # first train) than runners the cluster holds (2 workers × 2 runs of half a GPU), as
    # the claim deadlock needs; a claim outlives the PostgreSQL stop.
    api_env = {"AELAB_MAX_IN_FLIGHT": "8" if args.short else "4",
               "AELAB_CLASSIFIER_HEARTBEAT_S": "2",
               "AELAB_CLASSIFIER_CLAIM_EXPIRY_S": "30" if args.short else "15",
               "AELAB_DB_RETRY_S": "300"}
    with LinkCluster(workers=2, netns=False if args.no_netns else None,
                     api_env=api_env) as cluster:
        cluster.keep = args.keep
        soak = Soak(cluster, rng, short=args.short)
        up_s = time.monotonic() - started
        if args.short:
            soak.run_short(SHORT_EXPERIMENTS, seeds)
        else:
            experiments = max(1, round(args.runs / (2 * seeds)))
            soak.run(experiments, seeds, args.minutes * 60, args.per_kind)
        faults_s = time.monotonic() - started
        ended = soak.finish(timeout_s=args.finish_s or (SHORT_FINISH_S if args.short
                                                         else 900))
        ended_s = time.monotonic() - started
        counts, bad = check(soak)
    print(f"\nchaos soak, seed {args.seed}: {sum(soak.accepted.values())} runs accepted in "
          f"{len(soak.accepted)} experiments, {time.monotonic() - started:.0f} s (cluster up "
          f"at {up_s:.0f} s, faults done at {faults_s:.0f} s, runs "
          f"{'ended at' if ended else 'NOT all ended by'} {ended_s:.0f} s)")
    print("faults:\n  " + "\n  ".join(soak.faults))
    print("counts: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if soak.failed:
        print("failed:\n  " + "\n  ".join(soak.failed))
    print("violations: " + ("none" if not bad else "\n  " + "\n  ".join(bad)))
    short = [] if args.short else [f"{kind} {soak.injected[kind]} of {args.per_kind}"
                                   for kind in KINDS if soak.injected[kind] < args.per_kind]
    if not args.short and not (soak.cancelled and soak.deleted):
        short.append(f"experiments cancelled while training {len(soak.cancelled)}, "
                     f"DELETEd {len(soak.deleted)} (at least 1 each)")
    if not args.short:
        print("faults made by kind: " + ", ".join(f"{k} {soak.injected[k]}" for k in KINDS)
              + (f"; too few: {'; '.join(short)}" if short else ""))
    return 1 if bad or short else 0


if __name__ == "__main__":
    sys.exit(main())
