"""The web UI's session cookie: proof that its holder typed the API token.

With protected reads every page, image and export needs the token. A browser cannot send
a bearer header on a plain link or ``<img>``, so ``POST /login`` checks the token once and
sets an HttpOnly, SameSite=Strict cookie holding ``<expiry>.<HMAC-SHA256(token, expiry)>``:
never the token itself, nothing a script on the page can read, and worthless once the
token changes (rotating the token is how every session is revoked). The cookie grants
reads only: writes still need the bearer header, so a forged cross-site request can do
nothing with it.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SESSION_COOKIE = "aelab_session"
SESSION_TTL_S = 12 * 3600
_CONTEXT = b"aelab-ui-session-v1:"


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
    if not expires_text.isdigit() or len(expires_text) > 12:
        return False
    expires = int(expires_text)
    if expires < (time.time() if now is None else now):
        return False
    return hmac.compare_digest(mac, _mac(token, expires))
