"""/experiments: create, follow, cancel, delete, results."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Header, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse
from sqlalchemy.exc import IntegrityError

from models.catalog import DATASETS
from service import repository as repo
from service import results as table
from service.api.deps import ArtifactsDep, ReadAccess, SessionsDep, SettingsDep, WriteAccess
from service.api.schemas import DryRun, ExperimentOut, ExperimentPage
from service.api.views import experiment_item, experiment_out
from service.db import transaction
from service.settings import Settings
from service.spec import ExperimentSpec
from service.tables import Status

router = APIRouter(prefix="/experiments", tags=["experiments"])


def _check_limits(spec: ExperimentSpec, settings: Settings) -> None:
    errors = []
    runs = len(spec.grid())
    if runs > settings.max_runs_per_experiment:
        errors.append({"type": "too_many_runs", "loc": ("body", "models"),
                       "msg": f"{runs} runs (models × datasets) exceed the limit of "
                              f"{settings.max_runs_per_experiment}", "input": spec.models})
    if spec.epochs > settings.max_epochs:
        errors.append({"type": "less_than_equal", "loc": ("body", "epochs"),
                       "msg": f"epochs must be at most {settings.max_epochs}",
                       "input": spec.epochs})
    if errors:
        raise RequestValidationError(errors)


def estimate(spec: ExperimentSpec) -> dict[str, float | int]:
    """Epochs and images the experiment will process: a rough size, not a time."""
    search = {"tune": spec.lr_search.num_samples * spec.lr_search.budget_epochs,
              "fixed": 0}
    total_images = 0
    search_epochs = 0.0
    for _, dataset in spec.grid():
        n = spec.data.train_limit or round(DATASETS[dataset].train_size *
                                           (0.9 if spec.data.validation == "holdout" else 1))
        per_run_search = search.get(spec.lr_search.method,
                                    spec.lr_search.range_test_steps * spec.batch_size / n)
        search_epochs += per_run_search
        total_images += round((spec.epochs + per_run_search) * n)
    classifier_epochs = (spec.classifier.frozen_epochs + spec.classifier.unfrozen_epochs) \
        * len(spec.datasets) if spec.classifier.enabled else 0
    return {"runs": len(spec.grid()), "train_epochs": spec.epochs * len(spec.grid()),
            "lr_search_epochs": round(search_epochs, 2),
            "classifier_epochs": classifier_epochs, "images_processed": total_images}


@router.post("", status_code=status.HTTP_201_CREATED, dependencies=[WriteAccess],
             response_model=ExperimentOut | DryRun,
             responses={200: {"description": "replayed: the experiment of this Idempotency-Key"}})
def create_experiment(
    request: Request, response: Response, settings: SettingsDep,
    spec: Annotated[ExperimentSpec, Body()],
    dry_run: Annotated[bool, Query(description="validate and estimate only")] = False,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> Any:
    _check_limits(spec, settings)
    if dry_run:
        response.status_code = status.HTTP_200_OK
        return DryRun(spec=spec.model_dump(mode="json"),
                      runs=[{"model": m, "dataset": d} for m, d in spec.grid()],
                      estimate=estimate(spec))
    sessions = request.app.state.sessions
    if idempotency_key:
        with sessions() as s:
            existing = repo.get_by_idempotency_key(s, key=idempotency_key)
        if existing is not None:
            response.status_code = status.HTTP_200_OK
            return experiment_out(existing, request.app.state.dashboard_url())
    try:
        with transaction(sessions) as s:
            experiment = repo.create_experiment(s, spec=spec, idempotency_key=idempotency_key)
            body = experiment_out(experiment, request.app.state.dashboard_url())
    except IntegrityError:  # the same key raced us: answer with the winner
        with sessions() as s:
            existing = repo.get_by_idempotency_key(s, key=idempotency_key or "")
        if existing is None:
            raise
        response.status_code = status.HTTP_200_OK
        return experiment_out(existing, request.app.state.dashboard_url())
    request.app.state.wake_dispatcher()
    response.headers["Location"] = body.links["self"]
    return body


@router.get("", response_model=ExperimentPage, dependencies=[ReadAccess])
def list_experiments(
    request: Request, sessions: SessionsDep,
    status_: Annotated[Status | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,18}$")] = None,
) -> ExperimentPage:
    with sessions() as session:
        page, next_id = repo.list_experiments(session, status=status_, limit=limit,
                                              before_id=int(cursor) if cursor else None)
        counts = repo.run_counts(session, experiment_ids=[e.id for e in page])
    dashboard = request.app.state.dashboard_url()
    return ExperimentPage(items=[experiment_item(e, counts[e.id], dashboard) for e in page],
                          next=str(next_id) if next_id is not None else None)


@router.get("/{experiment_id}", response_model=ExperimentOut, dependencies=[ReadAccess])
def get_experiment(request: Request, sessions: SessionsDep, experiment_id: int
                   ) -> ExperimentOut:
    with sessions() as session:
        experiment = repo.get_experiment(session, experiment_id=experiment_id)
    return experiment_out(experiment, request.app.state.dashboard_url())


@router.post("/{experiment_id}/cancel", response_model=ExperimentOut,
             dependencies=[WriteAccess])
def cancel_experiment(request: Request, experiment_id: int) -> ExperimentOut:
    sessions = request.app.state.sessions
    with transaction(sessions) as s:
        _, running = repo.request_cancel(s, experiment_id=experiment_id)
    request.app.state.stop_runs(running)
    with sessions() as s:
        return experiment_out(repo.get_experiment(s, experiment_id=experiment_id),
                              request.app.state.dashboard_url())


@router.delete("/{experiment_id}", status_code=status.HTTP_204_NO_CONTENT,
               dependencies=[WriteAccess])
def delete_experiment(request: Request, artifacts: ArtifactsDep, experiment_id: int) -> Response:
    with transaction(request.app.state.sessions) as s:
        run_ids = repo.delete_experiment(s, experiment_id=experiment_id)
    for run_id in run_ids:
        artifacts.delete_prefix(f"run-{run_id}")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{experiment_id}/results", dependencies=[ReadAccess],
            responses={200: {"content": {"text/csv": {}, "text/markdown": {}}}})
def get_results(sessions: SessionsDep, experiment_id: int,
                format: Literal["json", "csv", "markdown"] = "json") -> Any:
    with sessions() as session:
        rows = table.rows(repo.results(session, experiment_id=experiment_id))
        experiment = repo.get_experiment(session, experiment_id=experiment_id, with_runs=False)
    if format == "csv":
        return PlainTextResponse(table.to_csv(rows), media_type="text/csv")
    if format == "markdown":
        title = experiment.name or f"Experiment {experiment_id}"
        return PlainTextResponse(table.to_markdown(rows, title), media_type="text/markdown")
    return {"experiment_id": experiment_id, "columns": list(table.COLUMNS), "rows": rows}
