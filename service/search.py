"""Search over a run's settings: the spec's ``search`` block, its proposals and its pruner.

An experiment with ``search`` makes ``num_samples`` runs per (model, dataset), each a run
row whose run spec carries its sampled values (``Run.sample`` is its index). The database
is the record: whenever a proposal is needed the searcher is rebuilt from the rows
(Optuna's ask-and-tell on an in-memory study, :func:`propose`), so a restarted service
continues where the rows say, never repeating or losing a sample; Optuna's own storage is
never persisted.

- ``random``: sample *i* is drawn by Optuna's ``RandomSampler`` seeded with
  ``SeedSequence([search.seed, i])`` alone, so two experiments with the same seed draw the
  same samples whatever the timing.
- ``tpe``: Optuna's ``TPESampler`` (seeded the same way per sample, ``constant_liar`` so
  samples in flight are not proposed twice) over the finished samples' ``metric``.
- ``grid``: every space entry is a ``choice``; sample *i* is the *i*-th point of their
  product (``itertools.product`` order).

Pruning (:func:`prune_decision`) happens at epoch boundaries, by the driver that records
the epoch, on the samples' per-epoch validation MSE (``val_mse``, the one per-epoch
measure comparable across samples; lower is better):

- ``asha``: Ray Tune's ``AsyncHyperBandScheduler`` rule (Li et al. 2020, "A System for
  Massively Parallel Hyperparameter Tuning", MLSys), computed from the epoch rows: at a
  rung epoch (``grace_period · reduction_factor**k``: 1, 4, 16, …) a sample stops when its
  value is worse than the ``1 − 1/reduction_factor`` quantile of the values every sample
  of its (model, dataset) recorded at that epoch. A rebuilt study cannot use Optuna's
  ``SuccessiveHalvingPruner``: it keeps its rung state in trial attributes a rebuild lacks.
- ``median``: Optuna's ``MedianPruner`` on a study rebuilt from the rows.

A sample whose validation MSE is not finite (a diverged LR) is pruned at once.

Importable without Optuna: only proposing and the median pruner import it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self

from pydantic import Field, TypeAdapter, ValidationError, model_validator

from workers.measures import MEASURES, MeasureInfo
from workers.spec import CompressionOptions, LrSearch, RunSpec, _Strict

if TYPE_CHECKING:
    import optuna

Algorithm = Literal["random", "tpe", "grid"]
PrunerName = Literal["asha", "median", "none"]
Mode = Literal["min", "max"]
Number = int | float
Choice = int | float | str | bool

# The measures a search may optimise: every measure of the measures table, by name.
METRICS: dict[str, MeasureInfo] = {m.name: m for m in MEASURES}
# Ray Tune's ASHAScheduler defaults.
ASHA_GRACE_PERIOD = 1
ASHA_REDUCTION_FACTOR = 4
# Optuna's MedianPruner: prune only once this many samples completed, after this epoch.
MEDIAN_STARTUP = 3
MEDIAN_WARMUP_EPOCHS = 1


@dataclass(frozen=True)
class Searchable:
    """A run-spec field a search may sample: its name in ``search.space``, where it sits
    in the run spec, and its kind (int, float, or choice: only ``choice`` samples it)."""

    name: str
    path: tuple[str, ...]
    kind: Literal["int", "float", "choice"]
    description: str
    rate_only: bool = False  # applies to recipes trained on rate + λ·distortion only

    def field_type(self) -> TypeAdapter[Any]:
        """The field's type with its run-spec constraints (bounds, allowed values)."""
        model: Any = RunSpec
        for part in self.path[:-1]:
            model = model.model_fields[part].annotation
        info = model.model_fields[self.path[-1]]
        if not info.metadata:
            return TypeAdapter(info.annotation)
        return TypeAdapter(Annotated[info.annotation, *info.metadata])

    def get(self, spec: dict[str, Any]) -> Any:
        """The field's value in a run spec dumped to JSON."""
        value: Any = spec
        for part in self.path:
            value = value.get(part) if isinstance(value, dict) else None
        return value


# Every run-spec field a search may sample (README: "Searching a run's settings").
SEARCHABLE: dict[str, Searchable] = {s.name: s for s in (
    Searchable("latent_dim", ("latent_dim",), "int", "latent size (1..8192)"),
    Searchable("lr", ("lr_search", "lr"), "float", "the learning rate; implies "
               "lr_search.method fixed for the search's runs (0 < lr ≤ 10)"),
    Searchable("rd_lambda", ("rd_lambda",), "float", "λ of rate + λ·255²·MSE (0 < λ ≤ "
               "100); applied to recipes trained on it, the others do not sample it",
               rate_only=True),
    Searchable("bits", ("compression", "bits"), "choice", "quantiser bits per latent "
               "value (4, 6, 8 or 16)"),
    Searchable("epochs", ("epochs",), "int", "training epochs (≥ 1, at most the "
               "deployment's limit)"),
    Searchable("batch_size", ("batch_size",), "int", "batch size (2..4096)"),
    Searchable("schedule", ("schedule",), "choice", "seed or one_cycle"),
)}
# Keep the table honest: each path names a run-spec field (checked at import).
for _s in SEARCHABLE.values():
    _s.field_type()
del _s
_ = (CompressionOptions, LrSearch)  # the models SEARCHABLE's paths go through


class Distribution(_Strict):
    """One entry of ``search.space``, in Ray Tune's vocabulary: exactly one of
    ``randint: [lower, upper)`` (upper exclusive, as ``tune.randint``), ``uniform:
    [lower, upper]``, ``loguniform: [lower, upper]`` (lower > 0) or ``choice: [v, …]``."""

    randint: tuple[int, int] | None = None
    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    choice: list[Choice] | None = Field(default=None, min_length=1, max_length=256)

    @model_validator(mode="after")
    def _one(self) -> Self:
        given = [k for k in ("randint", "uniform", "loguniform", "choice")
                 if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of randint, uniform, loguniform, choice "
                             f"(given: {', '.join(given) or 'none'})")
        if self.randint is not None and not self.randint[0] < self.randint[1]:
            raise ValueError(f"randint [{self.randint[0]}, {self.randint[1]}) is empty: "
                             "lower must be below upper (upper is exclusive)")
        for name in ("uniform", "loguniform"):
            bounds = getattr(self, name)
            if bounds is not None and not bounds[0] < bounds[1]:
                raise ValueError(f"{name} bounds [{bounds[0]}, {bounds[1]}]: lower must be "
                                 "below upper")
        if self.loguniform is not None and self.loguniform[0] <= 0:
            raise ValueError("loguniform's lower bound must be > 0")
        if self.choice is not None and len({repr(v) for v in self.choice}) != len(self.choice):
            raise ValueError("choice lists a value twice")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("randint", "uniform", "loguniform", "choice")
                    if getattr(self, k) is not None)

    def endpoints(self) -> list[Any]:
        """The values a field must accept for this distribution to be valid for it."""
        if self.randint is not None:
            return [self.randint[0], self.randint[1] - 1]
        if self.choice is not None:
            return list(self.choice)
        bounds = self.uniform or self.loguniform
        assert bounds is not None
        return list(bounds)

    def grid(self) -> list[Any]:
        assert self.choice is not None
        return list(self.choice)

    def optuna(self) -> optuna.distributions.BaseDistribution:
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        if self.randint is not None:
            return IntDistribution(self.randint[0], self.randint[1] - 1)
        if self.uniform is not None:
            return FloatDistribution(*self.uniform)
        if self.loguniform is not None:
            return FloatDistribution(*self.loguniform, log=True)
        assert self.choice is not None
        return CategoricalDistribution(self.choice)

    def holds(self, value: Any) -> bool:
        """Whether ``value`` is one this distribution can draw."""
        if self.choice is not None:
            return any(value == c and type(value) is type(c) for c in self.choice)
        if self.randint is not None:
            return isinstance(value, int) and self.randint[0] <= value < self.randint[1]
        bounds = self.uniform or self.loguniform
        assert bounds is not None
        return isinstance(value, int | float) and bounds[0] <= value <= bounds[1]


_KINDS = {"int": ("randint", "choice"), "float": ("uniform", "loguniform", "choice"),
          "choice": ("choice",)}


class SearchSpec(_Strict):
    """The ``search`` block of an experiment spec."""

    algorithm: Algorithm = Field(default="random", description="random: independent "
                                 "draws; tpe: Optuna's TPE over the finished samples; "
                                 "grid: the product of the space's choices, in order")
    metric: str = Field(description="a measure of the measures table (README) the search "
                        "optimises, e.g. q_psnr")
    mode: Mode | None = Field(default=None, description="min or max; default: the way "
                              "the measure improves")
    num_samples: int = Field(default=10, ge=1, le=1000,
                             description="samples (runs) per (model, dataset)")
    max_concurrent: int | None = Field(default=None, ge=1, le=1000, description="at most "
                                       "this many unfinished samples per (model, dataset) "
                                       "(an adaptive algorithm proposes as one ends); "
                                       "default: num_samples")
    seed: int = Field(default=0, ge=0, le=2**32 - 1,
                      description="seeds the samplers: the same seed, the same samples")
    pruner: PrunerName = Field(default="none", description="asha | median | none: stops "
                               "weak samples at epoch boundaries on their validation MSE")
    space: dict[str, Distribution] = Field(min_length=1, description="searched run-spec "
                                           "fields (README) and their distributions")

    @model_validator(mode="before")
    @classmethod
    def _known(cls, data: Any) -> Any:
        # Named problems at search.<field> / search.space.<name> (pydantic's own locs).
        problems = []
        if isinstance(data, dict):
            metric = data.get("metric")
            if isinstance(metric, str) and metric not in METRICS:
                problems.append(_problem(("metric",), f"unknown measure {metric!r}; "
                                f"valid: {', '.join(METRICS)}", metric))
            space = data.get("space")
            for name, given in (space.items() if isinstance(space, dict) else ()):
                if name not in SEARCHABLE:
                    problems.append(_problem(
                        ("space", name), f"{name!r} cannot be searched; searchable: "
                        f"{', '.join(SEARCHABLE)}", given))
        if problems:
            raise _errors("SearchSpec", problems)
        return data

    @model_validator(mode="after")
    def _fits(self) -> Self:
        problems = []
        info = METRICS[self.metric]
        if self.mode is None:
            if info.better is None:
                problems.append(_problem(("mode",), f"{self.metric} has no better "
                                                  "direction: give mode (min or max)", None))
            else:
                self.mode = info.better
        if self.pruner != "none" and info.group != "quality":
            problems.append(_problem(
                ("pruner",), f"pruning compares the samples' validation MSE per epoch, which "
                f"says nothing of {self.metric} (a {info.group} measure): use pruner none",
                self.pruner))
        for name, dist in self.space.items():
            field = SEARCHABLE[name]
            if dist.kind not in _KINDS[field.kind]:
                problems.append(_problem(
                    ("space", name), f"{name} is a{'n' if field.kind == 'int' else ''} "
                    f"{field.kind} field: use {' or '.join(_KINDS[field.kind])}, not "
                    f"{dist.kind}", dist.model_dump(exclude_none=True)))
                continue
            if self.algorithm == "grid" and dist.choice is None:
                problems.append(_problem(
                    ("space", name), "a grid search takes choice entries only", dist.kind))
                continue
            for value in dist.endpoints():
                try:
                    field.field_type().validate_python(value, strict=True)
                except ValidationError as exc:
                    problems.append(_problem(
                        ("space", name), f"{value!r} is not a valid {name}: "
                        f"{exc.errors()[0]['msg']}", value))
                    break
        if self.algorithm == "grid" and not problems:
            size = self.grid_size
            if self.num_samples > size:
                problems.append(_problem(
                    ("num_samples",), f"the grid has {size} points: num_samples must be at "
                    f"most {size}", self.num_samples))
        if problems:
            raise _errors("SearchSpec", problems)
        return self

    @property
    def grid_size(self) -> int:
        return math.prod(len(d.choice or ()) for d in self.space.values())

    @property
    def concurrency(self) -> int:
        return min(self.max_concurrent or self.num_samples, self.num_samples)

    def space_for(self, trains_rate: bool) -> dict[str, Distribution]:
        """The entries sampled for a recipe (``rate_only`` ones for rate recipes only)."""
        return {n: d for n, d in self.space.items()
                if trains_rate or not SEARCHABLE[n].rate_only}

    def describe(self) -> list[dict[str, Any]]:
        """The space for a dry run: name, run-spec path, distribution and bounds."""
        return [{"name": n, "field": ".".join(SEARCHABLE[n].path), "distribution": d.kind,
                 "values": d.endpoints() if d.kind == "choice" else
                 list(getattr(d, d.kind))} for n, d in self.space.items()]


def _problem(loc: tuple[Any, ...], msg: str, given: Any) -> Any:
    """One named problem (pydantic's error at ``loc`` under the model validated)."""
    from pydantic_core import InitErrorDetails, PydanticCustomError

    return InitErrorDetails(type=PydanticCustomError("search", msg), loc=loc, input=given)


def _errors(title: str, problems: list[Any]) -> ValidationError:
    return ValidationError.from_exception_data(title, problems)


def apply(spec: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A run spec (JSON) with the sampled ``values`` set at their fields; a sampled ``lr``
    sets ``lr_search.method`` to fixed."""
    out = {**spec}
    for name, value in values.items():
        path = SEARCHABLE[name].path
        node = out
        for part in path[:-1]:
            node[part] = {**node.get(part, {})}
            node = node[part]
        node[path[-1]] = value
        if name == "lr":
            out["lr_search"] = {**out["lr_search"], "method": "fixed"}
    return out


def sampled(space: dict[str, Distribution], spec: dict[str, Any]) -> dict[str, Any]:
    """A run's sampled values, read back from its run spec (JSON)."""
    return {n: SEARCHABLE[n].get(spec) for n in space}


# --- proposals --------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One recorded sample of a (model, dataset), as the rows say."""

    index: int
    values: dict[str, Any]
    state: Literal["running", "complete", "pruned", "fail"]
    value: float | None = None  # the metric, when complete
    val_mse: dict[int, float] | None = None  # per epoch (pruned samples)


def sample_seed(seed: int, index: int) -> int:
    """The seed of sample ``index`` of a search seeded ``seed`` (numpy's SeedSequence:
    independent streams per index)."""
    import numpy as np

    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def _worst(x: float) -> float:
    return x if math.isfinite(x) else 1e300


def propose(search: SearchSpec, space: dict[str, Distribution], history: Sequence[Sample],
            index: int) -> dict[str, Any]:
    """The values of sample ``index`` given the samples recorded so far (``history``,
    by index; for ``random`` and ``grid`` only ``index`` matters)."""
    if search.algorithm == "grid":
        points = list(itertools.product(*(d.grid() for d in space.values())))
        return dict(zip(space, points[index], strict=True))
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    seed = sample_seed(search.seed, index)
    direction = "maximize" if search.mode == "max" else "minimize"
    distributions = {n: d.optuna() for n, d in space.items()}
    if search.algorithm == "random":
        study = optuna.create_study(direction=direction,
                                    sampler=optuna.samplers.RandomSampler(seed=seed))
    else:
        study = optuna.create_study(direction=direction, sampler=optuna.samplers.TPESampler(
            seed=seed, constant_liar=True, n_startup_trials=min(10, search.num_samples // 2)))
        sign = -1.0 if search.mode == "max" else 1.0  # pruned: val_mse in the study's sense
        for s in history:
            params = {n: v for n, v in s.values.items() if n in distributions}
            if set(params) != set(distributions) or not all(
                    space[n].holds(v) for n, v in params.items()):
                continue  # not a sample of this space (e.g. edited rows): nothing to learn
            state = {"running": optuna.trial.TrialState.RUNNING,
                     "complete": optuna.trial.TrialState.COMPLETE,
                     "pruned": optuna.trial.TrialState.PRUNED,
                     "fail": optuna.trial.TrialState.FAIL}[s.state]
            value = s.value if s.state == "complete" else None
            if s.state == "complete" and (value is None or not math.isfinite(value)):
                state, value = optuna.trial.TrialState.FAIL, None
            study.add_trial(optuna.trial.create_trial(
                state=state, value=value, params=params, distributions=distributions,
                intermediate_values={e: sign * _worst(v) for e, v in (s.val_mse or {}).items()}
                if s.state == "pruned" else None))
    trial = study.ask(fixed_distributions=distributions)
    return dict(trial.params)


# --- pruning -----------------------------------------------------------------------------


def asha_rungs(epochs: int) -> list[int]:
    """Rung epochs below ``epochs`` (the last epoch ends the run anyway)."""
    rungs, r = [], ASHA_GRACE_PERIOD
    while r < epochs:
        rungs.append(r)
        r *= ASHA_REDUCTION_FACTOR
    return rungs


def asha_stops(own: float, recorded: Sequence[float]) -> bool:
    """Ray Tune's ASHA cut at one rung, lower is better: stop when ``own`` is worse than
    the ``1/reduction_factor`` quantile of every value recorded at the rung (``own``
    among them; non-finite ones count as worst)."""
    import numpy as np

    if not math.isfinite(own):
        return True
    values = [_worst(v) for v in recorded]
    cutoff = float(np.percentile(values, 100 / ASHA_REDUCTION_FACTOR))
    return own > cutoff


def median_stops(own: dict[int, float], completed: Sequence[dict[int, float]],
                 epoch: int) -> bool:
    """Optuna's MedianPruner (startup ``MEDIAN_STARTUP`` completed samples, warmup
    ``MEDIAN_WARMUP_EPOCHS``) on a study rebuilt from the samples' per-epoch val_mse."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if own.get(epoch) is not None and not math.isfinite(own[epoch]):
        return True
    study = optuna.create_study(direction="minimize", pruner=optuna.pruners.MedianPruner(
        n_startup_trials=MEDIAN_STARTUP, n_warmup_steps=MEDIAN_WARMUP_EPOCHS))
    for values in completed:
        last = max(values) if values else None
        if last is None:
            continue
        study.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState.COMPLETE, value=_worst(values[last]),
            intermediate_values={e: _worst(v) for e, v in values.items()}))
    trial = study.ask()
    for e, v in sorted(own.items()):
        trial.report(_worst(v), e)
    return trial.should_prune()


def prune_reason(pruner: PrunerName, epoch: int, epochs_total: int, own: dict[int, float],
                 peers: Sequence[dict[int, float]], completed: Sequence[dict[int, float]]
                 ) -> str | None:
    """Why the sample should stop after ``epoch`` (its per-epoch val_mse ``own``; the
    other samples' of its (model, dataset) ``peers``, the completed ones ``completed``),
    or None to go on. Never at the last epoch."""
    if pruner == "none" or epoch >= epochs_total or epoch not in own:
        return None
    value = own[epoch]
    if not math.isfinite(value):
        return f"pruned at epoch {epoch} ({pruner}): val_mse is {value} (diverged)"
    if pruner == "asha":
        if epoch not in asha_rungs(epochs_total):
            return None
        recorded = [value] + [p[epoch] for p in peers if epoch in p]
        if asha_stops(value, recorded):
            return (f"pruned at epoch {epoch} (asha): val_mse {value:.4g} is not in the "
                    f"best 1/{ASHA_REDUCTION_FACTOR} of the {len(recorded)} samples that "
                    f"reached epoch {epoch}")
        return None
    if median_stops(own, completed, epoch):
        return (f"pruned at epoch {epoch} (median): val_mse {value:.4g} is worse than the "
                f"median of the completed samples at epoch {epoch}")
    return None
