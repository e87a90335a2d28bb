"""Rows → response bodies (links included)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from service.client.schemas import API_PREFIX as API
from service.client.schemas import (
    ArtifactOut,
    AttemptOut,
    EpochOut,
    ExperimentItem,
    ExperimentOut,
    LrTrialOut,
    RunDetail,
    RunItem,
    RunSummary,
)
from service.orchestration.ray_executor import ray_job_url
from service.persistence.tables import Measure, Run
from workers.measures import RunMeasures, SizeMeasures


def _run_links(run: Any, dashboard: str | None) -> dict[str, str]:
    links = {"self": f"{API}/runs/{run.id}", "samples": f"{API}/runs/{run.id}/samples.png",
             "logs": f"{API}/runs/{run.id}/logs", "page": f"/runs/{run.id}"}
    if (job := ray_job_url(dashboard, run.ray_job_id)) is not None:
        links["ray_job"] = job
    return links


def _summary_fields(run: Any, dashboard: str | None) -> dict[str, Any]:
    return dict(
        id=run.id, model=run.model, dataset=run.dataset, rd_lambda=run.rd_lambda,
        status=run.status, phase=run.phase,
        epoch=run.epoch, epochs_total=run.epochs_total,
        progress=round(min(run.epoch / run.epochs_total, 1.0), 4) if run.epochs_total else 0.0,
        lr=run.lr, attempt=run.attempt, error=run.error, ray_job_id=run.ray_job_id,
        created_at=run.created_at, started_at=run.started_at, finished_at=run.finished_at,
        links=_run_links(run, dashboard),
    )


def run_summary(run: Any, dashboard: str | None = None) -> RunSummary:
    """A run's status and progress, with its links (its Ray job's page when known)."""
    return RunSummary(**_summary_fields(run, dashboard))


def run_item(run: Run, measures: Measure | None, experiment_name: str,
             dashboard: str | None = None) -> RunItem:
    """A run in a list across experiments (GET /runs)."""
    return RunItem(**_summary_fields(run, dashboard), experiment_id=run.experiment_id,
                   experiment_name=experiment_name, latent_dim=run.latent_dim,
                   measures=run_measures(measures))


def _links(experiment: Any, dashboard: str | None) -> dict[str, str]:
    links = {
        "self": f"{API}/experiments/{experiment.id}",
        "results": f"{API}/experiments/{experiment.id}/results",
        "rate_distortion": f"{API}/experiments/{experiment.id}/rate_distortion",
        "cancel": f"{API}/experiments/{experiment.id}/cancel",
    }
    if dashboard:
        links["ray_dashboard"] = f"{dashboard.rstrip('/')}/#/jobs"
    return links


def _experiment_fields(experiment: Any, dashboard: str | None) -> dict[str, Any]:
    return {"id": experiment.id, "name": experiment.name, "status": experiment.status,
            "error": experiment.error, "created_at": experiment.created_at,
            "started_at": experiment.started_at, "finished_at": experiment.finished_at,
            "links": _links(experiment, dashboard)}


def experiment_item(experiment: Any, counts: dict[str, int],
                    dashboard: str | None = None) -> ExperimentItem:
    return ExperimentItem(**_experiment_fields(experiment, dashboard), runs=counts)


def experiment_out(experiment: Any, dashboard: str | None = None,
                   runs: Sequence[Any] | None = None) -> ExperimentOut:
    """An experiment (a row or an object with the summary columns) with its runs'
    summaries: ``runs`` (rows), or the object's ``runs`` relationship."""
    return ExperimentOut(**_experiment_fields(experiment, dashboard),
                         runs=[run_summary(r, dashboard)
                               for r in (experiment.runs if runs is None else runs)])


def run_measures(m: Measure | None) -> RunMeasures | None:
    """A run's stored measures as the contract has them (None before evaluation)."""
    return None if m is None else RunMeasures.model_validate(m)


def run_detail(run: Run, dashboard: str | None = None) -> RunDetail:
    summary = run_summary(run, dashboard)
    return RunDetail(
        **summary.model_dump(), experiment_id=run.experiment_id, spec=run.spec,
        attempts=[AttemptOut.model_validate(a) for a in run.attempts],
        lr_trials=[LrTrialOut.model_validate(t) for t in run.lr_trials],
        epochs=[EpochOut.model_validate(e) for e in run.epochs],
        measures=run_measures(run.measures),
        size_measures=[SizeMeasures.model_validate(m) for m in run.size_measures],
        artifacts=[ArtifactOut(name=a.name, kind=a.kind, content_type=a.content_type,
                               size=a.size, checksum=a.checksum, created_at=a.created_at,
                               url=f"{API}/runs/{run.id}/artifacts/{a.name}")
                   for a in run.artifacts],
    )
