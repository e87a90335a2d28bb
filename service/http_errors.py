"""How every error is answered over HTTP, decided in one place.

An exception (or a refusal at the front door, ``service.api.boundary``) becomes a
:class:`Problem` by one table (:meth:`ErrorMapping.problem`), then an answer by where it
happened:

- **the API** (a route the OpenAPI documents, or any path under ``/api/``) answers JSON in
  one of two documented shapes (:mod:`service.client.schemas`): a 422 is
  ``{"detail": [{"loc", "msg", "type", …}]}`` naming every refused field; every other
  error is ``{"detail": "what went wrong", "code": "<one per status>"}`` (``ERROR_CODES``),
  with the ``request_id`` of its log line on a 500;
- **the web UI** (every other path) answers a page saying the same (the web wing renders
  it), and a page asked for without the token redirects to the login page.

Every exception class is registered once, on the same handler, so which answer a request
gets never depends on the order in which handlers were added.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException

from service.access import LOGIN_PATH, LoginRequired
from service.client.schemas import ERROR_CODES, ErrorOut
from service.errors import Conflict, NotFound, Unavailable
from service.persistence.artifacts import ArtifactError
from workers.logs import current_ids

log = logging.getLogger("aelab.api")

# A page's heading for each status (a 422 on a page is a bad link: "Bad request").
TITLES = {400: "Bad request", 401: "Login required", 403: "Forbidden", 404: "Not found",
          405: "Method not allowed", 409: "Conflict", 413: "Request too large",
          422: "Bad request", 500: "Internal error", 503: "Service unavailable"}

# (request, status, title, message) → the page; the web wing supplies it.
PageRenderer = Callable[[Request, int, str, str], Response]


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses a route answers (a 422 FastAPI documents)."""
    why = {400: "the body is not JSON text (not UTF-8)", 401: "the API token is missing",
           403: "the API token is wrong", 404: "no such resource",
           409: "not in a state that allows it", 413: "the request body is too large",
           503: "the database is unreachable"}
    return {code: {"model": ErrorOut, "description": why[code]} for code in codes}


def error_code(status: int) -> str:
    """The ``code`` of an error answer with this status."""
    return ERROR_CODES.get(status, f"http_{status}")


@dataclass(frozen=True)
class Problem:
    """An error as answered: its status, what went wrong (``message``; a 422's ``fields``),
    headers to send, and the id of its log line (500)."""

    status: int
    message: str
    fields: list[dict[str, Any]] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    request_id: str | None = None

    def body(self) -> dict[str, Any]:
        """The JSON body: a 422's field list, or the documented shape with a code."""
        if self.fields is not None:
            return {"detail": self.fields}
        body: dict[str, Any] = {"detail": self.message, "code": error_code(self.status)}
        if self.request_id:
            body["request_id"] = self.request_id
        return body

    def page_message(self) -> str:
        """The same for a person: a 422's fields as ``field: message`` (the location's
        first part, ``path``/``query``, dropped)."""
        if self.fields is None:
            return self.message
        return "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'request'}: {e['msg']}"
                         for e in self.fields)[:500]


def answers_json(request: Request) -> bool:
    """Whether ``request`` is the API's: a route the OpenAPI documents (the API's routes and
    its health checks are; pages and the login are not), or, unrouted, any path under
    ``/api/``."""
    route = request.scope.get("route")
    if route is not None:
        return bool(getattr(route, "include_in_schema", False))
    return request.url.path.startswith("/api/")


def _utf8(text: str) -> str:
    """``text`` as UTF-8 can carry it: a lone surrogate (``"\\ud800"`` is valid JSON but no
    character) becomes its ``\\ud800`` escape instead of failing the response's encoding."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def json_safe(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON can carry it: non-finite floats as ``"NaN"``/``"Infinity"``/
    ``"-Infinity"`` (aelab's one representation), long strings and lists cut, lone
    surrogates escaped, other objects as text — so a 422 never fails to render whatever a
    client sent."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return _utf8(value if len(value) <= 1000 else value[:1000] + "…")
    if depth >= 5:
        return "…"
    if isinstance(value, dict):
        return {_utf8(str(k)[:200]): json_safe(v, depth + 1)
                for k, v in list(value.items())[:100]}
    if isinstance(value, list | tuple):
        return [json_safe(v, depth + 1) for v in value[:100]]
    return json_safe(str(value), depth + 1)


def _database_down(exc: DBAPIError) -> bool:
    return isinstance(exc, OperationalError | InterfaceError) or exc.connection_invalidated


class ErrorMapping:
    """The one mapping from exceptions to answers; ``page`` renders the web UI's."""

    # Everything a handler may raise that is not a bug, most specific first.
    HANDLED: tuple[type[Exception], ...] = (
        RequestValidationError, HTTPException, LoginRequired, NotFound, ArtifactError,
        Conflict, Unavailable, DBAPIError)

    def __init__(self, page: PageRenderer) -> None:
        self.page = page

    def install(self, app: FastAPI) -> None:
        """Register :meth:`handle` for every class above and for any other exception."""
        for cls in (*self.HANDLED, Exception):
            app.add_exception_handler(cls, self.handle)

    def problem(self, request: Request, exc: Exception) -> Problem:
        """The table: which status and message each exception answers."""
        if isinstance(exc, RequestValidationError):
            return Problem(422, "invalid request", fields=[
                {k: json_safe(v) for k, v in e.items() if k in ("type", "loc", "msg",
                                                                 "input", "ctx")}
                for e in exc.errors()])
        if isinstance(exc, HTTPException):
            return Problem(exc.status_code, str(exc.detail), headers=exc.headers or {})
        if isinstance(exc, LoginRequired):  # a page's; the API asks for the header
            return Problem(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
        if isinstance(exc, NotFound | ArtifactError):
            return Problem(404, str(exc))
        if isinstance(exc, Conflict):
            return Problem(409, str(exc))
        if isinstance(exc, Unavailable):
            log.warning("dependency unavailable: %s", exc)
            return Problem(503, f"service unavailable: {exc}")
        if isinstance(exc, DBAPIError) and _database_down(exc):
            log.warning("database unavailable: %s", type(exc.orig).__name__)
            return Problem(503, "service unavailable: the database cannot be reached",
                           headers={"Retry-After": "5"})
        request_id = current_ids().get("request_id") or uuid.uuid4().hex[:12]
        log.error("unhandled error %s on %s %s", request_id, request.method,
                  request.url.path, exc_info=exc)
        return Problem(500, "internal error", request_id=request_id)

    def answer(self, request: Request, problem: Problem) -> Response:
        """JSON for the API, a page for the web UI."""
        if answers_json(request):
            return JSONResponse(problem.body(), status_code=problem.status,
                                headers=dict(problem.headers))
        return self.page(request, problem.status, TITLES.get(problem.status, "Error"),
                         problem.page_message())

    async def handle(self, request: Request, exc: Exception) -> Response:
        """The exception handler of every class (see :meth:`install`)."""
        if isinstance(exc, LoginRequired) and not answers_json(request):
            return RedirectResponse(f"{LOGIN_PATH}?next={quote(exc.next_path, safe='/')}",
                                    status_code=303)
        return self.answer(request, self.problem(request, exc))

    def refuse(self, request: Request, status: int, message: str,
               headers: dict[str, str]) -> Response:
        """The answer to a request refused before any route ran (``api.boundary``)."""
        return self.answer(request, Problem(status, message, headers=headers))
