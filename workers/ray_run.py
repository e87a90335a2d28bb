"""The run pipeline's scheduled steps on Ray Tune. Thin: Tune adapts config, resources,
reporting and checkpoints around ``models.training.train``.

- LR search ``tune``: phase 1 once (seed schedule), then ``num_samples`` trials that fork
  from its checkpoint over a log-uniform range, stopped early by ASHA.
- LR search ``range_test``: the study's sweep, run as one Tune trial (on a GPU worker).
- Final training: one Tune trial, a checkpoint per epoch, ``FailureConfig`` retries; a
  trial that loses its node resumes from its last epoch elsewhere.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray import tune

from workers.pipeline import range_test_trials
from workers.request import RunRequest
from workers.store import RunCancelled, RunStore

log = logging.getLogger("aelab.ray_run")
CHECKPOINT_FILE = "checkpoint.pt"


@dataclass
class Resources:
    gpus: float = 0.0
    cpus: float = 1.0
    max_failures: int = 3
    storage: str = field(default_factory=lambda: os.path.join(tempfile.gettempdir(),
                                                              "aelab-ray-results"))

    def tune(self) -> dict[str, float]:
        return {"cpu": self.cpus, "gpu": self.gpus}


def _device(gpus: float) -> str:
    # A logically assigned GPU with no CUDA present falls back to the CPU in training.
    return "cuda" if gpus > 0 else "cpu"


def _save(ckpt: dict[str, Any]) -> tune.Checkpoint:
    from models.training import save_checkpoint

    folder = tempfile.mkdtemp(prefix="aelab-ckpt-")
    save_checkpoint(ckpt, Path(folder) / CHECKPOINT_FILE)
    return tune.Checkpoint.from_directory(folder)


def _read(checkpoint: tune.Checkpoint) -> bytes:
    with checkpoint.as_directory() as folder:
        return (Path(folder) / CHECKPOINT_FILE).read_bytes()


def _load(checkpoint: tune.Checkpoint) -> dict[str, Any]:
    from models.training import load_checkpoint

    return load_checkpoint(_read(checkpoint))


class _Progress(tune.Callback):
    """Runs in the driver: forwards epochs to the store, stops on cancellation."""

    def __init__(self, store: RunStore, record_epochs: bool) -> None:
        self.store = store
        self.record_epochs = record_epochs
        self.cancelled = False

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles callbacks into its experiment state; the store (DB engine) stays
        # in this process.
        return {**self.__dict__, "store": None}

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        if self.record_epochs and "train_loss" in result:
            keys = ("epoch", "phase", "size", "lr", "train_loss", "val_loss", "val_mse",
                    "val_mae", "seconds", "images_per_s")
            self.store.record_epoch({k: result[k] for k in keys})
        if self.store.is_cancelled():
            self.cancelled = True
            raise RunCancelled("cancelled")


# --- trainables (run in Tune's trial actors) ------------------------------------------


def _train_trainable(config: dict[str, Any], req: RunRequest, data: Any,
                     start: bytes | None) -> None:
    from models.training import TrainingDiverged, load_checkpoint, train

    resume = tune.get_checkpoint()
    resume_from = _load(resume) if resume is not None else (
        load_checkpoint(start) if start is not None else None)
    train_config = req.train_config(config["lr"], epochs=config.get("epochs"))
    if config.get("phase1_epochs"):
        train_config.phase1_epochs = config["phase1_epochs"]
    train_config.device = _device(config["gpus"])

    def on_epoch(metrics: Any, ckpt: dict[str, Any]) -> None:
        tune.report(asdict(metrics), checkpoint=_save(ckpt))

    try:
        train(train_config, data, on_epoch=on_epoch, resume_from=resume_from)
    except TrainingDiverged as exc:
        if not config.get("search"):
            raise
        tune.report({"val_loss": math.inf, "diverged": str(exc)})  # a bad LR, not a bug


def _range_test_trainable(config: dict[str, Any], req: RunRequest, data: Any,
                          start: bytes | None) -> None:
    from models.lr_finder import lr_range_test
    from models.training import load_checkpoint

    train_config = req.train_config()
    train_config.device = _device(config["gpus"])
    result = lr_range_test(train_config, data.train,
                           resume_from=load_checkpoint(start) if start else None,
                           num_steps=config["steps"])
    tune.report({"suggestion": result.suggestion, "lrs": result.lrs, "losses": result.losses,
                 "diverged": result.diverged})


# --- steps the pipeline calls (in the run's driver) -----------------------------------


def _fit(trainable: Any, *, name: str, param_space: dict[str, Any], res: Resources,
         store: RunStore, record_epochs: bool, num_samples: int = 1,
         scheduler: Any = None, max_failures: int = 0, **params: Any) -> tune.ResultGrid:
    progress = _Progress(store, record_epochs)
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(trainable, **params), res.tune()),
        param_space=param_space,
        tune_config=tune.TuneConfig(num_samples=num_samples, scheduler=scheduler,
                                    metric="val_loss" if scheduler else None,
                                    mode="min" if scheduler else None),
        run_config=tune.RunConfig(
            name=name, storage_path=res.storage, callbacks=[progress], verbose=0,
            failure_config=tune.FailureConfig(max_failures=max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        ),
    )
    try:
        grid = tuner.fit()
    except Exception:
        if progress.cancelled:
            raise RunCancelled("cancelled") from None
        raise
    if progress.cancelled:
        raise RunCancelled("cancelled")
    return grid


class RaySteps:
    """LR search and final training for one run, on Tune. Holds the phase-1 checkpoint so
    the final training continues from it, as the study's phase 2 did."""

    def __init__(self, res: Resources) -> None:
        self.res = res
        self.phase1: bytes | None = None

    def _phase1(self, req: RunRequest, data: Any, store: RunStore) -> bytes | None:
        config = req.train_config()
        phases = config.phases()
        if config.schedule != "seed" or len(phases) < 2:
            return None
        grid = _fit(_train_trainable, name=f"{req.name}-phase1", res=self.res, store=store,
                    record_epochs=True, max_failures=self.res.max_failures,
                    param_space={"lr": phases[0].lr, "epochs": phases[0].epochs,
                                 "gpus": self.res.gpus},
                    req=req, data=data, start=None)
        result = grid[0]
        if result.error:
            raise result.error
        self.phase1 = _read(result.checkpoint)
        return self.phase1

    def search(self, req: RunRequest, data: Any, store: RunStore
               ) -> tuple[float, list[dict[str, Any]]]:
        s = req.spec["lr_search"]
        if s["method"] == "fixed":
            from workers.pipeline import local_search

            return local_search(req, data, store)
        start = self._phase1(req, data, store)
        if s["method"] == "range_test":
            grid = _fit(_range_test_trainable, name=f"{req.name}-range-test", res=self.res,
                        store=store, record_epochs=False,
                        param_space={"steps": s["range_test_steps"], "gpus": self.res.gpus},
                        req=req, data=data, start=start)
            r = grid[0]
            if r.error:
                raise r.error
            m = r.metrics
            from models.lr_finder import RangeTestResult

            result = RangeTestResult(m["lrs"], m["losses"], m["suggestion"], m["diverged"])
            return result.suggestion, range_test_trials(result)
        from ray.tune.schedulers import ASHAScheduler

        # Trials fork from the end of phase 1 (when there is one) and train `budget` more.
        base = req.train_config().phases()[0].epochs if start is not None else 0
        budget = s["budget_epochs"]
        grid = _fit(
            _train_trainable, name=f"{req.name}-lr-search", res=self.res, store=store,
            record_epochs=False, num_samples=s["num_samples"],
            scheduler=ASHAScheduler(max_t=budget, grace_period=1, reduction_factor=2),
            param_space={"lr": tune.loguniform(s["min_lr"], s["max_lr"]),
                         "epochs": base + budget, "phase1_epochs": base,
                         "gpus": self.res.gpus, "search": True},
            req=req, data=data, start=start)
        trials = []
        for r in grid:
            if r.metrics is None or "val_loss" not in r.metrics:
                continue
            history = r.metrics_dataframe
            losses = history["val_loss"].tolist() if history is not None else []
            finite = [v for v in losses if math.isfinite(v)]
            trials.append({"method": "tune", "lr": r.config["lr"],
                           "loss": min(finite) if finite else None,
                           "iterations": len(losses), "stopped_early": len(losses) < budget,
                           "chosen": False})
        ranked = [t for t in trials if t["loss"] is not None]
        if not ranked:
            raise RuntimeError("every LR-search trial diverged or failed: narrow the range")
        best = min(ranked, key=lambda t: t["loss"])
        best["chosen"] = True
        return best["lr"], trials

    def train_classifier(self, req: RunRequest, data: Any) -> tuple[bytes, float]:
        """The reference classifier, trained as a Ray task on a GPU worker."""
        from workers.pipeline import train_reference_classifier

        task = ray.remote(train_reference_classifier).options(
            num_gpus=self.res.gpus, num_cpus=self.res.cpus, name=f"{req.name}-classifier")
        return ray.get(task.remote(req, data))

    def train(self, req: RunRequest, data: Any, lr: float, store: RunStore) -> Any:
        from models.recipes import build_model
        from models.training import EpochMetrics, TrainResult, resolve_device

        grid = _fit(_train_trainable, name=f"{req.name}-train", res=self.res, store=store,
                    record_epochs=True, max_failures=self.res.max_failures,
                    param_space={"lr": lr, "gpus": self.res.gpus},
                    req=req, data=data, start=self.phase1)
        result = grid[0]
        if result.error:
            raise result.error
        ckpt = _load(result.checkpoint)
        config = req.train_config(lr)
        model = build_model(config.variant, latent_dim=config.latent_dim, pretrained=False)
        model.load_state_dict(ckpt["model"])
        model.to(resolve_device(_device(self.res.gpus))).eval()
        history = [EpochMetrics(**m) for m in ckpt["history"]]
        return TrainResult(model, history, sum(m.seconds for m in history))
