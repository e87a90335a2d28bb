"""LR-search methods, one registry: each owns its local and its Ray execution, its
dry-run estimate and its trial rows.

- ``fixed``: the spec's LR, else the study's hand-picked one. No phase 1 of its own: the
  final training trains the whole plan.
- ``range_test``: the study's LR finder (fastai ``lr_find``), started from the end of
  phase 1 as the study did before its phase 2; one sweep, weights restored.
- ``tune``: Ray Tune trials over a log-uniform range, each continuing the run's plan from
  the end of phase 1 for ``min(budget_epochs, phase-2 epochs)`` epochs on the final plan's
  phase-2 schedule, stopped early by ASHA; needs a Ray cluster.

Torch and Ray are imported inside methods only: the API reads the estimates.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from workers.context import RunEnv, plan
from workers.spec import RunSpec
from workers.store import LrTrial, RunStore


class LrSearchUnavailable(RuntimeError):
    """The method cannot run where it was asked to (``tune`` without Ray)."""


class SearchSteps(Protocol):
    """What a method needs from the executing side (``workers.pipeline.Steps``)."""

    kind: str  # "local" or "ray"
    env: RunEnv

    def range_test(self, spec: RunSpec, start: str | None) -> Any: ...

    def tune_trials(self, spec: RunSpec, start: str | None, budget: int
                    ) -> list[tuple[float, list[float]]]: ...


@dataclass(frozen=True)
class SearchResult:
    lr: float
    trials: list[LrTrial]


@dataclass(frozen=True)
class SearchJob:
    """One search: the run, the key of its end-of-phase-1 checkpoint (None when the plan
    has a single phase), the store it reports to."""

    spec: RunSpec
    start: str | None
    store: RunStore


def phase1_epochs(spec: RunSpec) -> int:
    """Epochs of the plan before the searched phase (0 with a single-phase plan)."""
    phases = plan(spec)
    return sum(p.epochs for p in phases[:-1])


def trial_epochs(spec: RunSpec) -> int:
    """Epochs one Tune trial trains: ``min(budget_epochs, epochs of the last phase)``."""
    return min(spec.lr_search.budget_epochs, plan(spec)[-1].epochs)


class LrSearchMethod(ABC):
    name: ClassVar[str]
    needs_phase1: ClassVar[bool]  # searches from the end of phase 1

    @abstractmethod
    def estimate_epochs(self, spec: RunSpec, train_images: int) -> float:
        """Training epochs' worth of images the search processes (dry-run estimate)."""

    @abstractmethod
    def search(self, steps: SearchSteps, job: SearchJob) -> SearchResult:
        """Choose the LR on ``steps`` (in-process, or on the Ray cluster)."""


class Fixed(LrSearchMethod):
    name = "fixed"
    needs_phase1 = False

    def estimate_epochs(self, spec: RunSpec, train_images: int) -> float:
        return 0.0

    def search(self, steps: SearchSteps, job: SearchJob) -> SearchResult:
        lr = job.spec.fixed_lr
        return SearchResult(lr, [LrTrial("fixed", lr, None, 0, False, True)])


class RangeTest(LrSearchMethod):
    """The sweep runs where the run's model is: in-process, or on its warm runner."""

    name = "range_test"
    needs_phase1 = True

    def estimate_epochs(self, spec: RunSpec, train_images: int) -> float:
        return spec.lr_search.range_test_steps * spec.batch_size / max(train_images, 1)

    @staticmethod
    def trials(lrs: list[float], losses: list[float], suggestion: float,
               diverged: bool) -> SearchResult:
        """Every sweep point as a trial row, the one nearest the suggestion chosen."""
        if not lrs or not math.isfinite(suggestion):
            raise RuntimeError("the LR range test produced no finite loss: the model "
                               "diverged at the smallest LR")
        best = min(range(len(lrs)), key=lambda i: abs(math.log(lrs[i] / suggestion)))
        rows = [LrTrial("range_test", lr, loss if math.isfinite(loss) else None, i + 1,
                        diverged and i == len(lrs) - 1, i == best)
                for i, (lr, loss) in enumerate(zip(lrs, losses, strict=True))]
        return SearchResult(suggestion, rows)

    def search(self, steps: SearchSteps, job: SearchJob) -> SearchResult:
        r = steps.range_test(job.spec, job.start)
        return self.trials(r.lrs, r.losses, r.suggestion, r.diverged)


class Tune(LrSearchMethod):
    """Ray Tune trials, each continuing the plan from the end of phase 1 with its LR for
    ``min(budget, phase-2 epochs)`` epochs under ASHA (see :func:`run_tune_trials`)."""

    name = "tune"
    needs_phase1 = True

    def estimate_epochs(self, spec: RunSpec, train_images: int) -> float:
        return float(spec.lr_search.num_samples * trial_epochs(spec))

    def search(self, steps: SearchSteps, job: SearchJob) -> SearchResult:
        if steps.kind != "ray":
            raise LrSearchUnavailable("lr_search method 'tune' needs a Ray cluster: submit "
                                      "the run to the service, or use fixed or range_test "
                                      "locally")
        budget = trial_epochs(job.spec)
        trials = []
        for lr, losses in steps.tune_trials(job.spec, job.start, budget):
            finite = [v for v in losses if math.isfinite(v)]
            trials.append(LrTrial("tune", lr, min(finite) if finite else None, len(losses),
                                  len(losses) < budget or len(finite) < len(losses), False))
        ranked = [t for t in trials if t.loss is not None]
        if not ranked:
            s = job.spec.lr_search
            raise RuntimeError(f"all {len(trials)} LR-search trials diverged in "
                               f"[{s.min_lr:g}, {s.max_lr:g}]: lower max_lr")
        best = min(ranked, key=lambda t: t.loss)  # type: ignore[arg-type, return-value]
        rows = [LrTrial(t.method, t.lr, t.loss, t.iterations, t.stopped_early, t is best)
                for t in trials]
        return SearchResult(best.lr, rows)


def _tune_trial(config: dict[str, Any], spec: RunSpec, env: RunEnv,
                start: str | None) -> None:
    """One Tune trial (in a Tune actor): the plan resumed from the end of phase 1 (read
    from the run's checkpoint storage) with the trial's LR, up to ``stop_after``;
    reports the validation loss of each epoch. A diverging LR scores infinity."""

    from ray import tune

    from models.plan import format_epoch
    from models.training import TrainingDiverged, load_checkpoint, train
    from workers.checkpoints import CheckpointStorage
    from workers.context import load_data, train_config
    from workers.priority import yield_cpu

    yield_cpu(env.niceness)
    blob = CheckpointStorage(env).read_step(start) if start else None

    def on_epoch(metrics: Any, checkpoint: dict[str, Any]) -> None:
        print(f"lr-search trial, lr {config['lr']:.3g}: {format_epoch(metrics, spec.epochs)}",
              flush=True)
        tune.report({"val_loss": metrics.val_loss, "epoch": metrics.epoch})

    try:
        train(train_config(spec, env, config["lr"], config["device"]), load_data(spec, env),
              on_epoch=on_epoch, resume_from=load_checkpoint(blob) if blob else None,
              stop_after=config["stop_after"])
    except TrainingDiverged as exc:
        tune.report({"val_loss": math.inf, "diverged": str(exc)})


def run_tune_trials(spec: RunSpec, env: RunEnv, start: str | None, budget: int, *,
                    gpus: float, cpus: float) -> list[tuple[float, list[float]]]:
    """The ``tune`` method's trials on Ray Tune (call from a Ray driver): ``num_samples``
    log-uniform LRs in [min_lr, max_lr], each a Tune trial with the run's resources, ASHA
    (grace 1 epoch, reduction 2) stopping the worse early; trial actors are reused across
    samples. The LRs are drawn from the run's seed, so a run's trials repeat with it.
    Returns (lr, validation loss per epoch) per trial."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    s = spec.lr_search
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(_tune_trial, spec=spec, env=env,
                                                 start=start), {"cpu": cpus, "gpu": gpus}),
        param_space={"lr": tune.loguniform(s.min_lr, s.max_lr),
                     "stop_after": phase1_epochs(spec) + budget,
                     "device": "cuda" if gpus > 0 else "cpu"},
        tune_config=tune.TuneConfig(num_samples=s.num_samples, metric="val_loss", mode="min",
                                    reuse_actors=True,
                                    search_alg=BasicVariantGenerator(random_state=spec.seed),
                                    scheduler=ASHAScheduler(max_t=budget, grace_period=1,
                                                            reduction_factor=2)),
        run_config=tune.RunConfig(name="lr_search", verbose=0,
                                  storage_path=f"{env.tune_storage}/{env.storage_key}"),
    )
    out = []
    for result in tuner.fit():
        history = result.metrics_dataframe
        losses = (history["val_loss"].tolist()
                  if history is not None and "val_loss" in history else [])
        out.append((float(result.config["lr"]), [float(v) for v in losses]))
    return out


METHODS: dict[str, LrSearchMethod] = {m.name: m for m in (Fixed(), RangeTest(), Tune())}


def get_method(name: str) -> LrSearchMethod:
    try:
        return METHODS[name]
    except KeyError:
        raise KeyError(f"unknown lr_search method {name!r}; valid: {', '.join(METHODS)}"
                       ) from None


def estimate(spec: RunSpec, train_images: int) -> dict[str, Any]:
    """Epochs a run trains and searches: the dry-run estimate of one run."""
    return {"train_epochs": spec.epochs,
            "lr_search_epochs": get_method(spec.lr_search.method).estimate_epochs(
                spec, train_images)}
