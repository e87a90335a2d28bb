"""Orchestration overhead on a local Ray cluster declaring logical GPUs.

    python bench/orchestration.py [--gpus 4] [--runs 12] [--epochs 2] [--max-in-flight 8]
    python bench/orchestration.py --gpus 1 --max-in-flight 1 --runs 4   # steady state, serial

Posts experiments (small runs: baseline, pixel_shuffle, progressive_resizing on synthetic
and MNIST, fixed LR, no classifier) to an in-process API with the Ray executor, after one
warm-up run per slot that is not measured (they start the warm runners). By default twice
as many runs as slots are in flight: the drivers of the next runs start while the slots
train, and take a runner as soon as one is handed back (``AELAB_MAX_IN_FLIGHT`` above the
cluster's slots does the same in a deployment). Per run, from the API and the run's
``timings.json``:

- POST → first training step (experiment created → training started in the pipeline);
  also for the warm-up runs ("cold": the cluster's first runs, no warm runner yet);
- Ray start-up: submitted → the pipeline running (job, driver, ray.init, a runner);
- data: preflight + loading; LR search; training (Σ epoch seconds); evaluation;
- fixed overhead = run wall time (submitted → finished) − training − evaluation (with more
  runs in flight than slots it includes the wait for a free slot: measure the overhead
  with ``--max-in-flight 1``).

Then, for the whole experiment, efficiency = (Σ (training + evaluation) / slots) / wall.
On a CPU-only machine the logical GPUs are slots sharing the real cores: training slows
with parallelism, and the efficiency counts that slowdown as useful work (it measures what
orchestration wastes, not what the cores can do).

``--cpu`` (Linux) also prints where the machine's CPU went, by kind of process, until the
first wave's last lease and over the whole experiment: warm runners, run drivers, Ray's
job supervisors, the rest of Ray, this process (the API) and everything else.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from service.app import create_app
from service.client.schemas import API_PREFIX as API
from service.client.states import Status
from service.orchestration.ray_executor import RayExecutor
from service.orchestration.ray_head import LocalRayHead
from service.settings import Settings

MODELS = ["baseline", "pixel_shuffle", "progressive_resizing"]


def ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


POLL_S = 1.0  # the end is read from the records, not from when a poll saw it


def wait(client: TestClient, exp_ids: list[int], poll_s: float = POLL_S
         ) -> list[dict[str, Any]]:
    """The experiments once all have ended (and recorded when), polling the unfinished
    ones every ``poll_s``: this process (the API, at the default nice level) shares the
    cores with what it measures, so it asks little (a quarter-second poll of every
    experiment took ~22 % of a core)."""
    done: dict[int, dict[str, Any]] = {}
    while True:
        for i in exp_ids:
            if i not in done:
                exp = client.get(f"{API}/experiments/{i}").json()
                if Status(exp["status"]).finished and exp["finished_at"]:
                    done[i] = exp
        if len(done) == len(exp_ids):
            return [done[i] for i in exp_ids]
        time.sleep(poll_s)


nan = float("nan")


def run_facts(client: TestClient, exp: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    detail = client.get(f"{API}/runs/{run['id']}").json()
    timings = client.get(f"{API}/runs/{run['id']}/artifacts/timings.json")
    t = timings.json() if timings.status_code == 200 else {}
    training = sum(e["seconds"] for e in detail["epochs"])
    evaluation = t.get("evaluate_s", 0.0) + t.get("classifier_s", 0.0)
    wall = ts(run["finished_at"]) - ts(run["started_at"])
    return {
        "run": f"{run['model']}/{run['dataset']}",
        "post_to_first_step": (t["training_started_unix"] - ts(exp["created_at"])
                               if t else float("nan")),
        "submit_to_first_step": (t["training_started_unix"] - ts(run["started_at"])
                                 if t else float("nan")),
        "startup": t["pipeline_started_unix"] - ts(run["started_at"]) if t else float("nan"),
        "data": t.get("prepare_s", float("nan")),
        "search": t.get("search_s", float("nan")),
        "training": training, "evaluation": evaluation, "wall": wall,
        "overhead": wall - training - evaluation,
        # The profile of the fixed overhead (seconds; nan when the driver left no marks).
        "job_start": t.get("driver_started_unix", nan) - ts(run["started_at"]),
        "driver_imports": t.get("driver_imported_unix", nan) - t.get("driver_started_unix", nan),
        "ray_init": t.get("ray_connected_unix", nan) - t.get("driver_imported_unix", nan),
        "runner_to_pipeline": t.get("pipeline_started_unix", nan)
        - t.get("ray_connected_unix", nan),
        "finish_tail": (ts(run["finished_at"]) - t["pipeline_started_unix"] - t["wall_s"]
                        if t else nan),
        # Inside the pipeline, beyond the epochs and the evaluation: the epochs' own
        # overhead (validation, checkpoints) and what follows the evaluation (artifacts).
        "epoch_overhead": t.get("train_s", nan) - training,
        "after_evaluation": (t["wall_s"] - sum(t.get(k, 0.0) for k in (
            "prepare_s", "search_s", "train_s", "classifier_s", "evaluate_s"))
            if t else nan),
        # Absolute times, for where the slots stood idle.
        "first_step_unix": t["training_started_unix"] if t else nan,
        "leased_unix": t.get("runner_leased_unix", nan),
        "runner_wait": t.get("runner_wait_s", 0.0),
        "released_unix": t.get("runner_released_unix", ts(run["finished_at"])),
        "finished_unix": ts(run["finished_at"]),
        "posted_unix": ts(exp["created_at"]), "submitted_unix": ts(run["started_at"]),
        "driver_started_unix": t.get("driver_started_unix", nan),
        "pipeline_started_unix": t.get("pipeline_started_unix", nan),
    }


def first_leases(rows: list[dict[str, Any]], slots: int) -> list[float]:
    """When each slot's first run leased its runner (Unix time, the earliest ``slots``
    leases; runs whose driver left no lease mark are left out)."""
    return sorted(r["leased_unix"] for r in rows if r["leased_unix"] == r["leased_unix"]
                  )[:slots]


def idle_profile(rows: list[dict[str, Any]], slots: int, start: float, end: float
                 ) -> dict[str, float]:
    """Slot-seconds not spent training or evaluating (``slots`` × wall − useful), by cause:

    - ``start``: until each slot's first run leased its runner (the first wave's POSTs,
      job start-ups, driver imports and ``ray.init``);
    - ``data``: runners held while a run's preflight and dataset load ran (``prepare``
      less the wait for a runner, which another run's work fills);
    - ``epochs``: runners held inside the training steps beyond the epochs' own seconds
      (checkpoints; before epoch seconds counted validation, validation too);
    - ``after``: after the evaluation until the run's runner is handed back (the
      driver's records follow without it);
    - ``tail``: after each of the last ``slots`` runs handed its runner back (ended, for
      a driver without the mark) until the experiment's end;
    - ``handover``: the rest — a runner handed back by a driver that finishes until the
      next driver leases it (none when a driver is already waiting for it).

    Runs without the lease mark (a driver without it) count their start in ``handover``.
    """
    useful = sum(r["training"] + r["evaluation"] for r in rows)
    total = slots * (end - start) - useful
    at_start = sum(max(0.0, t - start) for t in first_leases(rows, slots))
    last = sorted(r["released_unix"] for r in rows)[-slots:]
    tail = sum(end - f for f in last)
    data = sum(max(0.0, r["data"] - r["runner_wait"]) for r in rows)
    epochs = sum(r["epoch_overhead"] for r in rows)
    after = sum(r["after_evaluation"] for r in rows)  # the runner is handed back there
    known = at_start + tail + data + epochs + after
    return {"total": total, "start": at_start, "data": data, "epochs": epochs,
            "after": after, "tail": tail, "handover": total - known}


IDLE_CAUSES = {
    "start": "until each slot's first run leased its runner (job start-ups)",
    "data": "preflight and dataset loads, runner held",
    "epochs": "inside the training steps, beyond the epochs (checkpoints)",
    "after": "after the evaluation until the runner is handed back",
    "tail": "after the last runs ended",
    "handover": "the rest: runners between runs",
}
COLUMNS = ("post_to_first_step", "submit_to_first_step", "startup", "data", "search",
           "training", "evaluation", "wall", "overhead")
PROFILE = ("job_start", "driver_imports", "ray_init", "runner_to_pipeline", "epoch_overhead",
           "after_evaluation", "finish_tail")


CPU_KINDS = (  # (what a process's command line or title holds, its kind), first match wins
    ("JobSupervisor", "Ray job supervisors"),
    ("service.orchestration.run_job", "run drivers"),
    ("ray::RunnerPool", "Ray's other processes"),
    ("ray::Runner", "warm runners"),
    ("ray", "Ray's other processes"),  # gcs_server, raylet, dashboard, agents, idle workers
)


class CpuByProcess(threading.Thread):
    """CPU seconds (user + system, from ``/proc/<pid>/stat``) of every process of this
    machine, sampled every ``interval_s``, by kind (``CPU_KINDS``; this process is "the API
    and this bench"). A process that ends between two samples loses at most its last
    ``interval_s`` of CPU. Linux only."""

    def __init__(self, interval_s: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.interval_s = interval_s
        self.tick = os.sysconf("SC_CLK_TCK")
        with open("/proc/stat") as f:
            self.boot = next(int(line.split()[1]) for line in f if line.startswith("btime"))
        self.kinds: dict[tuple[int, float], str] = {}  # (pid, started) → kind
        self.samples: dict[tuple[int, float], list[tuple[float, float]]] = {}
        self.done = threading.Event()

    def _kind(self, pid: int) -> str | None:
        if pid == os.getpid():
            return "the API and this bench"
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                line = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return None
        if "default_worker.py" in line or "setup_worker.py" in line or "ray::IDLE" in line:
            return None  # a Ray worker not yet titled: look again next time
        return next((kind for part, kind in CPU_KINDS if part in line), "other processes")

    def run(self) -> None:
        while not self.done.wait(self.interval_s):
            now = time.time()
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit():
                    continue
                try:
                    with open(f"/proc/{entry.name}/stat") as f:
                        stat = f.read()
                except OSError:
                    continue
                fields = stat[stat.rindex(")") + 2:].split()
                key = (int(entry.name), self.boot + int(fields[19]) / self.tick)
                if key not in self.kinds:  # a Ray worker is named once it has its title
                    kind = self._kind(key[0])
                    if kind is not None:
                        self.kinds[key] = kind
                cpu = (int(fields[11]) + int(fields[12])) / self.tick
                self.samples.setdefault(key, []).append((now, cpu))

    def used(self, start: float, end: float) -> dict[str, list[float]]:
        """CPU seconds each process used in [start, end] (Unix time), by kind."""
        out: dict[str, list[float]] = {}
        for key, samples in self.samples.items():
            inside = [cpu for t, cpu in samples if start <= t <= end]
            before = [cpu for t, cpu in samples if t < start]
            if not inside:
                continue
            base = before[-1] if before else (0.0 if key[1] >= start else inside[0])
            if inside[-1] - base > 0:
                out.setdefault(self.kinds.get(key, "Ray's other processes"), []).append(
                    inside[-1] - base)
        return out


def cpu_table(cpu: CpuByProcess, windows: list[tuple[str, float, float]]) -> None:
    cores = len(os.sched_getaffinity(0))
    used = [cpu.used(a, b) for _, a, b in windows]
    kinds = sorted({k for u in used for k in u}, key=lambda k: -sum(used[-1].get(k, [0])))
    print(f"CPU-seconds by process ({cores} cores; 'each': median per process over the "
          "experiment):")
    print(f"{'':<26}" + "".join(f"{f'{name} ({b - a:.1f} s)':>26}" for name, a, b in windows))
    for kind in kinds:
        each = used[-1].get(kind, [])
        per = f"   ({statistics.median(each):.2f} each, {len(each)})" \
            if kind in ("run drivers", "Ray job supervisors") and each else ""
        print(f"  {kind:<24}" + "".join(f"{sum(u.get(kind, [])):>26.1f}" for u in used) + per)
    print(f"  {'total':<24}" + "".join(
        f"{sum(map(sum, u.values())):>15.1f} of {cores * (b - a):>8.1f}"
        for u, (_, a, b) in zip(used, windows, strict=True)))


def table(rows: list[dict[str, Any]], cols: tuple[str, ...] = COLUMNS) -> None:
    print(f"{'run':<30}" + "".join(f"{c:>19}" for c in cols))
    for r in rows:
        print(f"{r['run']:<30}" + "".join(f"{r[c]:>19.2f}" for c in cols))
    print(f"{'median':<30}" + "".join(
        f"{statistics.median(r[c] for r in rows):>19.2f}" for c in cols))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--gpus", type=int, default=4, help="logical GPUs = parallel slots")
    parser.add_argument("--max-in-flight", type=int, default=None,
                        help="runs on Ray at once (default: 2 × --gpus)")
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-limit", type=int, default=1024)
    parser.add_argument("--json", type=Path, default=None,
                        help="also write every run's figures and marks here (JSON)")
    parser.add_argument("--cpu", action="store_true",
                        help="also print the CPU-seconds of each kind of process (Linux)")
    args = parser.parse_args()
    cpu = CpuByProcess() if args.cpu else None
    slots = args.gpus
    in_flight = args.max_in_flight or 2 * args.gpus
    datasets = ["synthetic", "mnist"]
    grid = [(m, d) for d in datasets for m in MODELS]

    with tempfile.TemporaryDirectory(prefix="aelab-bench-") as tmp:
        head = LocalRayHead(state_dir=Path(tmp) / "ray", num_gpus=args.gpus,
                            num_cpus=max(args.gpus, 2))
        try:
            RayExecutor(head.dashboard_url, job_env={}).wait_until_up(180)
            settings = Settings(home=Path(tmp) / "home", ray_address=head.dashboard_url,
                                max_in_flight=in_flight,
                                max_runs_per_experiment=max(args.runs, 1))
            from models.data import install_offline_mnist

            install_offline_mnist(Path(settings.data_path))
            app = create_app(settings, executor_factory=RayExecutor.from_settings)

            def spec(models: list[str], data: list[str], n: int) -> dict[str, Any]:
                return {"models": models, "datasets": data, "epochs": args.epochs,
                        "batch_size": 64, "pretrained": False, "name": f"bench {n}",
                        "data": {"train_limit": args.train_limit, "test_limit": 256},
                        "lr_search": {"method": "fixed"}, "classifier": {"enabled": False},
                        "resources": {"gpus_per_run": 1, "cpus_per_run": 1}}

            with TestClient(app) as client:
                warm = [client.post(f"{API}/experiments",
                                    json=spec(["baseline"], ["synthetic"], 0)).json()["id"]
                        for _ in range(slots)]
                warm_exps = wait(client, warm)
                cold = [run_facts(client, e, r) for e in warm_exps for r in e["runs"]]
                print(f"warm-up: {slots} run(s), one per slot (cold: measured apart)",
                      file=sys.stderr)
                exp_ids = []
                if cpu is not None:
                    cpu.start()
                start_unix = time.time()
                for n in range(args.runs):  # one experiment per run: a steady stream
                    model, dataset = grid[n % len(grid)]
                    exp_ids.append(client.post(f"{API}/experiments",
                                               json=spec([model], [dataset], n + 1))
                                   .json()["id"])
                    if in_flight == 1:  # serial: each POST finds the service idle and warm
                        wait(client, exp_ids[-1:], poll_s=0.1)  # one experiment: cheap
                exps = wait(client, exp_ids)
                # From the first POST to the last experiment's recorded end.
                end_unix = max(ts(e["finished_at"]) for e in exps)
                wall = end_unix - start_unix
                rows = [run_facts(client, e, r) for e in exps for r in e["runs"]]
                failed = [r for e in exps for r in e["runs"] if r["status"] != "succeeded"]
        finally:
            if cpu is not None:
                cpu.done.set()
            head.stop()

    print(f"{args.runs} runs ({', '.join(MODELS)} × {', '.join(datasets)}), {args.epochs} "
          f"epochs of {args.train_limit} images, {args.gpus} logical GPUs, {in_flight} "
          f"in flight; {len(failed)} failed; seconds:")
    table(rows)
    print("profile of the start-up and finish (job_start: submitted -> driver process; "
          "finish_tail: pipeline done -> run finished):")
    table(rows, PROFILE)
    useful = sum(r["training"] + r["evaluation"] for r in rows)
    print(f"per-run fixed overhead, median (s)            "
          f"{statistics.median(r['overhead'] for r in rows):8.2f}")
    print(f"POST -> first training step, median (s)       "
          f"{statistics.median(r['post_to_first_step'] for r in rows):8.2f}")
    print(f"POST -> first training step, cold (s)         "
          f"{statistics.median(r['post_to_first_step'] for r in cold):8.2f}"
          f"   (the warm-up runs: fresh cluster, no runner yet, {slots} at once)")
    print(f"experiment wall time (s)                      {wall:8.2f}")
    print(f"ideal: sum(training + evaluation) / slots (s) {useful / slots:8.2f}")
    print(f"efficiency (ideal / wall)                     {useful / slots / wall:8.2f}")
    idle = idle_profile(rows, slots, start_unix, end_unix)
    print(f"slot-seconds idle {idle['total']:.1f} of {slots * wall:.1f}, by cause:")
    for cause, what in IDLE_CAUSES.items():
        print(f"  {cause:<9} {idle[cause]:7.1f}  {what}")
    if cpu is not None:
        first_wave = (first_leases(rows, slots) or [end_unix])[-1]
        cpu_table(cpu, [("start", start_unix, first_wave), ("experiment", start_unix, end_unix)])
    if args.json:
        args.json.write_text(json.dumps({"start_unix": start_unix, "end_unix": end_unix,
                                         "slots": slots, "idle": idle, "runs": rows},
                                        indent=1))


if __name__ == "__main__":
    main()
