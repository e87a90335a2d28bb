"""An experiment's results table: per run, or aggregated over seeds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from models.study import source
from service.client.states import Status
from service.results.aggregate import aggregate
from service.results.columns import aggregate_columns, run_columns
from service.results.expect import experiment_verdict
from service.results.rows import rows
from service.spec import ExperimentSpec, Unmeasured, unmeasured

if TYPE_CHECKING:
    from service.persistence.tables import CodecResult, Measure, Run, SizeMeasure


@dataclass
class Table:
    """A results table and what its Markdown shows beyond the study's columns."""

    columns: list[str]
    rows: list[dict[str, Any]]
    aggregate: str | None = None  # "seed": one row per (model, dataset, latent size)
    reference: str | None = None  # the study's source, when the spec names it
    expect: str | None = None  # the experiment's verdict: PASSED, REGRESSED or None
    sweep: bool = False  # latent sizes or seeds vary: per-run rows say which
    notes: list[str] = field(default_factory=list)  # measures it cannot have, and why


def parse_spec(raw: dict[str, Any] | None) -> ExperimentSpec | None:
    """The stored experiment spec, or None where an old one no longer validates."""
    try:
        return ExperimentSpec.model_validate(raw or {}, context={"stored": True})
    except ValidationError:
        return None


def unmeasured_on(dataset: str, spec: ExperimentSpec | None) -> list[Unmeasured]:
    """The measures the runs of ``spec`` on ``dataset`` cannot have, and why
    (:func:`service.spec.unmeasured` under its data.crop, classifier and test limit; a
    spec that no longer validates: only what the dataset alone says)."""
    if spec is None:
        return unmeasured(dataset, crop=None)
    return unmeasured(dataset, crop=spec.data.crop, classifier=spec.classifier.enabled,
                      test_limit=spec.data.test_limit)


def build(pairs: Sequence[tuple[Run, Measure | None]], experiment: str = "",
          spec: ExperimentSpec | None = None, aggregate_by: str | None = None,
          codecs: Sequence[tuple[Run, CodecResult]] = (),
          sizes: Sequence[tuple[Run, SizeMeasure]] | None = None) -> Table:
    """The results table of an experiment's runs: per run (each followed by its matched
    codec rows and, given ``sizes``, its rows at ``evaluation.sizes``), or per group of
    seeds (model rows only)."""
    per_run = rows(pairs, experiment, spec, codecs, sizes)
    # A pruned sample has no measures by design: not a result the verdict waits for.
    bounded = [r.get("expect") for r in per_run if r["kind"] == "model"
               and r.get("status") != Status.pruned.value
               and spec is not None and spec.bounds(r["model"], r["dataset"])]
    expect = experiment_verdict(bounded, len(bounded)) if spec and spec.expect else None
    reference = source() if spec is not None and spec.reference == "study" else None
    sweep = spec is not None and (len(spec.latent_sizes) > 1 or len(spec.seed_values) > 1)
    notes = [u.note(d) for d in dict.fromkeys(run.dataset for run, _ in pairs)
             for u in unmeasured_on(d, spec)]
    if aggregate_by == "seed":
        return Table(aggregate_columns(spec), aggregate(per_run, spec), "seed", reference,
                     expect, sweep, notes)
    sized = bool(per_run) and "eval_size" in per_run[0]
    return Table(run_columns(spec, sized), per_run, None, reference, expect, sweep, notes)
