"""HTTP as clients expect it on every route, in one pure ASGI middleware (the composition
root mounts it inside the front door), rather than per route:

- ``HEAD`` is answered on every ``GET`` route (RFC 9110 §9.3.2): the route runs as a GET
  and its headers (``Content-Length`` included) go back without the body;
- conditional ``GET``/``HEAD``: a 200 that carries an ``ETag`` is answered ``304 Not
  Modified`` (its body dropped) when the request's ``If-None-Match`` lists that tag or is
  ``*`` (weak comparison, RFC 9110 §13.1.2);
- ``Cache-Control`` where the route set none: when reads need the token, every answer but
  the public static assets is ``no-store`` (``private, no-cache`` when it carries an ETag,
  so a client may still revalidate it): no shared cache or browser history keeps a
  protected page, export or set of weights.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# What a 304 keeps of the 200's headers (RFC 9110 §15.4.5).
KEPT_ON_304 = frozenset({b"etag", b"cache-control", b"content-location", b"date",
                         b"expires", b"vary", b"last-modified"})


def _opaque(tag: str) -> str:
    """An entity tag without its weak prefix (weak comparison)."""
    tag = tag.strip()
    return tag[2:] if tag.startswith("W/") else tag


def etag_matches(if_none_match: str, etag: str) -> bool:
    """Whether ``If-None-Match`` (``*`` or a comma-separated list of tags) names
    ``etag``."""
    if if_none_match.strip() == "*":
        return True
    return _opaque(etag) in {_opaque(t) for t in if_none_match.split(",") if t.strip()}


class HttpSemantics:
    """HEAD, conditional GET and default ``Cache-Control`` (see the module)."""

    def __init__(self, app: ASGIApp, *, protected: Callable[[], bool],
                 public_prefixes: tuple[str, ...] = ("/static/",)) -> None:
        self.app = app
        self.protected = protected
        self.public_prefixes = public_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        head = scope["method"] == "HEAD"
        if head:
            scope = {**scope, "method": "GET"}
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        if_none_match = headers.get(b"if-none-match", b"").decode("latin-1")
        private = self.protected() and not scope["path"].startswith(self.public_prefixes)
        silent = head  # send no body from here on

        async def answer(message: Message) -> None:
            nonlocal silent
            if message["type"] == "http.response.start":
                out = list(message.get("headers", []))
                names = {k.lower() for k, _ in out}
                etag = next((v.decode("latin-1") for k, v in out if k.lower() == b"etag"),
                            None)
                if private and b"cache-control" not in names:
                    out.append((b"cache-control",
                                b"private, no-cache" if etag else b"no-store"))
                if message["status"] == 200 and etag and if_none_match \
                        and etag_matches(if_none_match, etag):
                    silent = True
                    message = {**message, "status": 304,
                               "headers": [(k, v) for k, v in out if k.lower() in KEPT_ON_304]}
                else:
                    message = {**message, "headers": out}
            elif message["type"] == "http.response.body" and silent:
                if message.get("more_body", False):
                    return  # the rest of a streamed body, dropped
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app(scope, receive, answer)
