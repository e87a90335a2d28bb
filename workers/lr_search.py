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
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from workers.context import RunEnv, plan
from workers.spec import RunSpec
from workers.store import LrTrial, RunStore

if TYPE_CHECKING:
    from models.data import DataSplits
    from models.lr_finder import RangeTestResult


class LrSearchUnavailable(RuntimeError):
    """The method cannot run where it was asked to (``tune`` without Ray)."""


class SearchSteps(Protocol):
    """What a method needs from the executing side (``LocalSteps`` or ``RaySteps``)."""

    kind: str  # "local" or "ray"
    env: RunEnv


@dataclass(frozen=True)
class SearchResult:
    lr: float
    trials: list[LrTrial]


@dataclass(frozen=True)
class SearchJob:
    """One search: the run, its data, the end-of-phase-1 checkpoint (None when the plan
    has a single phase), the store it reports to."""

    spec: RunSpec
    data: DataSplits
    start: bytes | None
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

    def search(self, steps: SearchSteps, job: SearchJob) -> SearchResult:
        if steps.kind == "ray":
            return self.search_ray(steps, job)
        return self.search_local(steps, job)

    @abstractmethod
    def search_local(self, steps: SearchSteps, job: SearchJob) -> SearchResult: ...

    @abstractmethod
    def search_ray(self, steps: SearchSteps, job: SearchJob) -> SearchResult: ...


class Fixed(LrSearchMethod):
    name = "fixed"
    needs_phase1 = False

    def estimate_epochs(self, spec: RunSpec, train_images: int) -> float:
        return 0.0

    def _result(self, job: SearchJob) -> SearchResult:
        lr = job.spec.fixed_lr
        return SearchResult(lr, [LrTrial("fixed", lr, None, 0, False, True)])

    def search_local(self, steps: SearchSteps, job: SearchJob) -> SearchResult:
        return self._result(job)

    def search_ray(self, steps: SearchSteps, job: SearchJob) -> SearchResult:
        return self._result(job)


def range_test_result(job: SearchJob, env: RunEnv, device: str | None = None
                      ) -> RangeTestResult:
    """The sweep itself (in-process): the plan's last phase, from ``job.start``."""
    from models.lr_finder import lr_range_test
    from models.training import load_checkpoint
    from workers.context import train_config

    config = train_config(job.spec, env, device=device)
    return lr_range_test(config, job.data.train,
                         resume_from=load_checkpoint(job.start) if job.start else None,
                         num_steps=job.spec.lr_search.range_test_steps)


class RangeTest(LrSearchMethod):
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

    def search_local(self, steps: SearchSteps, job: SearchJob) -> SearchResult:
        r = range_test_result(job, steps.env)
        return self.trials(r.lrs, r.losses, r.suggestion, r.diverged)

    def search_ray(self, steps: SearchSteps, job: SearchJob) -> SearchResult:
        from workers.ray_run import RaySteps

        assert isinstance(steps, RaySteps)
        m = steps.range_test(job)
        return self.trials(m["lrs"], m["losses"], m["suggestion"], m["diverged"])


class Tune(LrSearchMethod):
    name = "tune"
    needs_phase1 = True

    def estimate_epochs(self, spec: RunSpec, train_images: int) -> float:
        return float(spec.lr_search.num_samples * trial_epochs(spec))

    def search_local(self, steps: SearchSteps, job: SearchJob) -> SearchResult:
        raise LrSearchUnavailable("lr_search method 'tune' needs a Ray cluster: submit the "
                                  "run to the service, or use fixed or range_test locally")

    def search_ray(self, steps: SearchSteps, job: SearchJob) -> SearchResult:
        from workers.ray_run import RaySteps

        assert isinstance(steps, RaySteps)
        budget = trial_epochs(job.spec)
        trials = []
        for lr, losses in steps.tune_trials(job, budget):
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
