"""The service's front door, before any route runs: authentication and a bounded body
(the composition root puts it outermost; its refusals are answered by the error mapping).

A pure ASGI middleware, because FastAPI reads a request's whole body before it solves the
route's dependencies (so a token check in a dependency comes after a 200 MiB upload):

- requests that need the token and lack it are answered 401/403 before a byte of their
  body is read;
- a body is read here, up to ``max_body_bytes``: a larger ``Content-Length`` is refused
  at once, a chunked body as soon as it passes the limit (413), so memory never grows
  with what a client sends; a body within the limit is handed to the app unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import Response

from service.access import token_problem

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


# (request, status, message, headers) → the answer: service.http_errors decides its shape.
Refuse = Callable[[Request, int, str, dict[str, str]], Response]


class Boundary:
    """Authenticate writes (and reads when protected) and bound request bodies.

    ``needs_token(method, path)`` says whether a request must carry the token; requests it
    exempts (e.g. the web UI's own cookie-authenticated pages) are left to the app.
    ``refuse`` makes the answer to a refused request (the one error mapping's).
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int,
                 token: Callable[[], SecretStr | None],
                 needs_token: Callable[[str, str], bool], refuse: Refuse) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.token = token
        self.needs_token = needs_token
        self.refuse = refuse

    async def _answer(self, scope: Scope, receive: Receive, send: Send, status: int,
                      message: str, headers: dict[str, str] | None = None) -> None:
        """Refuse the request; the connection closes (the body may still be coming)."""
        response = self.refuse(Request(scope), status, message,
                               {**(headers or {}), "Connection": "close"})
        await response(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        method, path = scope["method"], scope["path"]
        if self.needs_token(method, path):
            problem = token_problem(self.token(), headers.get("authorization"))
            if problem is not None:
                await self._answer(scope, receive, send, *problem,
                                   headers={"WWW-Authenticate": "Bearer"}
                                   if problem[0] == 401 else None)
                return
        if method not in WRITE_METHODS:
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        declared = headers.get("content-length")
        too_large = f"request body larger than {limit} bytes"
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await self._answer(scope, receive, send, 413, too_large)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._answer(scope, receive, send, 413, too_large)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: disconnect notices

        await self.app(scope, replay, send)
