"""API latency under load: 1,000 stored experiments (12 runs each, with epochs and LR
trials), p50/p99 of three read endpoints at a fixed request rate on loopback.

    python bench/api_load.py                         # SQLite and PostgreSQL (if reachable)
    python bench/api_load.py --db sqlite --rate 200 --seconds 10

The server is `uvicorn service.api.app:create_app --factory` in a subprocess; the load is
open-loop (requests start on schedule whether or not earlier ones finished), so queueing
shows up in the tail instead of slowing the generator down.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import httpx
from sqlalchemy import create_engine, insert, text

from service.persistence.migrate import upgrade
from service.persistence.tables import EpochMetric, Experiment, LrTrial, Measure, Run
from service.spec import ExperimentSpec

MODELS = ["baseline", "pixel_shuffle", "progressive_resizing", "pretrained_resnet", "resnet",
          "feature_loss"]
DATASETS = ["mnist", "cifar10"]
SPEC = {"name": "bench", "models": MODELS, "datasets": DATASETS, "epochs": 15,
        "batch_size": 128, "latent_dim": None, "schedule": "seed",
        "lr_search": {"method": "tune", "num_samples": 8, "min_lr": 1e-5, "max_lr": 0.1,
                      "budget_epochs": 2, "range_test_steps": 100, "lr": None},
        "data": {"train_limit": None, "test_limit": None, "validation": "holdout",
                 "augment": True},
        "resources": {"gpus_per_run": 1.0, "cpus_per_run": 1.0},
        "classifier": {"enabled": True, "arch": "resnet34", "frozen_epochs": 11,
                       "unfrozen_epochs": 10, "pretrained": True},
        "pretrained": True, "seed": 0}


def seed(url: str, n_experiments: int) -> None:
    upgrade(url)
    engine = create_engine(url)
    now = datetime.now(UTC)
    rng = random.Random(0)
    with engine.begin() as conn:
        conn.execute(insert(Experiment), [
            {"id": e, "name": f"exp {e}", "spec": SPEC, "status": "succeeded",
             "created_at": now, "started_at": now, "finished_at": now}
            for e in range(1, n_experiments + 1)])
        runs, epochs, trials, measures = [], [], [], []
        run_specs = {(r.model, r.dataset): r.model_dump(mode="json") for r in
                     ExperimentSpec.model_validate({**SPEC, "models": MODELS,
                                                    "datasets": DATASETS}).run_specs()}
        run_id = 0
        for e in range(1, n_experiments + 1):
            for d in DATASETS:
                for m in MODELS:
                    run_id += 1
                    runs.append({"id": run_id, "experiment_id": e, "uid": f"{run_id:012x}",
                         "model": m, "dataset": d,
                                 "status": "succeeded", "phase": None, "epoch": 15,
                                 "epochs_total": 15, "lr": 1e-3, "attempt": 0,
                                 "spec": run_specs[(m, d)],
                                 "created_at": now, "updated_at": now, "started_at": now,
                                 "finished_at": now})
                    epochs += [{"run_id": run_id, "epoch": k, "phase": "phase2", "size": 32,
                                "lr": 1e-3, "train_loss": rng.random(), "val_loss": rng.random(),
                                "val_mse": rng.random(), "val_mae": rng.random(),
                                "seconds": 60.0, "images_per_s": 1000.0} for k in range(1, 16)]
                    trials += [{"run_id": run_id, "method": "tune", "lr": 10 ** -rng.uniform(1, 5),
                                "loss": rng.random(), "iterations": 2, "stopped_early": k > 3,
                                "chosen": k == 0} for k in range(8)]
                    measures.append({"run_id": run_id, "mse": 0.004, "mae": 0.046, "psnr": 24.0,
                                     "ssim": 0.8, "n_images": 10000,
                                     "classifier_accuracy": 0.46, "original_accuracy": 0.82,
                                     "training_time_s": 1400.0, "params": 3080629,
                                     "latent_dim": 1000, "compression_ratio": 3.072,
                                     "compression_ratio_bytes": 0.768})
        for table, rows in ((Run, runs), (EpochMetric, epochs), (LrTrial, trials),
                            (Measure, measures)):
            for i in range(0, len(rows), 20_000):
                conn.execute(insert(table), rows[i:i + 20_000])
        if engine.dialect.name == "postgresql":
            for table in ("experiments", "runs", "epoch_metrics", "lr_trials"):
                conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                  f"(SELECT max(id) FROM {table}))"))
            conn.execute(text("ANALYZE"))
    engine.dispose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def load(base: str, paths: list[str], rate: float, seconds: float
               ) -> tuple[list[float], int]:
    """Open loop: request i starts at i / rate whatever happened to the others. aiohttp
    is the client because its per-request CPU is a fraction of httpx's, and client and
    server share this machine's cores."""
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=500)
    async with aiohttp.ClientSession(base, connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=60)) as client:
        async def one(path: str) -> None:
            nonlocal errors
            start = time.perf_counter()
            try:
                async with client.get(path) as r:
                    await r.read()
                    if r.status != 200:
                        errors += 1
            except aiohttp.ClientError:
                errors += 1
            latencies.append((time.perf_counter() - start) * 1000)

        tasks = []
        t0 = time.perf_counter()
        rng = random.Random(1)
        for i in range(int(rate * seconds)):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(rng.choice(paths))))
        await asyncio.gather(*tasks)
    return latencies, errors


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 \
        else values[0]


def bench_db(kind: str, url: str, args: argparse.Namespace) -> list[str]:
    t = time.perf_counter()
    seed(url, args.experiments)
    print(f"[{kind}] seeded {args.experiments} experiments × 12 runs in "
          f"{time.perf_counter() - t:.1f}s", file=sys.stderr)
    port = free_port()
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "AELAB_HOME": home, "AELAB_DATABASE_URL": url,
               "AELAB_MIGRATE_ON_START": "false"}
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "service.api.app:create_app", "--factory",
             "--port", str(port), "--log-level", "warning", "--workers", str(args.workers)],
            env=env)
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(100):
                try:
                    if httpx.get(f"{base}/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            ids = list(range(1, args.experiments + 1))
            cases = {
                "GET /experiments (page of 20)": ["/api/v1/experiments?limit=20"]
                + [f"/api/v1/experiments?limit=20&cursor={i}" for i in ids[::50]],
                "GET /experiments/{id}": [f"/api/v1/experiments/{i}" for i in ids],
                "GET /experiments/{id}/results": [f"/api/v1/experiments/{i}/results"
                                                  for i in ids],
            }
            lines = []
            for name, paths in cases.items():
                for path in paths[:50]:  # warm up: imports, SQL compilation caches, pool
                    httpx.get(base + path, timeout=30)
                latencies, errors = asyncio.run(load(base, paths, args.rate, args.seconds))
                lines.append(f"{kind:<11}{name:<32}{len(latencies):>7}"
                             f"{percentile(latencies, 50):>9.1f}{percentile(latencies, 99):>9.1f}"
                             f"{max(latencies):>9.1f}{errors:>8}")
            return lines
        finally:
            server.terminate()
            server.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--experiments", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="per endpoint")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--postgres-admin", default=os.environ.get(
        "AELAB_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    args = parser.parse_args()

    lines = []
    if args.db in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            lines += bench_db("sqlite", f"sqlite:///{Path(tmp) / 'bench.db'}", args)
    if args.db in ("postgresql", "both"):
        import psycopg

        admin = args.postgres_admin.replace("postgresql+psycopg://", "postgresql://")
        name = f"aelab_bench_{uuid.uuid4().hex[:8]}"
        try:
            with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
        except psycopg.OperationalError as exc:
            print(f"PostgreSQL skipped: {exc}", file=sys.stderr)
        else:
            try:
                lines += bench_db("postgresql",
                                  f"{args.postgres_admin.rsplit('/', 1)[0]}/{name}", args)
            finally:
                with psycopg.connect(admin, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    print(f"{args.rate:.0f} req/s open loop, {args.seconds:.0f}s per endpoint, "
          f"{args.workers} uvicorn worker(s); latencies in ms")
    header = f"{'db':<11}{'endpoint':<32}{'n':>7}{'p50':>9}{'p99':>9}{'max':>9}{'errors':>8}"
    print(header)
    print("-" * len(header))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
