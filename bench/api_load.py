"""API and web UI latency under load: 1,000 stored experiments (12 runs each, with epochs,
LR trials and each run's gallery artifacts), p50/p99 of three read endpoints at a fixed
request rate and of the UI's experiments page, an experiment's page and the gallery of a
6-run dataset at ``--page-rate``, on loopback.

    python bench/api_load.py                         # SQLite and PostgreSQL (if reachable)
    python bench/api_load.py --db sqlite --rate 200 --page-rate 20 --seconds 10

The server is `uvicorn service.app:create_app --factory` in a subprocess; the load is
open-loop (requests start on schedule whether or not earlier ones finished), so queueing
shows up in the tail instead of slowing the generator down.

    python bench/api_load.py --db sqlite --while-training

runs the API as a user does (`aelab serve`, embedded Ray head, one uvicorn worker) on the
same seeded database, starts a small experiment that trains on this machine, and measures
the three read endpoints while it trains (and, for comparison, before it starts).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import numpy as np
from PIL import Image
from sqlalchemy import create_engine, insert, text

from service.orchestration.ray_head import free_port
from service.persistence.migrate import upgrade
from service.persistence.tables import Artifact, EpochMetric, Experiment, LrTrial, Measure, Run
from service.spec import ExperimentSpec
from workers.measures import RunMeasures
from workers.store import GALLERY_INPUTS, GALLERY_META, GALLERY_RECONSTRUCTIONS

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


SAMPLES = 8  # the spec's default gallery_samples


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


class GalleryWriter:
    """Writes a run's gallery artifacts as evaluation does (``models.samples``): its
    dataset's 8 test images and its own reconstructions as 32×256 RGB PNG strips, and
    gallery.json; every run's reconstruction differs, so no two runs share a file."""

    def __init__(self, root: Path) -> None:
        self.root = root
        rng = np.random.default_rng(0)
        # Smooth images (like reconstructions) rather than noise: realistic PNG sizes.
        base = rng.integers(0, 256, (len(DATASETS), 8, 8 * SAMPLES, 3)).astype(np.uint8)
        self.inputs = {d: np.asarray(Image.fromarray(base[i]).resize((32 * SAMPLES, 32)))
                       for i, d in enumerate(DATASETS)}
        self.inputs_png = {d: _png(a) for d, a in self.inputs.items()}

    def write(self, run_id: int, dataset: str) -> list[dict[str, Any]]:
        recon = self.inputs[dataset].copy()
        recon[run_id % 32, (run_id // 32) % (32 * SAMPLES)] ^= 0x55  # this run's own pixels
        meta = json.dumps({"count": SAMPLES, "indices": list(range(SAMPLES)),
                           "psnr_db": [24.0 + k / 10 for k in range(SAMPLES)],
                           "inputs": GALLERY_INPUTS,
                           "reconstructions": GALLERY_RECONSTRUCTIONS}).encode()
        folder = self.root / f"run-{run_id}" / "a0"
        folder.mkdir(parents=True, exist_ok=True)
        rows = []
        for name, data, ctype in ((GALLERY_INPUTS, self.inputs_png[dataset], "image/png"),
                                  (GALLERY_RECONSTRUCTIONS, _png(recon), "image/png"),
                                  (GALLERY_META, meta, "application/json")):
            (folder / name).write_bytes(data)
            rows.append({"run_id": run_id, "name": name, "kind": "gallery",
                         "uri": str(folder / name), "content_type": ctype, "size": len(data),
                         "checksum": hashlib.sha256(data).hexdigest(),
                         "created_at": datetime.now(UTC)})
        return rows


def seed(url: str, n_experiments: int, artifact_root: Path) -> None:
    upgrade(url)
    gallery = GalleryWriter(artifact_root)
    engine = create_engine(url)
    now = datetime.now(UTC)
    rng = random.Random(0)
    with engine.begin() as conn:
        conn.execute(insert(Experiment), [
            {"id": e, "name": f"exp {e}", "spec": SPEC, "status": "succeeded",
             "created_at": now, "started_at": now, "finished_at": now}
            for e in range(1, n_experiments + 1)])
        runs, epochs, trials, measures, artifacts = [], [], [], [], []
        specs = ExperimentSpec.model_validate({**SPEC, "models": MODELS,
                                               "datasets": DATASETS}).run_specs()
        run_specs = {(r.model, r.dataset): r.model_dump(mode="json") for r in specs}
        latent = {(r.model, r.dataset): r.effective_latent_dim for r in specs}
        run_id = 0
        for e in range(1, n_experiments + 1):
            for d in DATASETS:
                for m in MODELS:
                    run_id += 1
                    runs.append({"id": run_id, "experiment_id": e, "uid": f"{run_id:012x}",
                         "model": m, "dataset": d,
                                 "status": "succeeded", "phase": None, "epoch": 15,
                                 "epochs_total": 15, "lr": 1e-3, "attempt": 0,
                                 "spec": run_specs[(m, d)], "latent_dim": latent[(m, d)], "seed": 0,
                                 "created_at": now, "updated_at": now, "started_at": now,
                                 "finished_at": now})
                    epochs += [{"run_id": run_id, "epoch": k, "phase": "phase2", "size": 32,
                                "lr": 1e-3, "train_loss": rng.random(), "val_loss": rng.random(),
                                "val_mse": rng.random(), "val_mae": rng.random(),
                                "seconds": 60.0, "images_per_s": 1000.0} for k in range(1, 16)]
                    trials += [{"run_id": run_id, "method": "tune", "lr": 10 ** -rng.uniform(1, 5),
                                "loss": rng.random(), "iterations": 2, "stopped_early": k > 3,
                                "chosen": k == 0} for k in range(8)]
                    measures.append({"run_id": run_id, **RunMeasures(
                        mse=0.004, mae=0.046, psnr=24.0, ssim=0.8, n_images=10000,
                        classifier_accuracy=0.46, original_accuracy=0.82,
                        training_time_s=1400.0, params=3080629, latent_dim=1000,
                        compression_ratio=3.072, compression_ratio_bytes=0.768).model_dump()})
                    artifacts += gallery.write(run_id, d)
        for table, rows in ((Run, runs), (EpochMetric, epochs), (LrTrial, trials),
                            (Measure, measures), (Artifact, artifacts)):
            for i in range(0, len(rows), 20_000):
                conn.execute(insert(table), rows[i:i + 20_000])
        if engine.dialect.name == "postgresql":
            for table in ("experiments", "runs", "epoch_metrics", "lr_trials", "artifacts"):
                conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                  f"(SELECT max(id) FROM {table}))"))
            conn.execute(text("ANALYZE"))
    engine.dispose()


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
    port = free_port()
    with tempfile.TemporaryDirectory() as home:
        t = time.perf_counter()
        seed(url, args.experiments, Path(home) / "artifacts")
        print(f"[{kind}] seeded {args.experiments} experiments × 12 runs (and each run's "
              f"gallery artifacts) in {time.perf_counter() - t:.1f}s", file=sys.stderr)
        env = {**os.environ, "AELAB_HOME": home, "AELAB_DATABASE_URL": url,
               "AELAB_MIGRATE_ON_START": "false"}
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "service.app:create_app", "--factory",
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
                "GET /experiments (page of 20)": (["/api/v1/experiments?limit=20"]
                + [f"/api/v1/experiments?limit=20&cursor={i}" for i in ids[::50]], args.rate),
                "GET /experiments/{id}": ([f"/api/v1/experiments/{i}" for i in ids],
                                          args.rate),
                "GET /experiments/{id}/results": ([f"/api/v1/experiments/{i}/results"
                                                   for i in ids], args.rate),
                # The web UI: HTML of 20 experiments with their 240 runs' progress; one
                # experiment with its study tables; a gallery of 6 runs × 8 tiles composed
                # from the stored strips (each gallery read once or twice: mostly cold).
                "UI / (experiments page)": (["/"] + [f"/?cursor={i}" for i in ids[::50]],
                                            args.page_rate),
                "UI /experiments/{id}": ([f"/experiments/{i}" for i in ids], args.page_rate),
                "UI gallery, 6 runs × 8": ([f"/experiments/{i}/gallery?dataset=mnist"
                                            for i in ids], args.page_rate),
            }
            lines = []
            for name, (paths, rate) in cases.items():
                for path in paths[:50]:  # warm up: imports, SQL compilation caches, pool
                    response = httpx.get(base + path, timeout=30)
                    assert response.status_code == 200, (path, response.status_code)
                latencies, errors = asyncio.run(load(base, paths, rate, args.seconds))
                lines.append(f"{kind:<11}{name:<32}{rate:>6.0f}{len(latencies):>7}"
                             f"{percentile(latencies, 50):>9.1f}{percentile(latencies, 99):>9.1f}"
                             f"{max(latencies):>9.1f}{errors:>8}")
            return lines
        finally:
            server.terminate()
            server.wait(timeout=10)


def bench_while_training(url: str, args: argparse.Namespace) -> list[str]:
    """Reads at ``args.rate`` while an experiment trains on the same machine."""
    port = free_port()
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as home:
        seed(url, args.experiments, Path(home) / "artifacts")
        env = {**os.environ, "AELAB_HOME": home, "AELAB_DATABASE_URL": url,
               "AELAB_DASHBOARD_PORT": "0", "AELAB_MAX_IN_FLIGHT": "2"}
        env.pop("RAY_ADDRESS", None)
        server = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--port",
                                   str(port), "--log-level", "warning"], env=env,
                                  start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        ids = list(range(1, args.experiments + 1))
        cases = {
            "GET /experiments (page of 20)": ["/api/v1/experiments?limit=20"]
            + [f"/api/v1/experiments?limit=20&cursor={i}" for i in ids[::50]],
            "GET /experiments/{id}": [f"/api/v1/experiments/{i}" for i in ids],
            "GET /experiments/{id}/results": [f"/api/v1/experiments/{i}/results"
                                              for i in ids],
        }

        def measure(label: str) -> list[str]:
            lines = []
            for name, paths in cases.items():
                latencies, errors = asyncio.run(load(base, paths, args.rate, args.seconds))
                lines.append(f"{label:<11}{name:<32}{args.rate:>6.0f}{len(latencies):>7}"
                             f"{percentile(latencies, 50):>9.1f}{percentile(latencies, 99):>9.1f}"
                             f"{max(latencies):>9.1f}{errors:>8}")
            return lines

        try:
            for _ in range(300):
                try:
                    if httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
            # Every path read once first: ended experiments' answers are then served as
            # computed (steady state); a cold results table costs a render per experiment.
            for paths in cases.values():
                for path in paths:
                    httpx.get(base + path, timeout=30)
            lines = measure("idle")
            exp = httpx.post(f"{base}/api/v1/experiments", timeout=30, json={
                "models": ["baseline", "pixel_shuffle"], "datasets": ["synthetic"],
                "epochs": 40, "batch_size": 64, "pretrained": False,
                "data": {"train_limit": 4096, "test_limit": 256},
                "lr_search": {"method": "fixed"}, "classifier": {"enabled": False},
                "resources": {"gpus_per_run": 0, "cpus_per_run": 1}}).json()
            for _ in range(600):  # until both runs train
                runs = httpx.get(f"{base}/api/v1/experiments/{exp['id']}", timeout=30
                                 ).json()["runs"]
                if all(r["epoch"] >= 1 for r in runs):
                    break
                time.sleep(0.5)
            lines += measure("training")
            runs = httpx.get(f"{base}/api/v1/experiments/{exp['id']}", timeout=30
                             ).json()["runs"]
            print(f"[while training] runs still training at the end: "
                  f"{[(r['status'], r['epoch']) for r in runs]}", file=sys.stderr)
            httpx.post(f"{base}/api/v1/experiments/{exp['id']}/cancel", timeout=30)
            for _ in range(120):  # runs stopped: the service then stops its head with it
                runs = httpx.get(f"{base}/api/v1/experiments/{exp['id']}", timeout=30
                                 ).json()["runs"]
                if all(r["status"] == "cancelled" for r in runs):
                    break
                time.sleep(0.5)
            return lines
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both", "none"],
                        default="both")
    parser.add_argument("--experiments", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=200.0, help="API requests per second")
    parser.add_argument("--page-rate", type=float, default=20.0,
                        help="web UI pages per second (a person's clicks, not a script's)")
    parser.add_argument("--seconds", type=float, default=10.0, help="per endpoint")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--while-training", action="store_true",
                        help="reads while an experiment trains (aelab serve, SQLite)")
    parser.add_argument("--postgres-admin", default=os.environ.get(
        "AELAB_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    args = parser.parse_args()

    lines = []
    if args.while_training:
        with tempfile.TemporaryDirectory() as tmp:
            lines += bench_while_training(f"sqlite:///{Path(tmp) / 'bench.db'}", args)
        args.db = "none"
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

    print(f"open loop at the rate shown (req/s), {args.seconds:.0f}s per endpoint, "
          f"{args.workers} uvicorn worker(s); latencies in ms")
    header = (f"{'db':<11}{'endpoint':<32}{'rate':>6}{'n':>7}{'p50':>9}{'p99':>9}{'max':>9}"
              f"{'errors':>8}")
    print(header)
    print("-" * len(header))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
