"""Builders and doubles shared by tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

API = "/api/v1"


class MemoryStore:
    """A RunStore that keeps everything in memory (for worker tests without a DB)."""

    def __init__(self, on_epoch: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.phases: list[str] = []
        self.epochs: list[dict[str, Any]] = []
        self.trials: list[dict[str, Any]] = []
        self.lr: float | None = None
        self.measures: dict[str, Any] | None = None
        self.artifacts: dict[str, bytes] = {}
        self.classifiers: dict[str, tuple[bytes, float]] = {}
        self.outcome: str | None = None
        self.error: str | None = None
        self.cancelled = False
        self.on_epoch = on_epoch

    def set_phase(self, phase: str) -> None:
        self.phases.append(phase)

    def record_epoch(self, metrics: dict[str, Any]) -> None:
        self.epochs.append(metrics)
        if self.on_epoch:
            self.on_epoch(metrics)

    def record_lr_trials(self, trials: list[dict[str, Any]], chosen_lr: float) -> None:
        self.trials, self.lr = trials, chosen_lr

    def record_measures(self, measures: dict[str, Any]) -> None:
        self.measures = measures

    def save_artifact(self, name: str, kind: str, data: bytes, content_type: str) -> None:
        self.artifacts[name] = data

    def reference_classifier(self, key: str, dataset: str,
                             train: Callable[[], tuple[bytes, float]]) -> tuple[bytes, float]:
        if key not in self.classifiers:
            self.classifiers[key] = train()
        return self.classifiers[key]

    def is_cancelled(self) -> bool:
        return self.cancelled

    def succeed(self) -> None:
        self.outcome = "succeeded"

    def fail(self, error: str) -> None:
        self.outcome, self.error = "failed", error


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
