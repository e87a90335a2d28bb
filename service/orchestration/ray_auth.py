"""Ray's token auth as aelab uses it: the token this process holds, a token of our own for
a head we start, and a probe that asks a cluster who it is with that token."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import httpx

from service.errors import Unavailable

PROBE_TIMEOUT_S = 5.0


def use_token_auth(state_dir: Path) -> str:
    """Token auth for a head we own: one token file under ``state_dir``, announced to
    this process (job clients) and inherited by the head (and so by every job). A token
    this process was already given (RAY_AUTH_TOKEN[_PATH]) wins: Ray reads it once."""
    if os.environ.get("RAY_AUTH_MODE") == "token":
        token = ray_auth_token()
        if token:
            return token
    state_dir.mkdir(parents=True, exist_ok=True)
    token_file = state_dir / "auth_token"
    if not token_file.is_file():
        token_file.write_text(secrets.token_hex(32))
        token_file.chmod(0o600)
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(token_file)
    return token_file.read_text().strip()


def ray_auth_token() -> str | None:
    """The Ray token this process uses (RAY_AUTH_TOKEN, or the file RAY_AUTH_TOKEN_PATH)."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"]
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path and Path(path).is_file():
        return Path(path).read_text().strip()
    return None


def probe(dashboard: str, timeout_s: float = PROBE_TIMEOUT_S) -> str:
    """The session name of the Ray cluster answering at ``dashboard``, asked with this
    process's Ray token. Raises :class:`Unavailable` with the reason when it does not
    answer (a 401 means the token is not that cluster's)."""
    token = ray_auth_token()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        r = httpx.get(f"{dashboard.rstrip('/')}/api/version", headers=headers,
                      timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise Unavailable(f"Ray at {dashboard}: {type(exc).__name__}: {exc}") from exc
    if r.status_code in (401, 403):
        raise Unavailable(f"Ray at {dashboard} refused this service's token "
                          f"(HTTP {r.status_code}): set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) "
                          "to the cluster's token")
    if r.status_code != 200:
        raise Unavailable(f"Ray at {dashboard}: HTTP {r.status_code}")
    return str(r.json()["session_name"])
