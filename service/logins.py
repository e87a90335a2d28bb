"""The web UI's logins as the server remembers them: failed attempts per client (a guess
at the token is throttled) and sessions ended by logging out (their cookie stops working
at once, not when it expires).

In memory, per server process: ``aelab serve`` runs one; a restart forgets both, and
rotating the API token still revokes every session (``service.access``).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field


@dataclass
class LoginGuard:
    """``max_failures`` wrong tokens per client within ``window_s`` seconds; more are
    refused until the oldest leaves the window. Logged-out cookies are kept until they
    would have expired. Both tables are bounded (``max_entries``, oldest dropped)."""

    max_failures: int = 5
    window_s: float = 60.0
    max_entries: int = 10_000
    clock: object = time.monotonic  # seconds, for attempts
    _failures: OrderedDict[str, deque[float]] = field(default_factory=OrderedDict)
    _ended: OrderedDict[str, float] = field(default_factory=OrderedDict)  # cookie → expiry
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _now(self) -> float:
        return self.clock()  # type: ignore[operator, no-any-return]

    def retry_after_s(self, client: str) -> int | None:
        """Whole seconds until ``client`` may try again; None when it may now."""
        with self._lock:
            failures = self._failures.get(client)
            if failures is None:
                return None
            now = self._now()
            while failures and failures[0] <= now - self.window_s:
                failures.popleft()
            if len(failures) < self.max_failures:
                return None
            return max(1, math.ceil(failures[0] + self.window_s - now))

    def failed(self, client: str) -> None:
        """Count a wrong token from ``client``."""
        with self._lock:
            self._failures.setdefault(client, deque(maxlen=self.max_failures)) \
                .append(self._now())
            self._failures.move_to_end(client)
            while len(self._failures) > self.max_entries:
                self._failures.popitem(last=False)

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)

    def end(self, cookie: str, expires_at: float) -> None:
        """Revoke the session cookie ``cookie`` (valid until the epoch ``expires_at``)."""
        with self._lock:
            now = time.time()
            for value in [v for v, t in self._ended.items() if t < now]:
                del self._ended[value]
            self._ended[cookie] = expires_at
            while len(self._ended) > self.max_entries:
                self._ended.popitem(last=False)

    def ended(self, cookie: str) -> bool:
        """Whether ``cookie`` was logged out."""
        with self._lock:
            return cookie in self._ended
