"""The study's grid on a GPU machine, packed four runs to a GPU, against a 10-minute target.

    python bench/gpu_study.py                 # the study: 6 models × (MNIST, synthetic), 15 epochs
    python bench/gpu_study.py --small         # CPU-sized: 2 models, 1 epoch, 256 images (CI)
    python bench/gpu_study.py --address http://127.0.0.1:8265   # on a running Ray cluster
    python bench/gpu_study.py --check-precision [--variant baseline] [--small]
                                              # fp32 vs bf16 on one seed, no Ray

Posts the study's grid to an in-process API with the Ray executor: every variant on MNIST
(the offline package) and on synthetic CIFAR-sized images (3×32×32, 10,000 training
images: aelab's offline stand-in for CIFAR-10's 50,000), at the study's budget (15 epochs,
batch 128, the Tune LR search, the reference classifier), with ``pretrained: false`` for
the encoder, the feature loss and the classifier (no downloads), and ``gpus_per_run: 0.25``
(four runs share a GPU). Without ``--address`` it starts a local Ray head declaring the
GPUs torch sees (``--gpus`` logical GPUs where there are none, so the packing is the same).

Prints per run: training images/s, epochs, training, LR-search and wall seconds, and the
fraction of its wall time outside the training loop; while the study runs, ``nvidia-smi``
is sampled every second for each GPU's utilisation (%) and memory (MiB), reported as mean
and peak; then the study's wall time against the target, the runs' mean wall time and the
study's fraction outside the training loop.

The fraction of wall time outside the step:

- per run: ``1 − train_s / wall_s``, where ``train_s`` is the seconds of its epochs'
  training loops (making batches and forward/backward/optimiser steps, nothing else: each
  epoch's training images over its ``images_per_s``) and
  ``wall_s`` its pipeline's wall time (preflight → evaluated: LR search, validation,
  checkpoints, classifier, evaluation and every wait are outside);
- for the study: ``1 − Σ train_s / (slots · wall)``, ``slots`` the runs that can train at
  once (4 per GPU) and ``wall`` the study's (POST → last run ended): what the per-run
  figure counts, plus slots standing idle (job start-ups, the last wave's tail).

``--check-precision`` trains one variant twice on one seed, directly through
:func:`models.training.train` (no Ray, no server): ``precision="fp32"`` and ``"bf16"``
(bf16 autocast; on the CPU, the CPU's), at the study's budget (15 epochs, batch 128) on
MNIST, or ``--small`` (2 epochs, 256 images); prints both final validation MSEs and
whether they are within 2 % (exit status 1 when not).
"""

from __future__ import annotations

import argparse
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from service.client.schemas import API_PREFIX as API

TARGET_S = 600.0  # the whole study in 10 minutes on one GPU (issue 15)
RUNS_PER_GPU = 4  # gpus_per_run 0.25
PRECISION_TOLERANCE = 0.02  # bf16's final MSE within 2 % of fp32's (issue 28)
STUDY_MODELS = ["baseline", "pixel_shuffle", "progressive_resizing", "pretrained_resnet",
                "resnet", "feature_loss"]
DATASETS = ["mnist", "synthetic"]


def study_specs(small: bool) -> list[dict[str, Any]]:
    """One experiment per dataset: the study's grid and budget, or a CPU-sized cut of it."""
    base: dict[str, Any] = {
        "epochs": 15, "batch_size": 128, "pretrained": False,
        "lr_search": {"method": "tune", "num_samples": 8, "budget_epochs": 2},
        "classifier": {"enabled": True, "arch": "resnet34", "pretrained": False},
        "resources": {"gpus_per_run": 1 / RUNS_PER_GPU, "cpus_per_run": 1},
    }
    models = STUDY_MODELS
    if small:
        base |= {"epochs": 1, "batch_size": 32, "lr_search": {"method": "fixed"},
                 "data": {"train_limit": 256, "test_limit": 64},
                 "classifier": {"enabled": True, "arch": "small", "pretrained": False,
                                "frozen_epochs": 1, "unfrozen_epochs": 0}}
        models = ["baseline", "pixel_shuffle"]
    return [{**base, "name": f"gpu study: {dataset}", "models": models,
             "datasets": [dataset]} for dataset in DATASETS]


class GpuSampler:
    """Samples ``nvidia-smi`` once a second in a thread: per GPU, utilisation (%) and
    memory used (MiB). Records nothing where ``nvidia-smi`` is absent."""

    QUERY = ("nvidia-smi", "--query-gpu=index,utilization.gpu,memory.used",
             "--format=csv,noheader,nounits")

    def __init__(self, interval_s: float = 1.0) -> None:
        self.available = shutil.which("nvidia-smi") is not None
        self.samples: dict[int, list[tuple[float, float]]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(interval_s,), daemon=True)

    def __enter__(self) -> GpuSampler:
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _loop(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                out = subprocess.run(self.QUERY, capture_output=True, text=True, timeout=5,
                                     check=True).stdout
            except (subprocess.SubprocessError, OSError):
                continue
            for line in out.strip().splitlines():
                index, util, memory = (float(v) for v in line.split(","))
                self.samples.setdefault(int(index), []).append((util, memory))

    def report(self) -> list[str]:
        if not self.available:
            return ["GPU utilisation and memory: n/a (no nvidia-smi on this machine)"]
        lines = []
        for index, rows in sorted(self.samples.items()):
            utils, mems = [u for u, _ in rows], [m for _, m in rows]
            lines.append(f"GPU {index}: utilisation mean {statistics.mean(utils):5.1f} % "
                         f"(peak {max(utils):.0f} %), memory mean {statistics.mean(mems):7.0f}"
                         f" MiB, peak {max(mems):.0f} MiB ({len(rows)} samples)")
        return lines or ["GPU utilisation and memory: no samples"]


def run_rows(client: Any, exp: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for run in exp["runs"]:
        detail = client.get(f"{API}/runs/{run['id']}").json()
        epochs = detail["epochs"]
        per_epoch = epoch_images(detail["spec"])
        seconds = sum(per_epoch / e["images_per_s"] for e in epochs if e["images_per_s"])
        images = per_epoch * len(epochs)
        measures = detail.get("measures") or {}
        wall = measures.get("wall_time_s") or float("nan")
        rows.append({
            "run": f"{run['model']}/{run['dataset']}", "status": run["status"],
            "epochs": len(epochs), "images_per_s": images / seconds if seconds else 0.0,
            "train_s": seconds, "search_s": measures.get("search_time_s", float("nan")),
            "wall_s": wall, "outside": outside_fraction(seconds, wall),
            "mse": measures.get("mse", float("nan")), "error": run.get("error") or "",
        })
    return rows


def epoch_images(spec: dict[str, Any]) -> int:
    """Images a training epoch of the run ``spec`` (its stored RunSpec) steps through:
    whole batches of its training split. An epoch's training-loop seconds are these over
    its ``images_per_s`` (its ``seconds`` hold the validation pass too)."""
    from models.datasets import dataset_info, split_sizes

    data = spec.get("data") or {}
    n_train = split_sizes(dataset_info(spec["dataset"]).train_size, data.get("train_limit"),
                          data.get("validation", "holdout"))[0]
    return n_train // spec["batch_size"] * spec["batch_size"]


def outside_fraction(train_s: float, wall_s: float) -> float:
    """``1 − train_s / wall_s``: the share of ``wall_s`` not spent in the training loop
    (NaN when ``wall_s`` is not positive or not a number)."""
    return 1.0 - train_s / wall_s if wall_s > 0 else float("nan")


def check_precision(variant: str, small: bool, lr: float, seed: int) -> int:
    """Train ``variant`` in fp32 then bf16 on one seed; print both final validation MSEs
    and whether they are within :data:`PRECISION_TOLERANCE`. 0 when they are, else 1."""
    from models.data import install_offline_mnist, load_dataset, mnist_offline_source
    from models.training import TrainConfig, resolve_device, train

    with tempfile.TemporaryDirectory(prefix="aelab-precision-") as tmp:
        dataset = "mnist" if mnist_offline_source() is not None else "synthetic"
        if dataset == "mnist":
            install_offline_mnist(Path(tmp))
        limits = {"train_limit": 256, "test_limit": 64} if small else {}
        data = load_dataset(dataset, tmp, download=False, seed=seed, **limits)
    budget = {"epochs": 2, "batch_size": 32} if small else {"epochs": 15, "batch_size": 128}
    device = resolve_device(None)
    print(f"{variant} on {dataset} ({len(data.train)} training images, {budget['epochs']} "
          f"epochs, batch {budget['batch_size']}, lr {lr:g}, seed {seed}) on {device}",
          flush=True)
    mse = {}
    for precision in ("fp32", "bf16"):
        start = time.perf_counter()
        result = train(TrainConfig(variant, lr=lr, seed=seed, pretrained=False,
                                   precision=precision, **budget), data)
        mse[precision] = result.history[-1].val_mse
        print(f"{precision}: final validation MSE {mse[precision]:.6f} "
              f"({time.perf_counter() - start:.1f} s, training loop {result.seconds:.1f} s)",
              flush=True)
    gap = abs(mse["bf16"] - mse["fp32"]) / mse["fp32"]
    within = gap <= PRECISION_TOLERANCE
    print(f"bf16 vs fp32: {gap * 100:+.2f} % apart: "
          f"{'within' if within else 'NOT within'} {PRECISION_TOLERANCE * 100:.0f} %")
    return 0 if within else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--small", action="store_true", help="CPU-sized grid and budget")
    parser.add_argument("--address", default=None,
                        help="a running Ray cluster's dashboard URL (default: start one)")
    parser.add_argument("--gpus", type=int, default=1,
                        help="logical GPUs to declare when torch sees none")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds")
    parser.add_argument("--check-precision", action="store_true",
                        help="train --variant in fp32 and in bf16 on one seed (no Ray)")
    parser.add_argument("--variant", default="baseline", help="for --check-precision")
    parser.add_argument("--lr", type=float, default=1e-3, help="for --check-precision")
    parser.add_argument("--seed", type=int, default=0, help="for --check-precision")
    args = parser.parse_args(argv)
    if args.check_precision:
        return check_precision(args.variant, args.small, args.lr, args.seed)

    import torch
    from fastapi.testclient import TestClient

    from models.data import install_offline_mnist
    from service.app import create_app
    from service.orchestration.ray_executor import RayExecutor
    from service.orchestration.ray_head import LocalRayHead
    from service.settings import Settings

    specs = study_specs(args.small)
    n_runs = sum(len(s["models"]) * len(s["datasets"]) for s in specs)
    gpus = torch.cuda.device_count() or args.gpus
    with tempfile.TemporaryDirectory(prefix="aelab-gpu-study-") as tmp:
        head = None
        address = args.address
        if address is None:
            head = LocalRayHead(state_dir=Path(tmp) / "ray", num_gpus=gpus)
            address = head.dashboard_url
        try:
            RayExecutor(address, job_env={}).wait_until_up(180)
            settings = Settings(home=Path(tmp) / "home", ray_address=address,
                                max_in_flight=max(RUNS_PER_GPU * gpus, 1),
                                dispatch_interval_s=0.5)
            install_offline_mnist(Path(settings.data_path))
            app = create_app(settings, executor_factory=RayExecutor.from_settings)
            with TestClient(app) as client, GpuSampler() as sampler:
                start = time.perf_counter()
                ids = []
                for spec in specs:
                    response = client.post(f"{API}/experiments", json=spec)
                    if response.status_code != 201:
                        print(f"refused: {response.text}", file=sys.stderr)
                        return 2
                    ids.append(response.json()["id"])
                exps = wait(client, ids, args.timeout, n_runs)
                wall = time.perf_counter() - start
                rows = [r for e in exps for r in run_rows(client, e)]
        finally:
            if head is not None:
                head.stop()

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    slots = RUNS_PER_GPU * gpus
    print(f"{n_runs} runs ({'small' if args.small else 'the study'}) on {device}, {gpus} "
          f"GPU(s), {1 / RUNS_PER_GPU:g} GPU per run:")
    print(f"{'run':<32}{'status':>10}{'epochs':>8}{'images/s':>11}{'train_s':>9}"
          f"{'search_s':>10}{'wall_s':>9}{'mse':>10}{'outside':>9}")
    for r in rows:
        print(f"{r['run']:<32}{r['status']:>10}{r['epochs']:>8}{r['images_per_s']:>11.0f}"
              f"{r['train_s']:>9.1f}{r['search_s']:>10.1f}{r['wall_s']:>9.1f}"
              f"{r['mse']:>10.5f}{r['outside'] * 100:>8.1f}%"
              + (f"  {r['error']}" if r["error"] else ""))
    for line in sampler.report():
        print(line)
    timed = [r for r in rows if not math.isnan(r["wall_s"])]
    if timed:
        walls = [r["wall_s"] for r in timed]
        print(f"per run: wall time mean {statistics.mean(walls):.1f} s (min {min(walls):.1f},"
              f" max {max(walls):.1f}); outside the training loop: mean "
              f"{statistics.mean(r['outside'] for r in timed) * 100:.1f} % of a run's wall")
    trained = sum(r["train_s"] for r in rows)
    print(f"study: {trained:.1f} s in training loops over {slots} slots × {wall:.1f} s: "
          f"{outside_fraction(trained, slots * wall) * 100:.1f} % of the slots' wall time "
          f"outside the training loop")
    print(f"total wall time {wall:.1f} s against the target of {TARGET_S:.0f} s "
          f"({'met' if wall <= TARGET_S else 'missed'})")
    failed = [r for r in rows if r["status"] != "succeeded"]
    return 1 if failed else 0


def wait(client: Any, ids: list[int], timeout: float, n_runs: int) -> list[dict[str, Any]]:
    """Poll the experiments until every run has ended, printing progress to stderr."""
    deadline = time.monotonic() + timeout
    last = -1
    while True:
        exps = [client.get(f"{API}/experiments/{i}").json() for i in ids]
        done = sum(r["status"] in ("succeeded", "failed", "cancelled")
                   for e in exps for r in e["runs"])
        if done != last:
            print(f"{done}/{n_runs} runs ended", file=sys.stderr, flush=True)
            last = done
        if done == n_runs:
            return exps
        if time.monotonic() > deadline:
            raise TimeoutError(f"{n_runs - done} runs still going after {timeout:.0f} s")
        time.sleep(1.0)


if __name__ == "__main__":
    sys.exit(main())
