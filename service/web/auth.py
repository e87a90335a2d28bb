"""Login for protected reads: a page that trades the API token for a session cookie.

See ``service.access`` for the cookie. Pages need it (or the bearer header) when reads
are protected; without it they raise ``LoginRequired``, which the error mapping answers
with a redirect to ``/login?next=<the page>``.
"""

from __future__ import annotations

import secrets
from typing import Annotated
from urllib.parse import parse_qs

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response

from service.access import (
    LOGIN_PATH,
    SESSION_COOKIE,
    SESSION_TTL_S,
    LoginRequired,
    has_session,
    make_session,
    reads_protected,
    session_valid,
    token_problem,
)
from service.context import SettingsDep, context_of
from service.web.render import render

router = APIRouter(include_in_schema=False)


async def page_access(request: Request, settings: SettingsDep) -> None:
    """Pages: open, or (reads protected) the session cookie or the bearer token."""
    if not reads_protected(settings) or has_session(request, settings) \
            or token_problem(settings.api_token, request.headers.get("authorization")) is None:
        return
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    raise LoginRequired(target)


def safe_next(value: str | None) -> str:
    """Only a path of this site: never another origin (``//host``, ``https://…``)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


@router.get(LOGIN_PATH)
def login_page(request: Request, settings: SettingsDep,
               next: Annotated[str | None, Query(max_length=2000)] = None) -> Response:
    """The login form (straight to ``next`` when reads are open or already logged in)."""
    if not reads_protected(settings) or has_session(request, settings):
        return RedirectResponse(safe_next(next), status_code=303)
    return render(request, "login.html", next=safe_next(next), error=None)


@router.post(LOGIN_PATH)
async def login(request: Request, settings: SettingsDep) -> Response:
    """Check the token typed in the form; on success set the session cookie."""
    form = parse_qs((await request.body())[:10_000].decode("utf-8", errors="replace"))
    token = (form.get("token") or [""])[0]
    target = safe_next((form.get("next") or ["/"])[0])
    if settings.api_token is None:
        return RedirectResponse(target, status_code=303)
    guard = context_of(request.app).logins
    client = request.client.host if request.client else "unknown"
    wait = guard.retry_after_s(client)
    if wait is not None:
        refused = render(request, "login.html", status_code=429, next=target,
                         error=f"Too many wrong tokens from here: try again in {wait} s.")
        refused.headers["Retry-After"] = str(wait)
        return refused
    expected = settings.api_token.get_secret_value()
    if not token or not secrets.compare_digest(token.encode(), expected.encode()):
        guard.failed(client)
        return render(request, "login.html", status_code=401, next=target,
                      error="That is not this server's API token.")
    guard.succeeded(client)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(SESSION_COOKIE, make_session(expected), max_age=SESSION_TTL_S,
                        httponly=True, samesite="strict", path="/",
                        secure=request.url.scheme == "https")
    return response


@router.post("/logout")
def logout(request: Request) -> Response:
    """End the session: its cookie stops working on the server at once (a copy of it too),
    and the browser forgets it (rotate the API token to revoke every session)."""
    ctx = context_of(request.app)
    cookie = request.cookies.get(SESSION_COOKIE)
    token = ctx.settings.api_token
    # Only a session this server signed is remembered as ended: made-up cookies would
    # otherwise push real logouts out of the bounded list.
    if cookie and token is not None and session_valid(token.get_secret_value(), cookie):
        ctx.logins.end(cookie, float(cookie.split(".", 1)[0]))
    response = RedirectResponse(LOGIN_PATH, status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response
