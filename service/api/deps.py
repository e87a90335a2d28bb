"""Request dependencies as Annotated aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from service.api.boundary import token_problem
from service.api.session import SESSION_COOKIE, session_valid
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


def reads_protected(settings: Settings) -> bool:
    """Whether reads need the token (``protect_reads`` with a token configured)."""
    return settings.protect_reads and settings.api_token is not None


def has_session(request: Request, settings: Settings) -> bool:
    """Whether the request carries the web UI's valid session cookie (see ``session``)."""
    if settings.api_token is None:
        return False
    return session_valid(settings.api_token.get_secret_value(),
                         request.cookies.get(SESSION_COOKIE))


async def require_read(request: Request, settings: SettingsDep) -> None:
    """Reads: open, or (protected) the bearer token or the web UI's session cookie. The
    header is read here rather than through HTTPBearer so the OpenAPI does not claim that
    open reads need it."""
    if not reads_protected(settings):
        return
    header = request.headers.get("authorization")
    if header is None and has_session(request, settings):
        return
    _check(settings, header)


WriteAccess = Depends(require_write)
ReadAccess = Depends(require_read)
