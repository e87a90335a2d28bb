"""Builders and doubles shared by tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

API = "/api/v1"


def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str,
             interval_s: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def experiment(client: TestClient, exp_id: int) -> dict[str, Any]:
    return client.get(f"{API}/experiments/{exp_id}").json()
