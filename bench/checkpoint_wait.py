"""How long the training thread waits between epochs for the durable checkpoint.

A warm runner's step (``LocalSteps(persist=True)``) writes every epoch's checkpoint to the
run's storage and records the epoch. Before issue 28 that happened on the training thread
(serialise, write, record); now the training thread only takes a CPU snapshot and hands
it to a background writer (``workers.checkpoints.CheckpointWriter``), waiting only when
the previous epoch's write and record are not done yet.

    python bench/checkpoint_wait.py                         # baseline, synthetic data
    python bench/checkpoint_wait.py --record-ms 50 --epochs 6 --variants baseline

Prints, per variant, the checkpoint's size and the training thread's wait per epoch (the
time inside the epoch callback: median and max over epochs 2..N) for both ways, with a
store whose ``record_epoch`` takes ``--record-ms`` (a database write); the wall time of
the whole step too. CUDA is used when present.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from typing import Any

import models.training
from models.plan import EpochMetrics
from models.training import save_checkpoint
from workers.context import RunEnv, load_data
from workers.pipeline import LocalSteps, check_cancelled
from workers.spec import RunSpec
from workers.store import MemoryStore

LR = 1e-3


class SlowStore(MemoryStore):
    def __init__(self, record_s: float) -> None:
        super().__init__()
        self.record_s = record_s

    def record_epoch(self, metrics: EpochMetrics) -> None:
        time.sleep(self.record_s)
        super().record_epoch(metrics)


def timed_train(waits: list[float], synchronous: LocalSteps | None) -> Any:
    """``models.training.train`` timing each epoch callback; with ``synchronous``, the
    callback is the one before issue 28 (serialise, write, record on this thread)."""
    train = models.training.train

    def timed(config: Any, data: Any, *, on_epoch: Any, **kwargs: Any) -> Any:
        def each(metrics: EpochMetrics, checkpoint: dict[str, Any]) -> None:
            start = time.perf_counter()
            if synchronous is None:
                on_epoch(metrics, checkpoint)
            else:
                assert synchronous.storage is not None and synchronous.store is not None
                synchronous.storage.write("train-progress", save_checkpoint(checkpoint))
                synchronous.store.record_epoch(metrics)
                check_cancelled(synchronous.store)
            waits.append(time.perf_counter() - start)
        return train(config, data, on_epoch=each, **kwargs)

    return timed


def measure(variant: str, epochs: int, record_s: float, train_limit: int,
            synchronous: bool) -> tuple[list[float], float, int]:
    spec = RunSpec(model=variant, dataset="synthetic", epochs=epochs, batch_size=32,
                   lr_search={"method": "fixed"},
                   data={"train_limit": train_limit, "test_limit": 64},
                   classifier={"enabled": False}, pretrained=False,
                   resources={"gpus_per_run": 0, "cpus_per_run": 1})
    with tempfile.TemporaryDirectory() as root:
        env = RunEnv(data_root="/unused", weights_dir="/unused", allow_download=False,
                     tune_storage=root)
        steps = LocalSteps(env, persist=True)
        steps.open(spec, SlowStore(record_s))
        steps.data = load_data(spec, env)
        waits: list[float] = []
        original = models.training.train
        models.training.train = timed_train(waits, steps if synchronous else None)
        try:
            start = time.perf_counter()
            steps.train(spec, LR, None)
            wall = time.perf_counter() - start
        finally:
            models.training.train = original
        assert steps.storage is not None
        size = len(steps.storage.read("train-progress") or b"")
    return waits, wall, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["baseline"])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--record-ms", type=float, default=20.0)
    parser.add_argument("--train-limit", type=int, default=256)
    args = parser.parse_args()
    for variant in args.variants:
        for label, synchronous in (("before: on the training thread", True),
                                   ("now: background writer", False)):
            waits, wall, size = measure(variant, args.epochs, args.record_ms / 1000,
                                        args.train_limit, synchronous)
            later = waits[1:] or waits  # epoch 1 has no write in flight before it
            print(f"{variant:12s} {label:32s} checkpoint {size / 1e6:6.1f} MB  wait per "
                  f"epoch: median {statistics.median(later) * 1000:7.1f} ms, max "
                  f"{max(later) * 1000:7.1f} ms  step wall {wall:6.2f} s", flush=True)


if __name__ == "__main__":
    main()
