"""The DB-backed :class:`workers.store.RunStore` that a run's driver reports through."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from models.plan import EpochMetrics
from service.persistence import repository as repo
from service.persistence.artifacts import ArtifactStore
from service.persistence.db import transaction
from service.persistence.tables import ReferenceClassifier, Run, Status, utcnow
from workers.store import ClassifierTrainer, LrTrial, RunCancelled

CLASSIFIER_STALE = timedelta(hours=6)  # a trainer silent this long is presumed dead
CLASSIFIER_POLL_S = 2.0


class DbRunStore:
    """Reports one run to the database. With ``log_path`` (the driver's own log), the log
    is saved as the run's ``job.log`` artifact before any terminal state is recorded."""

    def __init__(self, sessions: sessionmaker[Session], artifacts: ArtifactStore,
                 run_id: int, *, log_path: Path | None = None) -> None:
        self.sessions = sessions
        self.artifacts = artifacts
        self.run_id = run_id
        self.log_path = log_path

    def save_log(self) -> None:
        if self.log_path is not None and self.log_path.is_file():
            self.save_artifact("job.log", "log", self.log_path.read_bytes(),
                               "text/plain; charset=utf-8")

    def set_phase(self, phase: str) -> None:
        with transaction(self.sessions) as s:
            repo.set_run(s, run_id=self.run_id, phase=phase)

    def record_epoch(self, metrics: EpochMetrics) -> None:
        with transaction(self.sessions) as s:
            repo.record_epoch(s, run_id=self.run_id, metrics=metrics)

    def record_lr_trials(self, trials: list[LrTrial], chosen_lr: float) -> None:
        with transaction(self.sessions) as s:
            repo.record_lr_trials(s, run_id=self.run_id, trials=trials, chosen_lr=chosen_lr)

    def record_measures(self, measures: dict[str, Any]) -> None:
        with transaction(self.sessions) as s:
            repo.record_measures(s, run_id=self.run_id, measures=measures)

    def save_artifact(self, name: str, kind: str, data: bytes, content_type: str) -> None:
        stored = self.artifacts.put(f"run-{self.run_id}", name, data)
        with transaction(self.sessions) as s:
            repo.record_artifact(s, run_id=self.run_id, name=name, kind=kind, uri=stored.uri,
                                 content_type=content_type, size=stored.size,
                                 checksum=stored.checksum)

    def is_cancelled(self) -> bool:
        with self.sessions() as s:
            status = s.scalar(select(Run.status).where(Run.id == self.run_id))
        return status in (Status.cancelled, None)

    def succeed(self) -> None:
        self.save_log()
        with transaction(self.sessions) as s:
            repo.finish_run(s, run_id=self.run_id, status=Status.succeeded)
            repo.set_run(s, run_id=self.run_id, phase=None)

    def fail(self, error: str) -> None:
        self.save_log()
        with transaction(self.sessions) as s:
            repo.finish_run(s, run_id=self.run_id, status=Status.failed, error=error[:10_000])

    # --- the reference classifier: trained once, shared --------------------------------

    def _claim(self, key: str, dataset: str) -> ReferenceClassifier | bool:
        """The finished row, True when this caller must train, False to wait."""
        try:
            with transaction(self.sessions) as s:
                row = s.get(ReferenceClassifier, key)
                if row is None:
                    s.add(ReferenceClassifier(key=key, dataset=dataset, status=Status.running))
                    return True
                if row.status == Status.succeeded:
                    return row
                stale = row.updated_at.replace(tzinfo=row.updated_at.tzinfo or utcnow().tzinfo) \
                    < utcnow() - CLASSIFIER_STALE
                if row.status == Status.failed or stale:
                    taken = s.execute(
                        update(ReferenceClassifier)
                        .where(ReferenceClassifier.key == key,
                               ReferenceClassifier.updated_at == row.updated_at)
                        .values(status=Status.running, updated_at=utcnow(), error=None))
                    return taken.rowcount == 1  # type: ignore[attr-defined]
                return False
        except IntegrityError:  # another run inserted the row first
            return False

    def has_reference_classifier(self, key: str) -> bool:
        with self.sessions() as s:
            row = s.get(ReferenceClassifier, key)
            return row is not None and row.status == Status.succeeded

    def reference_classifier(self, key: str, dataset: str,
                             train: ClassifierTrainer) -> tuple[bytes, float]:
        while True:
            claim = self._claim(key, dataset)
            if isinstance(claim, ReferenceClassifier):
                assert claim.uri is not None and claim.accuracy is not None
                return self.artifacts.read(claim.uri), claim.accuracy
            if claim:
                break
            if self.is_cancelled():
                raise RunCancelled("cancelled while waiting for the reference classifier")
            time.sleep(CLASSIFIER_POLL_S)
        try:
            blob, accuracy = train()
            stored = self.artifacts.put("classifiers", f"{key}.pt", blob)
        except BaseException as exc:
            with transaction(self.sessions) as s:
                s.execute(update(ReferenceClassifier).where(ReferenceClassifier.key == key)
                          .values(status=Status.failed, error=str(exc)[:2000],
                                  updated_at=utcnow()))
            raise
        with transaction(self.sessions) as s:
            s.execute(update(ReferenceClassifier).where(ReferenceClassifier.key == key)
                      .values(status=Status.succeeded, uri=stored.uri, accuracy=accuracy,
                              updated_at=utcnow()))
        return blob, accuracy
