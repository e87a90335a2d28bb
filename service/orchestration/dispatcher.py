"""The dispatcher: admits queued runs onto an executor, follows them, reconciles.

The DB is the source of truth for the API; the executor (Ray) for what is running. Every
run gets a deterministic job id (run id + attempt) that is written to the DB *before* the
submit, so a crash between the two can never start a run twice.
"""

from __future__ import annotations

import enum
import logging
import threading
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy.orm import Session, sessionmaker

from service.errors import Unavailable
from service.persistence import repository as repo
from service.persistence.artifacts import ArtifactStore
from service.persistence.db import transaction
from service.persistence.tables import Run, Status

log = logging.getLogger("aelab.dispatcher")


class JobState(enum.StrEnum):
    pending = "PENDING"
    running = "RUNNING"
    succeeded = "SUCCEEDED"
    failed = "FAILED"
    stopped = "STOPPED"


@dataclass(frozen=True)
class JobRequest:
    """One run's job: its id and the run it executes. The job's driver reads everything
    else (the run spec) from the run's row."""

    job_id: str
    run_id: int
    metadata: dict[str, str]  # shown beside the job in the Ray dashboard


class Executor(Protocol):
    """Runs the worker pipeline of one run somewhere (Ray: one Ray job per run)."""

    def submit(self, job: JobRequest) -> None:
        """Start the run; submitting a job id that already exists must be a no-op."""

    def state(self, job_id: str) -> JobState | None:
        """The job's state, or None when the executor does not know the job."""

    def stop(self, job_id: str) -> None: ...

    def failure_reason(self, job_id: str) -> str:
        """One line a person can act on: why the job ended."""

    def logs(self, job_id: str) -> str | None:
        """The job driver's log so far, or None when the executor does not know the job."""

    def check(self) -> None:
        """Raise :class:`service.errors.Unavailable` when the executor cannot be reached."""

    @property
    def dashboard_url(self) -> str | None: ...


def job_id_for(run: Run) -> str:
    # Readable in the Ray dashboard's job list.
    return (f"aelab-e{run.experiment_id}-r{run.id}-{run.model}-{run.dataset}"
            f"-a{run.attempt}-{run.uid}").replace("_", "-")


@dataclass
class Dispatcher:
    sessions: sessionmaker[Session]
    executor: Executor
    max_in_flight: int = 4
    interval_s: float = 2.0
    reconcile_every: int = 15  # ticks
    executor_error: str | None = None
    artifacts: ArtifactStore | None = None  # where driver logs fetched from Ray are kept
    _logs_pending: dict[int, str] = field(default_factory=dict)  # run id → job id
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _wake: threading.Event = field(default_factory=threading.Event)

    # --- one pass ---------------------------------------------------------------------

    def tick(self, reconcile: bool = False) -> None:
        """Follow running runs, then admit queued ones. Never raises for Ray trouble."""
        try:
            self.executor.check()
        except Unavailable as exc:
            if self.executor_error is None:
                log.warning("executor unreachable: %s", exc)
            self.executor_error = str(exc)
            return
        self.executor_error = None
        self.follow(reconcile=reconcile)
        self.collect_logs()
        self.admit()

    def admit(self) -> int:
        with transaction(self.sessions) as s:
            free = self.max_in_flight - len(repo.running_runs(s))
            if free <= 0:
                return 0
            runs = list(repo.queued_runs(s, limit=free))
            jobs = []
            for run in runs:
                job = JobRequest(job_id_for(run), run.id, {
                    "experiment": str(run.experiment_id), "run": str(run.id),
                    "model": run.model, "dataset": run.dataset})
                repo.set_run(s, run_id=run.id, status=Status.running, phase="submitted",
                             ray_job_id=job.job_id, started_at=repo.utcnow(), error=None)
                repo.refresh_experiment_status(s, experiment_id=run.experiment_id)
                jobs.append(job)
        for job in jobs:  # after the commit: the job id is durable first
            try:
                self.executor.submit(job)
                log.info("submitted %s", job.job_id)
            except Exception as exc:  # not submitted: back to the queue, tried again later
                log.warning("could not submit %s: %s", job.job_id, exc)
                self.executor_error = str(exc)
                with transaction(self.sessions) as s:
                    repo.set_run(s, run_id=job.run_id, status=Status.queued, phase=None,
                                 ray_job_id=None, started_at=None)
        return len(jobs)

    def follow(self, reconcile: bool = False) -> None:
        """Finish runs whose job ended without the run saying so; re-queue runs the
        executor no longer knows (only checked when reconciling: a fresh submit may not
        be visible yet)."""
        with transaction(self.sessions) as s:
            running = [(r.id, r.ray_job_id, r.attempt) for r in repo.running_runs(s)]
        for run_id, job_id, attempt in running:
            if job_id is None:
                continue
            state = self.executor.state(job_id)
            if state is None:
                if reconcile:
                    with transaction(self.sessions) as s:
                        log.warning("run %s: job %s unknown to Ray; re-queued", run_id, job_id)
                        repo.set_run(s, run_id=run_id, status=Status.queued, phase=None,
                                     ray_job_id=None, attempt=attempt + 1)
                continue
            if state in (JobState.failed, JobState.stopped, JobState.succeeded):
                reason = (self.executor.failure_reason(job_id) if state != JobState.succeeded
                          else "the job ended without reporting a result")
                self.keep_log(run_id, job_id)  # the driver could not save it itself
                with transaction(self.sessions) as s:
                    status = Status.cancelled if state == JobState.stopped else Status.failed
                    repo.finish_run(s, run_id=run_id, status=status, error=reason)

    def cancel(self, runs: list[Run]) -> None:
        for run in runs:
            if run.ray_job_id:
                try:
                    self.executor.stop(run.ray_job_id)
                except Unavailable as exc:
                    log.warning("could not stop %s: %s", run.ray_job_id, exc)
            with transaction(self.sessions) as s:
                repo.finish_run(s, run_id=run.id, status=Status.cancelled,
                                error="cancelled by the user")
            if run.ray_job_id:
                self._logs_pending[run.id] = run.ray_job_id

    # --- driver logs the drivers could not save (cancel, kill) --------------------------

    def keep_log(self, run_id: int, job_id: str) -> bool:
        """Save the job's log from Ray as the run's ``job.log`` unless it has one; True
        when the run has a log afterwards (or Ray no longer knows the job)."""
        if self.artifacts is None:
            return True
        with self.sessions() as s:
            if repo.has_artifact(s, run_id=run_id, name="job.log"):
                return True
        text = self.executor.logs(job_id)
        if text is None:
            return True  # lost with its head: the logs endpoint says so
        stored = self.artifacts.put(f"run-{run_id}", "job.log", text.encode())
        with transaction(self.sessions) as s:
            repo.record_artifact(s, run_id=run_id, name="job.log", kind="log",
                                 uri=stored.uri, content_type="text/plain; charset=utf-8",
                                 size=stored.size, checksum=stored.checksum)
        return True

    def collect_logs(self) -> None:
        """Keep the logs of cancelled runs once their jobs have stopped."""
        for run_id, job_id in list(self._logs_pending.items()):
            state = self.executor.state(job_id)
            if state in (JobState.pending, JobState.running):
                continue
            try:
                self.keep_log(run_id, job_id)
            except Exception as exc:  # best effort: the live log stays on Ray
                log.warning("could not keep the log of run %s: %s", run_id, exc)
            self._logs_pending.pop(run_id, None)

    # --- background loop --------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="aelab-dispatcher",
                                        daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        ticks = 0
        while not self._stop.is_set():
            try:
                self.tick(reconcile=ticks % self.reconcile_every == 0)
            except Exception:  # the loop must outlive any one bad pass
                log.exception("dispatcher pass failed")
            ticks += 1
            self._wake.wait(self.interval_s)
            self._wake.clear()
