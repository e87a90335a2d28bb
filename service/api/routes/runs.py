"""/runs: detail, sample image, artifacts."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from service.api.deps import ArtifactsDep, ReadAccess, SessionsDep
from service.api.schemas import LogOut, RunDetail, errors
from service.api.views import run_detail
from service.errors import NotFound
from service.persistence import repository as repo
from service.persistence.artifacts import SAFE_NAME, ArtifactError
from service.states import Status

router = APIRouter(prefix="/runs", tags=["runs"], dependencies=[ReadAccess])


@router.get("/{run_id}", response_model=RunDetail, operation_id="get_run",
            responses=errors(404))
def get_run(sessions: SessionsDep, run_id: int) -> RunDetail:
    with sessions() as session:
        return run_detail(repo.get_run(session, run_id=run_id, detail=True))


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
def get_logs(request: Request, sessions: SessionsDep, artifacts: ArtifactsDep, run_id: int,
             offset: Annotated[int, Query(ge=0, le=2**63 - 1,
                                          description="characters already read")] = 0
             ) -> LogOut:
    """The run's driver log from ``offset`` on: the saved ``job.log`` once the run ended
    (also after its Ray cluster is gone), Ray's live copy while it runs. Follow a running
    run by calling again with ``next_offset``."""
    with sessions() as session:
        run = repo.get_run(session, run_id=run_id, detail=True)
        saved = next((a for a in run.artifacts if a.name == "job.log"), None)
        status, job_id = run.status, run.ray_job_id
    text: str | None = None
    source = "saved"
    if saved is not None:
        try:
            text = artifacts.read(saved.uri).decode("utf-8", errors="replace")
        except (ArtifactError, FileNotFoundError):
            text = None
    if text is None and job_id is not None:
        text, source = request.app.state.job_logs(job_id), "ray"
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
