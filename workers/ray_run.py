"""The pipeline's scheduled steps on Ray Tune. Thin: Tune adapts resources, reporting,
checkpoints and retries around ``models.training.train``; every trial trains a slice of
the run's one plan (``workers.context.plan``):

- phase 1: the plan stopped after phase 1 (one trial);
- a ``tune`` search trial: the plan resumed from the end of phase 1 with the trial's LR,
  stopped ``min(budget, phase-2 epochs)`` epochs later (ASHA may stop it sooner);
- ``range_test``: the study's sweep from the end of phase 1 (one trial);
- final training: the plan resumed from the end of phase 1 with the chosen LR, to the
  end; a checkpoint per epoch and ``FailureConfig`` retries, so a trial that loses its
  node resumes from its last epoch elsewhere.

Trial folders live under ``env.tune_storage / env.storage_key`` (one folder per run).
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray
from ray import tune

from workers.context import RunEnv, train_config
from workers.lr_search import SearchJob, phase1_epochs
from workers.spec import RunSpec
from workers.store import RunCancelled, RunStore, StaleAttempt

if TYPE_CHECKING:
    from models.data import DataSplits
    from models.training import TrainResult

log = logging.getLogger("aelab.ray_run")


class ResourcesUnavailable(RuntimeError):
    """The run asks for more than any node of the cluster has."""
CHECKPOINT_FILE = "checkpoint.pt"


def _read(checkpoint: tune.Checkpoint) -> bytes:
    with checkpoint.as_directory() as folder:
        return (Path(folder) / CHECKPOINT_FILE).read_bytes()


class _Progress(tune.Callback):
    """Runs in the driver: forwards epochs to the store; stops the Tune run when the run
    was cancelled or this driver's attempt was replaced (``stop``: why)."""

    def __init__(self, store: RunStore, record_epochs: bool) -> None:
        self.store = store
        self.record_epochs = record_epochs
        self.stop: RunCancelled | StaleAttempt | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles callbacks into its experiment state; the store stays here.
        return {**self.__dict__, "store": None}

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        try:
            if self.record_epochs and "train_loss" in result:
                from models.plan import EpochMetrics

                fields = EpochMetrics.__dataclass_fields__
                self.store.record_epoch(EpochMetrics(**{k: result[k] for k in fields}))
            if self.store.is_cancelled():
                raise RunCancelled("cancelled")
        except (RunCancelled, StaleAttempt) as exc:
            self.stop = exc
            raise


# --- trainables (run in Tune's trial actors) ------------------------------------------


def _plan_trainable(config: dict[str, Any], spec: RunSpec, env: RunEnv, data: DataSplits,
                    start: bytes | None) -> None:
    """Train a slice of the plan: LR ``config["lr"]``, up to ``config["stop_after"]``."""
    from models.plan import format_epoch
    from models.training import TrainingDiverged, load_checkpoint, save_checkpoint, train

    resume = tune.get_checkpoint()
    if resume is not None:  # a retry of this trial: continue from its last epoch
        resume_from = load_checkpoint(_read(resume))
    else:
        resume_from = load_checkpoint(start) if start is not None else None

    def on_epoch(metrics: Any, checkpoint: dict[str, Any]) -> None:
        prefix = f"lr-search trial, lr {config['lr']:.3g}: " if config["search"] else ""
        print(prefix + format_epoch(metrics, spec.epochs), flush=True)  # the run's job log
        if config["search"]:  # a search trial is scored, never resumed: no checkpoint
            tune.report(asdict(metrics))
            return
        # report() persists the checkpoint to the run's storage before it returns.
        with tempfile.TemporaryDirectory(prefix="aelab-ckpt-") as folder:
            save_checkpoint(checkpoint, Path(folder) / CHECKPOINT_FILE)
            tune.report(asdict(metrics), checkpoint=tune.Checkpoint.from_directory(folder))

    try:
        train(train_config(spec, env, config["lr"], config["device"]), data,
              on_epoch=on_epoch, resume_from=resume_from, stop_after=config["stop_after"])
    except TrainingDiverged as exc:
        if not config["search"]:
            raise
        tune.report({"val_loss": math.inf, "diverged": str(exc)})  # a bad LR, not a bug


def _range_test_trainable(config: dict[str, Any], spec: RunSpec, env: RunEnv,
                          data: DataSplits, start: bytes | None) -> None:
    from workers.lr_search import range_test_result

    r = range_test_result(SearchJob(spec, data, start, store=None),  # type: ignore[arg-type]
                          env, config["device"])
    tune.report({"suggestion": r.suggestion, "lrs": r.lrs, "losses": r.losses,
                 "diverged": r.diverged})


# --- the steps (called in the run's driver) -------------------------------------------


class RaySteps:
    """The scheduled steps of one run on Ray Tune, with the run's trial resources."""

    kind = "ray"

    def __init__(self, env: RunEnv, *, gpus: float, cpus: float) -> None:
        self.env = env
        self.gpus = gpus
        self.cpus = cpus

    def check(self, spec: RunSpec) -> None:
        """Refuse a run no node of this cluster can hold (it would wait forever)."""
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        for name, asked, field in (("CPU", self.cpus, "cpus_per_run"),
                                   ("GPU", self.gpus, "gpus_per_run")):
            most = max((r.get(name, 0.0) for r in nodes), default=0.0)
            if asked > most:
                raise ResourcesUnavailable(
                    f"resources.{field} {asked:g} exceeds every node of this Ray cluster "
                    f"(at most {most:g} {name}s on one node): lower it or add a node")

    def finish(self) -> None:
        """Remove the run's trial folders: the run's outcome is recorded, and a new
        attempt starts from scratch (DELETE removes what a killed driver left)."""
        from fsspec.core import url_to_fs

        fs, root = url_to_fs(self.env.tune_storage)
        path = f"{root.rstrip('/')}/{self.env.storage_key}"
        try:
            if fs.exists(path):
                fs.rm(path, recursive=True)
        except OSError as exc:
            log.warning("could not remove the trial folder %s: %s", path, exc)

    @property
    def device(self) -> str:
        # A logically assigned GPU with no CUDA present falls back to the CPU in training.
        return "cuda" if self.gpus > 0 else "cpu"

    def _fit(self, trainable: Any, *, step: str, param_space: dict[str, Any],
             store: RunStore | None, record_epochs: bool, num_samples: int = 1,
             scheduler: Any = None, max_failures: int = 0, **params: Any) -> tune.ResultGrid:
        callbacks = [_Progress(store, record_epochs)] if store is not None else []
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(trainable, **params),
                                {"cpu": self.cpus, "gpu": self.gpus}),
            param_space={**param_space, "device": self.device},
            tune_config=tune.TuneConfig(num_samples=num_samples, scheduler=scheduler,
                                        metric="val_loss" if scheduler else None,
                                        mode="min" if scheduler else None),
            run_config=tune.RunConfig(
                name=step, storage_path=f"{self.env.tune_storage}/{self.env.storage_key}",
                callbacks=callbacks, verbose=0,
                failure_config=tune.FailureConfig(max_failures=max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            ),
        )
        try:
            grid = tuner.fit()
        except Exception:
            if callbacks and callbacks[0].stop is not None:
                raise callbacks[0].stop from None
            raise
        if callbacks and callbacks[0].stop is not None:
            raise callbacks[0].stop
        return grid

    def _one(self, grid: tune.ResultGrid) -> Any:
        result = grid[0]
        if result.error:
            raise result.error
        return result

    def phase1(self, spec: RunSpec, data: DataSplits, store: RunStore) -> bytes:
        grid = self._fit(_plan_trainable, step="phase1", store=store, record_epochs=True,
                         max_failures=self.env.max_trial_failures,
                         param_space={"lr": spec.fixed_lr, "search": False,
                                      "stop_after": phase1_epochs(spec)},
                         spec=spec, env=self.env, data=data, start=None)
        return _read(self._one(grid).checkpoint)

    def tune_trials(self, job: SearchJob, budget: int) -> list[tuple[float, list[float]]]:
        """Run the ``tune`` method's trials: (lr, validation loss per epoch) each."""
        from ray.tune.schedulers import ASHAScheduler

        s = job.spec.lr_search
        grid = self._fit(
            _plan_trainable, step="lr_search", store=job.store, record_epochs=False,
            num_samples=s.num_samples,
            scheduler=ASHAScheduler(max_t=budget, grace_period=1, reduction_factor=2),
            param_space={"lr": tune.loguniform(s.min_lr, s.max_lr), "search": True,
                         "stop_after": phase1_epochs(job.spec) + budget},
            spec=job.spec, env=self.env, data=job.data, start=job.start)
        out = []
        for r in grid:
            history = r.metrics_dataframe
            losses = (history["val_loss"].tolist()
                      if history is not None and "val_loss" in history else [])
            out.append((float(r.config["lr"]), [float(v) for v in losses]))
        return out

    def range_test(self, job: SearchJob) -> dict[str, Any]:
        grid = self._fit(_range_test_trainable, step="range_test", store=job.store,
                         record_epochs=False, param_space={},
                         spec=job.spec, env=self.env, data=job.data, start=job.start)
        return self._one(grid).metrics

    def train(self, spec: RunSpec, data: DataSplits, lr: float, start: bytes | None,
              store: RunStore) -> TrainResult:
        from models.plan import EpochMetrics
        from models.recipes import build_model
        from models.training import TrainResult, load_checkpoint, resolve_device

        grid = self._fit(_plan_trainable, step="train", store=store, record_epochs=True,
                         max_failures=self.env.max_trial_failures,
                         param_space={"lr": lr, "search": False, "stop_after": None},
                         spec=spec, env=self.env, data=data, start=start)
        checkpoint = load_checkpoint(_read(self._one(grid).checkpoint))
        model = build_model(spec.model, latent_dim=spec.latent_dim, pretrained=False)
        model.load_state_dict(checkpoint["model"])
        model.to(resolve_device(self.device)).eval()
        history = [EpochMetrics(**m) for m in checkpoint["history"]]
        return TrainResult(model, history, sum(m.seconds for m in history))

    def train_classifier(self, spec: RunSpec, data: DataSplits) -> tuple[bytes, float]:
        """The reference classifier, trained as a Ray task with the run's resources."""
        from workers.pipeline import train_classifier_blob

        task = ray.remote(train_classifier_blob).options(
            num_gpus=self.gpus, num_cpus=self.cpus, name=f"{spec.label()}-classifier")
        return ray.get(task.remote(spec, self.env, data, self.device))
