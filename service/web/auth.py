"""Login for protected reads: a page that trades the API token for a session cookie.

See ``service.api.session`` for the cookie. Pages need it (or the bearer header) when
reads are protected; without it they redirect to ``/login?next=<the page>``.
"""

from __future__ import annotations

import secrets
from typing import Annotated
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response

from service.api.deps import SettingsDep, has_session, reads_protected
from service.api.session import SESSION_COOKIE, SESSION_TTL_S, make_session
from service.settings import Settings

router = APIRouter(include_in_schema=False)


class LoginRequired(Exception):
    """A page was asked for without the token: the browser goes to the login page."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


def _bearer_ok(request: Request, settings: Settings) -> bool:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token or settings.api_token is None:
        return False
    return secrets.compare_digest(token.encode(),
                                  settings.api_token.get_secret_value().encode())


async def page_access(request: Request, settings: SettingsDep) -> None:
    """Pages: open, or (reads protected) the session cookie or the bearer token."""
    if not reads_protected(settings) or has_session(request, settings) \
            or _bearer_ok(request, settings):
        return
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    raise LoginRequired(target)


def safe_next(value: str | None) -> str:
    """Only a path of this site: never another origin (``//host``, ``https://…``)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def login_redirect(exc: LoginRequired) -> RedirectResponse:
    """303 to the login page, which comes back to the page asked for."""
    return RedirectResponse(f"/login?next={quote(exc.next_path, safe='/')}", status_code=303)


@router.get("/login")
def login_page(request: Request, settings: SettingsDep,
               next: Annotated[str | None, Query(max_length=2000)] = None) -> Response:
    """The login form (straight to ``next`` when reads are open or already logged in)."""
    from service.web.render import render

    if not reads_protected(settings) or has_session(request, settings):
        return RedirectResponse(safe_next(next), status_code=303)
    return render(request, "login.html", next=safe_next(next), error=None)


@router.post("/login")
async def login(request: Request, settings: SettingsDep) -> Response:
    """Check the token typed in the form; on success set the session cookie."""
    from service.web.render import render

    form = parse_qs((await request.body())[:10_000].decode("utf-8", errors="replace"))
    token = (form.get("token") or [""])[0]
    target = safe_next((form.get("next") or ["/"])[0])
    if settings.api_token is None:
        return RedirectResponse(target, status_code=303)
    expected = settings.api_token.get_secret_value()
    if not token or not secrets.compare_digest(token.encode(), expected.encode()):
        return render(request, "login.html", status_code=401, next=target,
                      error="That is not this server's API token.")
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(SESSION_COOKIE, make_session(expected), max_age=SESSION_TTL_S,
                        httponly=True, samesite="strict", path="/",
                        secure=request.url.scheme == "https")
    return response


@router.post("/logout")
def logout() -> Response:
    """Forget the session cookie (rotate the API token to revoke every session)."""
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response
