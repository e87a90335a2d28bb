"""What the API answers about experiments that have ended for good, computed once.

Reads outnumber runs by far (clients and pages poll), and an experiment that succeeded or
failed has every run ended: its detail, its runs' counts and its results tables do not
change until it is deleted. Each entry is served only for the version it was computed at,
read from the experiment's row on every request, so a deleted experiment is a 404 at once and
each API replica keeps its own cache without serving another's stale answer.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime
from threading import Lock
from typing import Any

from service.client.states import Status

# A cancelled experiment may still have runs stopping; queued and running ones change.
ENDED_FOR_GOOD = (Status.succeeded, Status.failed)


def ended_version(status: Status, finished_at: datetime | None) -> tuple[Any, ...] | None:
    """The version an ended experiment's cached answers are valid for, or None (do not
    cache) while it can still change."""
    return (status, finished_at) if status in ENDED_FOR_GOOD else None


class EndedCache:
    """Values by key (e.g. ``("detail", experiment_id, dashboard)``) with the version they
    were computed at, least recently used first out, bounded by their total size in bytes
    (response bodies are stored as UTF-8 ``bytes``; other values count as 256 bytes). A
    value larger than an eighth of the bound is not kept. One per app: ids name rows of
    that app's database and are never reused."""

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self.size = 0  # bytes held
        self._items: OrderedDict[tuple[Any, ...], tuple[Any, Any, int]] = OrderedDict()
        self._lock = Lock()

    def get(self, key: tuple[Any, ...], version: Any) -> Any | None:
        """The value stored for ``key`` at ``version``; None if absent or stale."""
        if version is None:
            return None
        with self._lock:
            hit = self._items.get(key)
            if hit is None or hit[0] != version:
                return None
            self._items.move_to_end(key)
            return hit[1]

    def put(self, key: tuple[Any, ...], version: Any, value: Any) -> None:
        """Store ``value`` for ``key`` at ``version`` (nothing when ``version`` is None)."""
        cost = len(value) if isinstance(value, bytes) else 256
        if version is None or cost > self.max_bytes // 8:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.size -= old[2]
            self._items[key] = (version, value, cost)
            self.size += cost
            while self.size > self.max_bytes:
                _, (_, _, evicted) = self._items.popitem(last=False)
                self.size -= evicted

    def __len__(self) -> int:
        return len(self._items)
