"""Request dependencies as Annotated aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from service.api.boundary import token_problem
from service.persistence.artifacts import ArtifactStore
from service.settings import Settings

_bearer = HTTPBearer(auto_error=False)


# Dependencies that do no blocking I/O are `async def`: FastAPI would otherwise run each
# in the thread pool, and those hops cost more than the handlers' own work.


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_sessions(request: Request) -> sessionmaker[Session]:
    # Handlers open a session around their queries only, so a connection goes back to
    # the pool before the response is serialised and sent.
    return request.app.state.sessions


async def get_artifacts(request: Request) -> ArtifactStore:
    return request.app.state.artifacts


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionsDep = Annotated[sessionmaker[Session], Depends(get_sessions)]
ArtifactsDep = Annotated[ArtifactStore, Depends(get_artifacts)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _check(settings: Settings, header: str | None) -> None:
    problem = token_problem(settings.api_token, header)
    if problem is not None:
        raise HTTPException(problem[0], problem[1],
                            headers={"WWW-Authenticate": "Bearer"} if problem[0] == 401
                            else None)


async def require_write(settings: SettingsDep, credentials: Credentials) -> None:
    """Writes need the bearer token (declared in the OpenAPI as HTTPBearer)."""
    _check(settings, f"{credentials.scheme} {credentials.credentials}" if credentials
           else None)


async def require_read(request: Request, settings: SettingsDep) -> None:
    """Reads need the token only with AELAB_PROTECT_READS; the header is read here rather
    than through HTTPBearer so the OpenAPI does not claim open reads need it."""
    if settings.protect_reads:
        _check(settings, request.headers.get("authorization"))


WriteAccess = Depends(require_write)
ReadAccess = Depends(require_read)
