"""Who may read and write: the API token, and the web UI's session cookie that stands for it.

Writes need the token as a bearer header. Reads are open unless ``protect_reads`` is set
with a token; then they need the header or the session cookie. A browser cannot send a
bearer header on a plain link or ``<img>``, so ``POST /login`` checks the token once and
sets an HttpOnly, SameSite=Strict cookie holding ``<expiry>.<HMAC-SHA256(token, expiry)>``:
never the token itself, nothing a script on the page can read, and worthless once the
token changes (rotating the token is how every session is revoked; logging out ends one,
and wrong tokens are throttled per client: ``service.logins``). The cookie grants
reads only: writes still need the bearer header, so a forged cross-site request can do
nothing with it.

Both wings use these rules: the API's dependencies (``service.api.deps``), the front door
that refuses a request before its body is read (``service.api.boundary``) and the pages'
login (``service.web.auth``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from pydantic import SecretStr
from starlette.requests import Request

from service.context import context_of
from service.settings import Settings

SESSION_COOKIE = "aelab_session"
SESSION_TTL_S = 12 * 3600
LOGIN_PATH = "/login"  # the page that trades the token for the cookie
_CONTEXT = b"aelab-ui-session-v1:"


class LoginRequired(Exception):
    """A page was asked for without the token: the browser goes to the login page, which
    comes back to ``next_path``."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


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


def reads_protected(settings: Settings) -> bool:
    """Whether reads need the token (``protect_reads`` with a token configured)."""
    return settings.protect_reads and settings.api_token is not None


def has_session(request: Request, settings: Settings) -> bool:
    """Whether the request carries the web UI's valid session cookie."""
    if settings.api_token is None:
        return False
    cookie = request.cookies.get(SESSION_COOKIE)
    return session_valid(settings.api_token.get_secret_value(), cookie) \
        and not context_of(request.app).logins.ended(cookie or "")


def _mac(token: str, expires: int) -> str:
    return hmac.new(token.encode(), _CONTEXT + str(expires).encode(),
                    hashlib.sha256).hexdigest()


def make_session(token: str, *, now: float | None = None, ttl_s: int = SESSION_TTL_S) -> str:
    """A cookie value valid for ``ttl_s`` seconds under ``token``."""
    expires = int((time.time() if now is None else now) + ttl_s)
    return f"{expires}.{_mac(token, expires)}"


def session_valid(token: str, value: str | None, *, now: float | None = None) -> bool:
    """Whether ``value`` was made by :func:`make_session` under ``token`` and is unexpired."""
    if not value or value.count(".") != 1:
        return False
    expires_text, mac = value.split(".")
    # One spelling per session: digits without leading zeros, as make_session writes them
    # (a revoked cookie must not come back as "0" + itself).
    if not expires_text.isdigit() or len(expires_text) > 12 \
            or expires_text != str(int(expires_text)):
        return False
    expires = int(expires_text)
    if expires < (time.time() if now is None else now):
        return False
    return hmac.compare_digest(mac, _mac(token, expires))
