"""The DB-backed :class:`workers.store.RunStore` that a run's driver reports through.

- **Fenced**: every write runs in a transaction that first holds the run for this
  driver's attempt (``repository.fence``); once the run moved on (re-queued as another
  attempt, cancelled, finished) the write is refused with :class:`StaleAttempt` or
  :class:`RunCancelled`, and the pipeline stops. Artifacts go to a folder of their
  attempt, so a stale driver never overwrites the current one's files.
- **Patient**: while the database is unreachable a write is retried with backoff for up to
  ``retry_s``; every write is idempotent (epochs by number, trials and measures replaced),
  so nothing recorded before or during an outage is lost or doubled.
- **Shared work with a heartbeat**: the reference classifier is claimed by one run, whose
  trainer heartbeats; a claim silent for ``claim_expiry_s`` is taken over. A run that
  waits for it first hands back what it holds (its runner: the ``waiting`` callback), so
  a trainer that lost its own runner gets another (issue 25's deadlock).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from sqlalchemy import Engine, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from models.plan import EpochMetrics
from service.orchestration.sampling import hopeless_reason, prune_decision
from service.persistence import repository as repo
from service.persistence.artifacts import ArtifactStore
from service.persistence.db import transaction
from service.persistence.tables import ReferenceClassifier, Run, Status, utcnow
from workers.context import RunEnv
from workers.measures import CodecRow, RunMeasures, SizeMeasures
from workers.space import StorageFull
from workers.store import ClassifierTrainer, LrTrial, RunCancelled, RunPruned, StaleAttempt

log = logging.getLogger("aelab.run_store")
T = TypeVar("T")
CLASSIFIER_POLL_S = 2.0


def _disconnected(exc: BaseException) -> bool:
    return isinstance(exc, OperationalError | InterfaceError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated)


class DbRunStore:
    """Reports attempt ``attempt`` of run ``run_id`` to the database. With ``log_reader``
    (returning the driver's log), the log is saved as the run's ``job.log`` artifact
    before any terminal state is recorded."""

    def __init__(self, sessions: sessionmaker[Session], artifacts: ArtifactStore,
                 run_id: int, *, attempt: int = 0,
                 log_reader: Callable[[], bytes] | None = None,
                 retry_s: float = 600.0, heartbeat_s: float = 20.0,
                 claim_expiry_s: float = 120.0) -> None:
        self.sessions = sessions
        self.artifacts = artifacts
        self.run_id = run_id
        self.attempt = attempt
        self.log_reader = log_reader
        self.retry_s = retry_s
        self.heartbeat_s = heartbeat_s
        self.claim_expiry = timedelta(seconds=claim_expiry_s)
        self.owner = f"run-{run_id}-a{attempt}"

    # --- the two disciplines: retry while the DB is away, fence every write ------------

    def _retry(self, work: Callable[[], T]) -> T:
        deadline = time.monotonic() + self.retry_s
        delay = 0.5
        while True:
            try:
                return work()
            except DBAPIError as exc:
                if not _disconnected(exc) or time.monotonic() + delay > deadline:
                    raise
                log.warning("database unreachable (%s); retrying in %.1fs",
                            type(exc.orig).__name__ if exc.orig else type(exc).__name__,
                            delay)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _write(self, fn: Callable[[Session], T], ended: Sequence[Status] = ()) -> T:
        def attempt() -> T:
            with transaction(self.sessions) as s:
                refused = repo.fence(s, run_id=self.run_id, attempt=self.attempt,
                                     ended=ended)
                if refused == Status.cancelled:
                    raise RunCancelled("cancelled")
                if refused is not None:
                    raise StaleAttempt(f"attempt {self.attempt} of run {self.run_id} is no "
                                       f"longer current (the run is {refused.value})")
                return fn(s)

        return self._retry(attempt)

    # --- RunStore ---------------------------------------------------------------------

    def save_log(self, ended: Sequence[Status] = ()) -> None:
        """Keep the driver's log as ``job.log``; a store too full for it leaves the log on
        Ray (what the logs endpoint then serves) rather than keep the run from ending.
        ``ended``: also once this attempt ended so (see :meth:`keep_pruned_log`)."""
        if self.log_reader is not None:
            try:
                self._put("job.log", "log", self.log_reader(), "text/plain; charset=utf-8",
                          ended)
            except StorageFull as exc:
                log.warning("run %s: its log stays on Ray: %s", self.run_id, exc)

    def keep_pruned_log(self) -> bool:
        """After the pipeline: a run this attempt's pruner ended (in an epoch's write, so
        nothing was written after) keeps the driver's whole log as ``job.log``, as a run
        that succeeded or failed does; True when the run was pruned in this attempt."""
        with self.sessions() as s:
            row = s.execute(select(Run.status, Run.attempt)
                            .where(Run.id == self.run_id)).one_or_none()
        if row is None or row[0] != Status.pruned or row[1] != self.attempt:
            return False
        self.save_log(ended=(Status.pruned,))
        return True

    def set_phase(self, phase: str) -> None:
        self._write(lambda s: repo.set_run(s, run_id=self.run_id, phase=phase))

    def record_epoch(self, metrics: EpochMetrics) -> None:
        """Record the epoch; a search's sample its pruner stops ends ``pruned`` in the
        same transaction (``sampling.prune_decision``), then :class:`RunPruned` (the
        reason: epoch and rule) stops the pipeline.

        Raises:
            RunPruned: the epoch was recorded and the run pruned after it."""
        def write(s: Session) -> str | None:
            repo.record_epoch(s, run_id=self.run_id, metrics=metrics)
            reason = prune_decision(s, run_id=self.run_id, epoch=metrics.epoch)
            if reason is not None:
                repo.finish_run(s, run_id=self.run_id, status=Status.pruned, error=reason,
                                attempt=self.attempt)
            return reason

        reason = self._write(write)
        if reason is not None:
            raise RunPruned(reason)

    def prune_hopeless(self, epoch: int, why: str) -> str | None:
        """End the run ``pruned`` when it is a sample of a search with a pruner — a sample
        that cannot go on (``why``: e.g. its loss diverged in ``epoch``) is hopeless under
        any rule (``sampling.hopeless_reason``) — and return the reason recorded; None
        when it is not (the caller records the failure)."""
        def write(s: Session) -> str | None:
            reason = hopeless_reason(s, run_id=self.run_id, epoch=epoch, why=why)
            if reason is not None:
                repo.finish_run(s, run_id=self.run_id, status=Status.pruned, error=reason,
                                attempt=self.attempt)
            return reason

        return self._write(write)

    def record_lr_trials(self, trials: list[LrTrial], chosen_lr: float) -> None:
        self._write(lambda s: repo.record_lr_trials(s, run_id=self.run_id, trials=trials,
                                                    chosen_lr=chosen_lr))

    def record_measures(self, measures: RunMeasures, codecs: Sequence[CodecRow] = (),
                        sizes: Sequence[SizeMeasures] = ()) -> None:
        self._write(lambda s: repo.record_measures(s, run_id=self.run_id, measures=measures,
                                                   codecs=codecs, sizes=sizes))

    def save_artifact(self, name: str, kind: str, data: bytes, content_type: str) -> None:
        self._put(name, kind, data, content_type)

    def _put(self, name: str, kind: str, data: bytes, content_type: str,
             ended: Sequence[Status] = ()) -> None:
        self._write(lambda s: None, ended)  # refuse before writing a file for a stale attempt
        stored = self.artifacts.put(f"run-{self.run_id}/a{self.attempt}", name, data)
        try:
            self._write(lambda s: repo.record_artifact(
                s, run_id=self.run_id, name=name, kind=kind, uri=stored.uri,
                content_type=content_type, size=stored.size, checksum=stored.checksum), ended)
        except BaseException:  # refused (the run was deleted or moved on): no orphan file
            self.artifacts.remove(stored.uri)
            raise

    def is_cancelled(self) -> bool:
        """True once the run no longer belongs to this attempt as a running run."""
        def read() -> bool:
            with self.sessions() as s:
                row = s.execute(select(Run.status, Run.attempt)
                                .where(Run.id == self.run_id)).one_or_none()
            return row is None or row[0] != Status.running or row[1] != self.attempt

        return self._retry(read)

    def succeed(self) -> None:
        self.save_log()
        self._write(lambda s: repo.finish_run(s, run_id=self.run_id, status=Status.succeeded,
                                              attempt=self.attempt))

    def fail(self, error: str) -> None:
        self.save_log()
        self._write(lambda s: repo.finish_run(s, run_id=self.run_id, status=Status.failed,
                                              error=error[:10_000], attempt=self.attempt))

    # --- the reference classifier: trained once, shared ---------------------------------

    def has_reference_classifier(self, key: str) -> bool:
        def read() -> bool:
            with self.sessions() as s:
                row = s.get(ReferenceClassifier, key)
                return row is not None and row.status == Status.succeeded

        return self._retry(read)

    def _claim(self, key: str, dataset: str) -> ReferenceClassifier | bool:
        """The finished row, True when this caller must train, False to wait."""
        try:
            with transaction(self.sessions) as s:
                now = utcnow()
                row = s.get(ReferenceClassifier, key)
                if row is None:
                    s.add(ReferenceClassifier(key=key, dataset=dataset, status=Status.running,
                                              owner=self.owner, heartbeat_at=now,
                                              updated_at=now))
                    return True
                if row.status == Status.succeeded:
                    return row
                beat = row.heartbeat_at or row.updated_at
                beat = beat.replace(tzinfo=beat.tzinfo or now.tzinfo)
                if row.status == Status.failed or beat < now - self.claim_expiry:
                    if row.status == Status.running:
                        log.warning("the reference classifier %s: its trainer (%s) is "
                                    "silent since %s; taking it over", key, row.owner, beat)
                    taken = s.execute(
                        update(ReferenceClassifier)
                        .where(ReferenceClassifier.key == key,
                               ReferenceClassifier.updated_at == row.updated_at)
                        .values(status=Status.running, owner=self.owner, heartbeat_at=now,
                                updated_at=now, error=None))
                    return taken.rowcount == 1  # type: ignore[attr-defined]
                return False
        except IntegrityError:  # another run inserted the row first
            return False

    def _heartbeat(self, key: str, stop: threading.Event) -> None:
        while not stop.wait(self.heartbeat_s):
            try:
                with transaction(self.sessions) as s:
                    s.execute(update(ReferenceClassifier).where(
                        ReferenceClassifier.key == key, ReferenceClassifier.owner == self.owner)
                        .values(heartbeat_at=utcnow(), updated_at=utcnow()))
            except DBAPIError as exc:  # a missed beat; the next one may land
                log.warning("classifier heartbeat failed: %s", type(exc).__name__)

    def reference_classifier(self, key: str, dataset: str, train: ClassifierTrainer,
                             waiting: Callable[[], None] | None = None
                             ) -> tuple[bytes, float]:
        """The classifier ``key``: read when trained, trained here when unclaimed (or its
        claim expired), else waited for — calling ``waiting`` first, once: a waiter hands
        back its runner, so that a trainer that lost its own gets one even when waiters
        would otherwise hold every slot of the cluster."""
        waited = False
        while True:
            claim = self._retry(lambda: self._claim(key, dataset))
            if isinstance(claim, ReferenceClassifier):
                assert claim.uri is not None and claim.accuracy is not None
                return self.artifacts.read(claim.uri), claim.accuracy
            if claim:
                break
            if self.is_cancelled():
                raise RunCancelled("cancelled while waiting for the reference classifier")
            if not waited:
                waited = True
                log.info("run %s: waiting for the reference classifier %s, which another "
                         "run is training", self.run_id, key)
                if waiting is not None:
                    waiting()
            time.sleep(CLASSIFIER_POLL_S)
        stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(key, stop), daemon=True,
                                name="aelab-classifier-heartbeat")
        beat.start()
        try:
            blob, accuracy = train()
            stored = self.artifacts.put("classifiers", f"{key}.pt", blob)
        except BaseException as exc:
            stop.set()
            error = str(exc)[:2000]
            self._retry(lambda: self._release(key, Status.failed, error=error))
            raise
        stop.set()
        self._retry(lambda: self._release(key, Status.succeeded, uri=stored.uri,
                                          accuracy=accuracy))
        return blob, accuracy

    def _release(self, key: str, status: Status, **values: Any) -> None:
        with transaction(self.sessions) as s:
            s.execute(update(ReferenceClassifier)
                      .where(ReferenceClassifier.key == key,
                             ReferenceClassifier.owner == self.owner)
                      .values(status=status, updated_at=utcnow(), heartbeat_at=utcnow(),
                              **values))


_engines: dict[str, Engine] = {}
_sessionmakers: dict[tuple[str, bool], sessionmaker[Session]] = {}


def sessions_for(url: str, *, webhook_events: bool = False) -> sessionmaker[Session]:
    """One engine per database per process (warm runners serve run after run); with
    ``webhook_events`` (the setting), the ends written through these sessions record
    their webhook events."""
    from service.persistence.db import make_engine, make_sessionmaker

    if url not in _engines:
        _engines[url] = make_engine(url)
    if (url, webhook_events) not in _sessionmakers:
        _sessionmakers[url, webhook_events] = make_sessionmaker(
            _engines[url], webhook_events=webhook_events)
    return _sessionmakers[url, webhook_events]


@dataclass(frozen=True)
class DbSessionOpener:
    """Opens, inside a warm runner, attempt ``attempt`` of run ``run_id``: the run's env
    and a store on the service's database, fenced by the attempt. Picklable: it carries
    ids only; the database URL comes from the runner's own settings (its environment or
    the URL file), never through Ray."""

    run_id: int
    attempt: int
    storage_key: str

    def __call__(self) -> tuple[RunEnv, DbRunStore]:
        from service.settings import Settings

        settings = Settings()
        store = DbRunStore(sessions_for(settings.sqlalchemy_url,
                                        webhook_events=bool(settings.webhook_events)),
                           ArtifactStore(settings.artifact_root), self.run_id,
                           attempt=self.attempt, retry_s=settings.db_retry_s,
                           heartbeat_s=settings.classifier_heartbeat_s,
                           claim_expiry_s=settings.classifier_claim_expiry_s)
        return settings.run_env(self.storage_key, run_id=self.run_id), store
