"""The API's front door, before any route runs: authentication and a bounded body.

A pure ASGI middleware, because FastAPI reads a request's whole body before it solves the
route's dependencies (so a token check in a dependency comes after a 200 MiB upload):

- requests that need the token and lack it are answered 401/403 before a byte of their
  body is read;
- a body is read here, up to ``max_body_bytes``: a larger ``Content-Length`` is refused
  at once, a chunked body as soon as it passes the limit (413), so memory never grows
  with what a client sends; a body within the limit is handed to the app unchanged.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from pydantic import SecretStr

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def token_problem(expected: SecretStr | None, authorization: str | None
                  ) -> tuple[int, str] | None:
    """Why ``authorization`` (an ``Authorization`` header value) does not carry the API
    token: (401, …) when absent, (403, …) when wrong; None when it does or none is set.
    Compared in constant time."""
    if expected is None:
        return None
    scheme, _, credentials = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not credentials:
        return 401, "missing bearer token"
    if not secrets.compare_digest(credentials.strip().encode(),
                                  expected.get_secret_value().encode()):
        return 403, "invalid token"
    return None


async def _answer(send: Send, status: int, detail: str,
                  headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class Boundary:
    """Authenticate writes (and reads when protected) and bound request bodies.

    ``needs_token(method, path)`` says whether a request must carry the token; requests it
    exempts (e.g. the web UI's own cookie-authenticated pages) are left to the app.
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int,
                 token: Callable[[], SecretStr | None],
                 needs_token: Callable[[str, str], bool]) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.token = token
        self.needs_token = needs_token

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
                await _answer(send, *problem,
                              headers=[(b"www-authenticate", b"Bearer")]
                              if problem[0] == 401 else None)
                return
        if method not in WRITE_METHODS:
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _too_large(send, limit)
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
                await _too_large(send, limit)
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


async def _too_large(send: Send, limit: int) -> None:
    await _answer(send, 413, f"request body larger than {limit} bytes")
