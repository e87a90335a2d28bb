"""A search's samples on the database: proposing them as run rows, and pruning them.

The rows are the searcher's only state (``service.search``): each proposal rebuilds the
history of a (model, dataset) from its runs — sampled values from their run specs, the
metric from their measures, per-epoch validation MSE from their epoch rows — so a
restarted service proposes exactly the samples still missing. ``Run.sample`` is unique per
(experiment, model, dataset): a sample is never made twice.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from typing import Any, Literal

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.persistence import repository as repo
from service.persistence.tables import EpochMetric, Experiment, Measure, Run, Status, utcnow
from service.search import Sample, SearchSpec, apply, propose, prune_reason, sampled
from service.spec import ExperimentSpec
from workers.spec import RunSpec
from workers.text import first_line

log = logging.getLogger("aelab.search")

UNFINISHED = (Status.queued, Status.running)
_STATE: dict[Status, Literal["running", "complete", "pruned", "fail"]] = {
    Status.queued: "running", Status.running: "running", Status.succeeded: "complete",
    Status.pruned: "pruned", Status.failed: "fail", Status.cancelled: "fail"}


def _val_mse(session: Session, run_ids: list[int]) -> dict[int, dict[int, float]]:
    """Per run, its validation MSE by epoch."""
    found: dict[int, dict[int, float]] = defaultdict(dict)
    if run_ids:
        for run_id, epoch, value in session.execute(
                select(EpochMetric.run_id, EpochMetric.epoch, EpochMetric.val_mse)
                .where(EpochMetric.run_id.in_(run_ids))):
            found[run_id][epoch] = value
    return found


def history(session: Session, *, experiment_id: int, model: str, dataset: str,
            search: SearchSpec, trains_rate: bool) -> list[Sample]:
    """The recorded samples of (model, dataset), by index, as the rows say."""
    space = search.space_for(trains_rate)
    rows = session.execute(
        select(Run.id, Run.sample, Run.status, Run.spec,
               getattr(Measure, search.metric))
        .outerjoin(Measure, Measure.run_id == Run.id)
        .where(Run.experiment_id == experiment_id, Run.model == model,
               Run.dataset == dataset, Run.sample.is_not(None))
        .order_by(Run.sample)).all()
    pruned = _val_mse(session, [r.id for r in rows if r.status == Status.pruned])
    return [Sample(index=r.sample, values=sampled(space, r.spec), state=_STATE[r.status],
                   value=r[4], val_mse=pruned.get(r.id)) for r in rows]


def propose_for(session: Session, experiment: Experiment, spec: ExperimentSpec) -> int:
    """Add the samples (queued runs) each (model, dataset) of ``experiment`` may have now:
    up to ``num_samples`` made, at most ``max_concurrent`` unfinished; returns how many.
    A sample whose values make no valid run is recorded failed, with why."""
    search = spec.search
    assert search is not None
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])  # made, open
    for model, dataset, status, n in session.execute(
            select(Run.model, Run.dataset, Run.status, func.count())
            .where(Run.experiment_id == experiment.id, Run.sample.is_not(None))
            .group_by(Run.model, Run.dataset, Run.status)):
        counts[(model, dataset)][0] += n
        if status in UNFINISHED:
            counts[(model, dataset)][1] += n
    added = 0
    for base in spec.run_specs():
        made, unfinished = counts[(base.model, base.dataset)]
        if made >= search.num_samples or unfinished >= search.concurrency:
            continue
        trains_rate = base.recipe.trains_rate
        space = search.space_for(trains_rate)
        done = history(session, experiment_id=experiment.id, model=base.model,
                       dataset=base.dataset, search=search, trains_rate=trains_rate)
        dumped = base.model_dump(mode="json")
        while made < search.num_samples and unfinished < search.concurrency:
            values = propose(search, space, done, made)
            raw = apply(dumped, values)
            run = Run(experiment_id=experiment.id, model=base.model, dataset=base.dataset,
                      status=Status.queued, epochs_total=base.epochs, sample=made,
                      latent_dim=base.effective_latent_dim, seed=base.seed,
                      rd_lambda=base.effective_rd_lambda, spec=raw)
            try:
                run_spec = RunSpec.model_validate(raw)
            except ValidationError as exc:
                run.status, run.finished_at = Status.failed, utcnow()
                run.error = first_line(f"sample {made} {values}: no valid run: "
                                       f"{exc.errors()[0]['msg']}")
            else:
                run.spec = run_spec.model_dump(mode="json")
                run.epochs_total, run.latent_dim = run_spec.epochs, run_spec.effective_latent_dim
                run.rd_lambda = run_spec.effective_rd_lambda
                unfinished += 1
            session.add(run)
            session.flush()
            log.info("experiment %s: %s/%s sample %s: %s", experiment.id, base.model,
                     base.dataset, made, values)
            done.append(Sample(index=made, values=values, state=_STATE[run.status]))
            made += 1
            added += 1
    if added:
        session.expire(experiment, ["runs"])
        repo.refresh_experiment_status(session, experiment_id=experiment.id)
    return added


def propose_samples(session: Session) -> int:
    """:func:`propose_for` every search experiment still queued or running."""
    added = 0
    for experiment in session.scalars(
            select(Experiment).where(Experiment.status.in_(UNFINISHED))
            .order_by(Experiment.id)):
        planned = repo.planned_runs(experiment.spec)
        if planned is None:
            continue
        made = session.scalar(select(func.count()).select_from(Run).where(
            Run.experiment_id == experiment.id)) or 0
        if made >= planned:
            continue
        try:
            spec = ExperimentSpec.model_validate(experiment.spec, context={"stored": True})
        except ValidationError as exc:  # e.g. a plugin uninstalled since: nothing to do
            log.warning("experiment %s: its search cannot continue: %s", experiment.id,
                        first_line(str(exc)))
            continue
        added += propose_for(session, experiment, spec)
    return added


def _pruned_sample(session: Session, run_id: int) -> tuple[Run, SearchSpec] | None:
    """Run ``run_id`` and its experiment's search, when it is a sample of a search that
    has a pruner."""
    run = session.get(Run, run_id)
    if run is None or run.sample is None:
        return None
    raw: dict[str, Any] | None = session.scalar(
        select(Experiment.spec).where(Experiment.id == run.experiment_id))
    search = SearchSpec.model_validate((raw or {}).get("search") or {}) \
        if raw and raw.get("search") else None
    if search is None or search.pruner == "none":
        return None
    return run, search


def hopeless_reason(session: Session, *, run_id: int, epoch: int, why: str) -> str | None:
    """The reason to prune run ``run_id`` that cannot go on (``why``: e.g. its training
    loss diverged in ``epoch``) — a sample no rule would keep, as a non-finite validation
    MSE is (``search.prune_reason``) — or None when it is not a sample of a search with a
    pruner (the run then fails with its error)."""
    found = _pruned_sample(session, run_id)
    return None if found is None else f"pruned at epoch {epoch} ({found[1].pruner}): {why}"


def prune_decision(session: Session, *, run_id: int, epoch: int) -> str | None:
    """Why the search's pruner stops run ``run_id`` after ``epoch`` (just recorded), or
    None to go on (not a sample, no pruner, not at a rung, or good enough)."""
    found = _pruned_sample(session, run_id)
    if found is None:
        return None
    run, search = found
    peers = session.execute(
        select(Run.id, Run.status).where(
            Run.experiment_id == run.experiment_id, Run.model == run.model,
            Run.dataset == run.dataset, Run.sample.is_not(None), Run.id != run_id)).all()
    values = _val_mse(session, [run_id, *(p.id for p in peers)])
    return prune_reason(search.pruner, epoch, run.epochs_total, values.get(run_id, {}),
                        [values[p.id] for p in peers if p.id in values],
                        [values[p.id] for p in peers
                         if p.status == Status.succeeded and p.id in values])


def search_view(session: Session, *, experiment_id: int, spec: dict[str, Any]
                ) -> dict[str, Any] | None:
    """What a search has found so far, for the API, the CLI and the page: its metric,
    mode and searched names, every sample (run id, model, dataset, index, status, epoch,
    sampled values, metric) and the best finished one per (model, dataset) and overall.
    None for a grid experiment."""
    raw = spec.get("search")
    if not raw:
        return None
    search = SearchSpec.model_validate(raw)
    rows = session.execute(
        select(Run.id, Run.model, Run.dataset, Run.sample, Run.status, Run.epoch, Run.spec,
               getattr(Measure, search.metric))
        .outerjoin(Measure, Measure.run_id == Run.id)
        .where(Run.experiment_id == experiment_id, Run.sample.is_not(None))
        .order_by(Run.id)).all()
    samples = [{"run_id": r.id, "model": r.model, "dataset": r.dataset, "sample": r.sample,
                "status": r.status.value, "epoch": r.epoch,
                "values": sampled(search.space, r.spec),
                "metric": r[7] if r[7] is not None and math.isfinite(r[7]) else None}
               for r in rows]
    sign = 1.0 if search.mode == "max" else -1.0

    def best(of: list[dict[str, Any]]) -> dict[str, Any] | None:
        scored = [x for x in of if x["metric"] is not None and x["status"] == "succeeded"]
        return max(scored, key=lambda x: sign * x["metric"]) if scored else None

    pairs = sorted({(x["model"], x["dataset"]) for x in samples})
    return {"metric": search.metric, "mode": search.mode, "algorithm": search.algorithm,
            "pruner": search.pruner, "space": list(search.space),
            "planned": repo.planned_runs(spec), "samples": samples, "best": best(samples),
            "best_by_pair": {f"{m}/{d}": best([x for x in samples
                                               if (x["model"], x["dataset"]) == (m, d)])
                             for m, d in pairs}}
