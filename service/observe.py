"""What the service tells operators about each request: its id on every log line it
causes (``workers.logs``), in the ``X-Request-ID`` answer header, and in the request
metrics of ``GET /metrics`` (``service.metrics``).

A pure ASGI middleware, outermost, so a request refused at the front door has an id too.
A client's own ``X-Request-ID`` (up to 64 letters, digits, ``-``, ``_`` or ``.``) is kept,
so a proxy's id follows the request through; any other value is replaced.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable

from service.api.boundary import ASGIApp, Message, Receive, Scope, Send
from workers.logs import log_context

access = logging.getLogger("aelab.access")
REQUEST_ID_HEADER = "x-request-id"
_VALID_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")

# (method, route template, status, seconds): how a finished request is counted.
Observer = Callable[[str, str, int, float], None]


def route_template(scope: Scope) -> str:
    """The route that answered, as declared (``/api/v1/runs/{run_id}``), never the raw
    path (ids would make one time series per run); ``unmatched`` for a 404 no route
    took."""
    # FastAPI keeps included routers nested: the route it ran knows only its own part of
    # the path; the whole template is on the effective route it records in the scope.
    fastapi = scope.get("fastapi")
    effective = fastapi.get("effective_route_context") if isinstance(fastapi, dict) else None
    path = getattr(effective, "path_format", None) or getattr(effective, "path", None)
    if path:
        return str(path)
    path = getattr(scope.get("route"), "path", None)
    # Inside a mount, the route's path is relative to it; the mount's is in root_path.
    return f"{scope.get('root_path', '')}{path}" if path else "unmatched"


class RequestIds:
    """Give each HTTP request an id (logged, answered) and report it to ``observe``."""

    def __init__(self, app: ASGIApp, *, observe: Observer | None = None,
                 access_log: bool = False) -> None:
        self.app = app
        self.observe = observe
        self.access_log = access_log  # one line per request (uvicorn's has no request id)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or ()).get(REQUEST_ID_HEADER.encode(), b"")
        text = given.decode("latin-1")
        request_id = text if _VALID_ID.fullmatch(text) else uuid.uuid4().hex[:12]
        token = log_context.set({**(log_context.get() or {}), "request_id": request_id})
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() != REQUEST_ID_HEADER.encode()]
                headers.append((REQUEST_ID_HEADER.encode(), request_id.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            route = route_template(scope)
            if self.observe is not None:
                self.observe(scope["method"], route, status, seconds)
            if self.access_log:
                access.info("%s %s %s %.1fms", scope["method"], scope.get("path", ""),
                            status, seconds * 1000,
                            extra={"method": scope["method"], "route": route,
                                   "status": status, "duration_ms": round(seconds * 1000, 2)})
            log_context.reset(token)
