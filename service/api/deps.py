"""The API's access dependencies: who may read (:data:`ReadAccess`) and write
(:data:`WriteAccess`). The service context and its parts are ``service.context``'s."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.access import has_session, reads_protected, token_problem
from service.context import SettingsDep
from service.settings import Settings

_bearer = HTTPBearer(auto_error=False)
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
