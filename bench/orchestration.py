"""Orchestration overhead on a local Ray cluster declaring 4 logical GPUs.

    python bench/orchestration.py [--runs-per-dataset 3] [--epochs 2]

Posts one experiment (a grid of small runs, fixed LR, no classifier) to an in-process API
with the Ray executor and reports: dispatch latency (queued → submitted, and submitted →
the run's driver starting on Ray), per-run wall time, and the experiment's wall time
against the ideal (sum of run times / parallel slots). On a CPU-only machine the 4 "GPUs"
are logical: runs share the cores, so run times grow with parallelism; the ideal uses the
measured run times, so the gap is what dispatch and scheduling cost.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

from fastapi.testclient import TestClient

from service.api.app import create_app
from service.orchestration.ray_executor import LocalRayHead, RayExecutor
from service.settings import Settings

API = "/api/v1"
MODELS = ["baseline", "pixel_shuffle", "progressive_resizing"]


def seconds(a: str, b: str) -> float:
    return (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gpus", type=int, default=4, help="logical GPUs = parallel slots")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-limit", type=int, default=1024)
    parser.add_argument("--datasets", default="synthetic,mnist")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="aelab-bench-") as tmp:
        head = LocalRayHead(state_dir=Path(tmp) / "ray", num_gpus=args.gpus)
        try:
            RayExecutor(head.dashboard_url, job_env={}, head=None).wait_until_up(180)
            settings = Settings(home=Path(tmp) / "home", ray_address=head.dashboard_url,
                                max_in_flight=args.gpus, dispatch_interval_s=0.5)
            app = create_app(settings, executor_factory=RayExecutor.from_settings)
            spec = {"models": MODELS, "datasets": args.datasets.split(","),
                    "epochs": args.epochs, "batch_size": 64, "pretrained": False,
                    "data": {"train_limit": args.train_limit, "test_limit": 256},
                    "lr_search": {"method": "fixed"}, "classifier": {"enabled": False},
                    "resources": {"gpus_per_run": 1, "cpus_per_run": 0.5}}
            with TestClient(app) as client:
                start = time.perf_counter()
                exp = client.post(f"{API}/experiments", json=spec).json()
                while True:
                    exp = client.get(f"{API}/experiments/{exp['id']}").json()
                    if exp["status"] in ("succeeded", "failed", "cancelled"):
                        break
                    time.sleep(0.5)
                wall = time.perf_counter() - start
                jobs = {j.submission_id: j for j in
                        app.state.dispatcher.executor.client().list_jobs()}
        finally:
            head.stop()

    runs = exp["runs"]
    slots = args.gpus
    durations = [seconds(r["started_at"], r["finished_at"]) for r in runs]
    first_wave = sorted(runs, key=lambda r: r["started_at"])[:slots]
    queued_to_submitted = [seconds(exp["created_at"], r["started_at"]) for r in first_wave]
    submitted_to_driver = []
    for r in runs:
        job = jobs.get(r["ray_job_id"])
        if job is not None and job.start_time:
            submitted = datetime.fromisoformat(r["started_at"]).timestamp()
            submitted_to_driver.append(job.start_time / 1000 - submitted)
    ideal = sum(durations) / slots

    print(f"{len(runs)} runs ({', '.join(MODELS)} × {args.datasets}), {args.epochs} epochs, "
          f"{args.train_limit} images, {slots} logical GPUs; experiment {exp['status']}")
    print(f"{'measure':<44}{'value':>12}")
    print("-" * 56)
    print(f"{'dispatch queued → submitted, first wave (s)':<44}"
          f"{statistics.median(queued_to_submitted):>12.2f}")
    if submitted_to_driver:
        print(f"{'submitted → job driver running, median (s)':<44}"
              f"{statistics.median(submitted_to_driver):>12.2f}")
    print(f"{'run wall time, median (s)':<44}{statistics.median(durations):>12.1f}")
    print(f"{'experiment wall time (s)':<44}{wall:>12.1f}")
    print(f"{'ideal: Σ run times / slots (s)':<44}{ideal:>12.1f}")
    print(f"{'efficiency (ideal / wall)':<44}{ideal / wall:>12.2f}")


if __name__ == "__main__":
    main()
