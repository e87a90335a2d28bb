"""Lifecycle states of experiments and runs (no database imports: clients use them too)."""

from __future__ import annotations

import enum


class Status(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    # A search's sample its pruner stopped at an epoch boundary (runs only): it ended as
    # planned, not in error; its run's ``epoch`` is the epoch it stopped at.
    pruned = "pruned"

    @property
    def finished(self) -> bool:
        return self in FINISHED


FINISHED = (Status.succeeded, Status.failed, Status.cancelled, Status.pruned)
