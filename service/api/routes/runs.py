"""/runs: detail, sample image, artifacts."""

from __future__ import annotations

from fastapi import APIRouter, Path, Response

from service import repository as repo
from service.api.deps import ArtifactsDep, ReadAccess, SessionsDep
from service.api.schemas import RunDetail
from service.api.views import run_detail
from service.artifacts import ArtifactError
from service.errors import NotFound

router = APIRouter(prefix="/runs", tags=["runs"], dependencies=[ReadAccess])


@router.get("/{run_id}", response_model=RunDetail)
def get_run(sessions: SessionsDep, run_id: int) -> RunDetail:
    with sessions() as session:
        return run_detail(repo.get_run(session, run_id=run_id, detail=True))


def _artifact_response(sessions: SessionsDep, artifacts: ArtifactsDep, run_id: int,
                       name: str) -> Response:
    with sessions() as session:
        artifact = repo.find_artifact(session, run_id=run_id, name=name)
    try:
        data = artifacts.read(artifact.uri)
    except (ArtifactError, FileNotFoundError) as exc:
        raise NotFound("artifact file", f"{name!r} of run {run_id}") from exc
    return Response(data, media_type=artifact.content_type,
                    headers={"ETag": f'"{artifact.checksum}"'})


@router.get("/{run_id}/samples.png", response_class=Response,
            responses={200: {"content": {"image/png": {}}}})
def get_samples(sessions: SessionsDep, artifacts: ArtifactsDep, run_id: int) -> Response:
    return _artifact_response(sessions, artifacts, run_id, "samples.png")


@router.get("/{run_id}/artifacts/{name}", response_class=Response)
def get_artifact(sessions: SessionsDep, artifacts: ArtifactsDep, run_id: int,
                 name: str = Path(max_length=200)) -> Response:
    return _artifact_response(sessions, artifacts, run_id, name)
