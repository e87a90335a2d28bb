"""The narrow interface a run reports through. ``service`` implements it on the DB;
``workers`` never imports ``service``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol


class RunCancelled(RuntimeError):
    """The user cancelled the run while it was executing."""


class RunStore(Protocol):
    def set_phase(self, phase: str) -> None:
        """data, lr_search, train or evaluate."""

    def record_epoch(self, metrics: dict[str, Any]) -> None: ...

    def record_lr_trials(self, trials: list[dict[str, Any]], chosen_lr: float) -> None: ...

    def record_measures(self, measures: dict[str, Any]) -> None: ...

    def save_artifact(self, name: str, kind: str, data: bytes, content_type: str) -> None: ...

    def reference_classifier(self, key: str, dataset: str,
                             train: Callable[[], tuple[bytes, float]]) -> tuple[bytes, float]:
        """The classifier stored under ``key`` (weights, test accuracy); trains it with
        ``train`` when nobody has, and waits when somebody else is training it."""

    def is_cancelled(self) -> bool: ...

    def succeed(self) -> None: ...

    def fail(self, error: str) -> None: ...
