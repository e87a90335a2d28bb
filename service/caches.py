"""The service's caches, held by its context: values computed once and kept within a
byte budget, least recently used out first.

- :class:`EndedCache`: what the API answers about experiments that have ended for good.
  Reads outnumber runs by far (clients and pages poll), and an experiment that succeeded
  or failed has every run ended: its detail, its runs' counts and its results tables do
  not change until it is deleted. Each entry is served only for the version it was
  computed at, read from the experiment's row on every request, so a deleted experiment
  is a 404 at once and each API replica keeps its own cache without serving another's
  stale answer.
- :class:`TileCache`: the web UI's gallery tiles, cut once from each stored strip.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
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


class BoundedCache:
    """Values by key, least recently used first out, bounded by their total cost in bytes
    (``max_bytes``; ``size`` is what they cost now). A value costing more than an eighth
    of the bound is not kept. Safe to share between threads."""

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self.size = 0  # bytes held
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._lock = Lock()

    def get(self, key: Hashable) -> Any | None:
        """The value stored for ``key`` (now the most recently used), or None."""
        with self._lock:
            hit = self._items.get(key)
            if hit is None:
                return None
            self._items.move_to_end(key)
            return hit[0]

    def put(self, key: Hashable, value: Any, cost: int) -> None:
        """Store ``value`` for ``key`` (replacing what it held), dropping the least
        recently used values beyond the budget."""
        if cost > self.max_bytes // 8:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.size -= old[1]
            self._items[key] = (value, cost)
            self.size += cost
            while self.size > self.max_bytes:
                _, (_, evicted) = self._items.popitem(last=False)
                self.size -= evicted

    def __len__(self) -> int:
        return len(self._items)


class EndedCache:
    """Answers by key (e.g. ``("detail", experiment_id, dashboard)``) with the version they
    were computed at, within ``max_bytes``; response bodies are stored as UTF-8 ``bytes``,
    other values count as 256 bytes. One per app: ids name rows of that app's database and
    are never reused."""

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self._values = BoundedCache(max_bytes)

    @property
    def size(self) -> int:
        return self._values.size

    def __len__(self) -> int:
        return len(self._values)

    def get(self, key: Hashable, version: Any) -> Any | None:
        """The value stored for ``key`` at ``version``; None if absent or stale."""
        if version is None:
            return None
        hit = self._values.get(key)
        return hit[1] if hit is not None and hit[0] == version else None

    def put(self, key: Hashable, version: Any, value: Any) -> None:
        """Store ``value`` for ``key`` at ``version`` (nothing when ``version`` is None)."""
        if version is not None:
            cost = len(value) if isinstance(value, bytes) else 256
            self._values.put(key, (version, value), cost)


class TileCache:
    """Tiles of gallery strips already cut, by (artifact uri, checksum, the sizes they
    were cut to): a gallery read twice costs no PNG work. Bounded by the bytes of the data
    URIs it holds."""

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self._values = BoundedCache(max_bytes)

    def get(self, key: Hashable) -> tuple[str, ...] | None:
        """The tiles cut from this strip before, if still held."""
        tiles: tuple[str, ...] | None = self._values.get(key)
        return tiles

    def put(self, key: Hashable, tiles: tuple[str, ...]) -> None:
        """Hold the tiles cut from one strip."""
        self._values.put(key, tiles, sum(len(t) for t in tiles))
