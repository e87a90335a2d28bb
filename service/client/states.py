"""Lifecycle states of experiments and runs (no database imports: clients use them too)."""

from __future__ import annotations

import enum


class Status(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (Status.succeeded, Status.failed, Status.cancelled)


FINISHED = (Status.succeeded, Status.failed, Status.cancelled)
