"""/runs: across experiments, detail, sample image, artifacts."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Response
from fastapi.exceptions import RequestValidationError
from pydantic import Field

from service.api.deps import ReadAccess
from service.api.routes.experiments import refuse_unknown_names
from service.api.views import run_detail, run_item
from service.client.schemas import LogOut, RunDetail, RunPage
from service.client.states import Status
from service.context import ArtifactsDep, ContextDep, SessionsDep
from service.errors import NotFound
from service.http_errors import errors
from service.persistence import repository as repo
from service.persistence.artifacts import SAFE_NAME, ArtifactError
from workers.spec import StoredName, VariantName

router = APIRouter(prefix="/runs", tags=["runs"], dependencies=[ReadAccess])

OrderBy = Literal[tuple(o for key in repo.RUN_ORDERS  # type: ignore[valid-type]
                        for o in (key, f"-{key}"))]


@router.get("", response_model=RunPage, operation_id="list_runs")
def list_runs(
    ctx: ContextDep,
    experiment: Annotated[list[Annotated[int, Field(ge=1, le=repo.MAX_ID)]] | None,
                          Query(description="an experiment's id")] = None,
    model: Annotated[list[VariantName] | None, Query()] = None,  # type: ignore[valid-type]
    dataset: Annotated[list[StoredName] | None, Query()] = None,  # type: ignore[valid-type]
    status: Annotated[list[Status] | None, Query()] = None,
    latent_dim: Annotated[list[int] | None, Query(description="latent size")] = None,
    order_by: Annotated[OrderBy, Query(  # type: ignore[valid-type]
        description="a measure or run column; a leading - sorts descending. Runs without "
                    "the value (not evaluated yet) come last")] = "-id",
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=300)] = None,
) -> RunPage:
    """Runs across experiments, filtered (each filter may repeat: any of its values) and
    ordered by a measure, e.g. ``?dataset=cifar10&order_by=-psnr``; keyset-paginated like
    GET /experiments: pass ``next`` as ``cursor`` with the same filters and order."""
    try:
        with ctx.sessions() as session:
            refuse_unknown_names(session, models=model or [], datasets=dataset or [],
                                 each=True)
            rows, next_cursor = repo.list_runs(
                session, experiment_ids=experiment or (), models=model or (),
                datasets=dataset or (), statuses=status or (), latent_dims=latent_dim or (),
                order_by=order_by, limit=limit, cursor=cursor)
    except repo.BadCursor as exc:
        raise RequestValidationError([{"type": "value_error", "loc": ("query", "cursor"),
                                       "msg": str(exc), "input": cursor}]) from exc
    dashboard = ctx.dashboard_url()
    return RunPage(items=[run_item(r, m, name, dashboard) for r, m, name in rows],
                   next=next_cursor)


@router.get("/{run_id}", response_model=RunDetail, operation_id="get_run",
            responses=errors(404))
def get_run(ctx: ContextDep, run_id: int) -> RunDetail:
    with ctx.sessions() as session:
        run = repo.get_run(session, run_id=run_id, detail=True)
        return run_detail(run, ctx.dashboard_url())


def _artifact_response(sessions: SessionsDep, artifacts: ArtifactsDep, run_id: int,
                       name: str) -> Response:
    if not SAFE_NAME.match(name):  # never a path, never a NUL in a query
        raise NotFound("artifact", f"{name!r} of run {run_id}")
    with sessions() as session:
        artifact = repo.find_artifact(session, run_id=run_id, name=name)
    try:
        data = artifacts.read(artifact.uri)
    except (ArtifactError, FileNotFoundError) as exc:
        raise NotFound("artifact file", f"{name!r} of run {run_id}") from exc
    return Response(data, media_type=artifact.content_type,
                    headers={"ETag": f'"{artifact.checksum}"'})


@router.get("/{run_id}/samples.png", response_class=Response, operation_id="get_run_samples",
            responses={200: {"content": {"image/png": {}}}, **errors(404)})
def get_samples(sessions: SessionsDep, artifacts: ArtifactsDep, run_id: int) -> Response:
    return _artifact_response(sessions, artifacts, run_id, "samples.png")


@router.get("/{run_id}/artifacts/{name}", response_class=Response,
            operation_id="get_run_artifact",
            responses={200: {"content": {"application/octet-stream": {}, "image/png": {},
                                         "text/plain": {}}}, **errors(404)})
def get_artifact(sessions: SessionsDep, artifacts: ArtifactsDep, run_id: int,
                 name: str = Path(max_length=200)) -> Response:
    return _artifact_response(sessions, artifacts, run_id, name)


@router.get("/{run_id}/logs", response_model=LogOut, operation_id="get_run_logs",
            responses=errors(404))
def get_logs(ctx: ContextDep, run_id: int,
             offset: Annotated[int, Query(ge=0, le=2**63 - 1,
                                          description="characters already read")] = 0
             ) -> LogOut:
    """The run's driver log from ``offset`` on: the saved ``job.log`` once the run ended
    (also after its Ray cluster is gone), Ray's live copy while it runs. Follow a running
    run by calling again with ``next_offset``."""
    with ctx.sessions() as session:
        run = repo.get_run(session, run_id=run_id, detail=True)
        saved = next((a for a in run.artifacts if a.name == "job.log"), None)
        status, job_id = run.status, run.ray_job_id
    text: str | None = None
    source = "saved"
    if saved is not None:
        try:
            text = ctx.artifacts.read(saved.uri).decode("utf-8", errors="replace")
        except (ArtifactError, FileNotFoundError):
            text = None
    if text is None and job_id is not None:
        text, source = ctx.job_logs(job_id), "ray"
    if text is None:
        if status == Status.queued or job_id is None:
            text, source = "", "none"
        elif not status.finished:
            text, source = "", "ray"  # submitted, no output yet (or Ray busy): ask again
        else:
            raise NotFound("log", f"of run {run_id}: the driver log was lost with its Ray "
                                  "head (no saved job.log)")
    complete = status.finished and source == "saved"
    return LogOut(run_id=run_id, status=status, source=source, offset=offset,
                  next_offset=max(len(text), offset), text=text[offset:], complete=complete)
