"""The dispatcher: admits queued runs onto an executor, follows them, reconciles.

The DB is the source of truth for the API; the executor (Ray) for what is running.

- Every run attempt gets a job id (run, attempt, uid) that is written to the DB, with the
  cluster it goes to, *before* the submit; submitting an existing job id is a no-op. A crash
  between the two can never start a run twice: on reconcile, a job its own cluster does not
  know was never started and is submitted then, under the same id.
- A run is re-queued (as a new attempt) only when its job is lost: the cluster that ran it
  is confirmed gone, or the job ended without the run reporting an outcome (its driver
  died). A job unknown to a *different* cluster is never a reason. Each cause has its own
  budget: a run fails once ``max_attempts`` of its attempts were lost by the run itself
  (its driver died), or once its cluster was lost more than ``max_cluster_retries`` times
  (so a run that lived through head replacements still has all its own attempts); every
  attempt's end and cause stay on the run.
- Job drivers fence their writes with their attempt (``run_store``), so a driver that was
  replaced can change nothing; and no job outlives its run: on reconcile, jobs in flight
  whose run was cancelled (a stop that could not reach Ray) or moved on to a later attempt
  are stopped, and runs still running in a cancelled experiment (the API died between the
  cancel and the stop) are cancelled.
- While the artifact store is full (``ArtifactStore.full``: low on free space, or a write
  failed for space) no run is started or re-started (``store_full`` says why); keeping a
  driver's log that does not fit never keeps a run from being settled.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from service.errors import Unavailable
from service.orchestration.sampling import propose_samples
from service.persistence import repository as repo
from service.persistence.artifacts import ArtifactStore
from service.persistence.db import transaction
from service.persistence.tables import Run, Status
from workers.logs import bound
from workers.text import first_line

log = logging.getLogger("aelab.dispatcher")


class JobState(enum.StrEnum):
    pending = "PENDING"
    running = "RUNNING"
    succeeded = "SUCCEEDED"
    failed = "FAILED"
    stopped = "STOPPED"


ENDED = (JobState.succeeded, JobState.failed, JobState.stopped)


@dataclass(frozen=True)
class JobRequest:
    """One attempt of one run. The job's driver reads everything else (the run spec)
    from the run's row, and writes only while ``attempt`` is the run's current one."""

    job_id: str
    run_id: int
    attempt: int
    metadata: dict[str, str]  # shown beside the job in the Ray dashboard


class Executor(Protocol):
    """Runs the worker pipeline of one run somewhere (Ray: one Ray job per run)."""

    def submit(self, job: JobRequest) -> None:
        """Start the run; submitting a job id that already exists must be a no-op."""

    def state(self, job_id: str) -> JobState | None:
        """The job's state, or None when the executor does not know the job."""

    def states(self, job_ids: list[str]) -> dict[str, JobState | None]:
        """:meth:`state` of each job, in one call whose cost follows the jobs in flight
        (what the dispatcher polls every tick)."""

    def live_jobs(self) -> dict[str, JobState]:
        """Every job not yet ended on the cluster jobs go to now (any submitter's)."""

    def stop(self, job_id: str) -> None: ...

    def failure_reason(self, job_id: str) -> str:
        """One line a person can act on: why the job ended."""

    def logs(self, job_id: str) -> str | None:
        """The job driver's log so far, or None when the executor does not know the job."""

    def check(self) -> None:
        """Raise :class:`service.errors.Unavailable` when the executor cannot be reached."""

    @property
    def cluster_id(self) -> str | None:
        """Identity of the cluster jobs go to now (a Ray session), once checked."""

    def is_gone(self, cluster: str) -> bool:
        """Whether the cluster ``cluster`` is confirmed gone (and with it its jobs)."""

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
    # Jobs starting at once (submitted, the pipeline not yet running): Ray starts each
    # job's supervisor and driver on the head, and many starting together slow every one.
    max_starting: int = 4
    interval_s: float = 2.0
    # While queued runs wait only for a job to finish starting (``max_starting``), the
    # database is read this often to submit the next one as soon as a driver starts,
    # instead of a whole pass (``interval_s``) later.
    starting_poll_s: float = 0.2
    reconcile_every: int = 15  # ticks
    max_attempts: int = 3  # attempts a run may lose itself (its driver died); fails at this
    max_cluster_retries: int = 10  # re-queues after its cluster was lost; fails at one more
    executor_error: str | None = None
    submit_error: str | None = None  # the last submit that failed, until one succeeds
    store_full: str | None = None  # why no run starts: the artifact store is full
    # Whether the last admit left runs queued, with room in flight, behind starting jobs.
    held_by_starting: bool = False
    artifacts: ArtifactStore | None = None  # where driver logs fetched from Ray are kept
    ticks: int = 0  # passes made (GET /metrics: aelab_dispatch_ticks_total)
    # Warm runners by (GPUs, CPUs), as the last reconciling pass found them (None: unknown).
    runner_shapes: dict[tuple[float, float], int] | None = None
    _logs_pending: dict[int, str] = field(default_factory=dict)  # run id → job id
    _foreign_warned: set[int] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _wake: threading.Event = field(default_factory=threading.Event)

    # --- one pass ---------------------------------------------------------------------

    def tick(self, reconcile: bool = False) -> None:
        """Follow running runs, then admit queued ones. Never raises for Ray trouble."""
        self.ticks += 1
        if reconcile:  # the database alone: also while Ray is away
            self.settle()
        try:
            self.executor.check()
        except Unavailable as exc:
            error = first_line(str(exc))
            if self.executor_error != error:
                log.warning("executor unreachable: %s", error)
            self.executor_error = error
            return
        self.executor_error = None
        states = self.follow(reconcile=reconcile)
        if reconcile:
            self.sweep()
        self.collect_logs(states)
        self.admit()
        if reconcile:
            self.count_runners()

    def count_runners(self) -> None:
        """Refresh :attr:`runner_shapes` from the executor (when it can count runners)."""
        count = getattr(self.executor, "runners", None)
        if count is None:
            return
        try:
            self.runner_shapes = count()
        except Unavailable as exc:
            log.warning("could not count the runners: %s", first_line(str(exc)))
            self.runner_shapes = None

    def admit(self, propose: bool = True) -> int:
        """Submit the oldest queued runs while there is room in flight and fewer than
        ``max_starting`` jobs are starting, first making the search samples whose slots
        are free unless not ``propose``; returns how many were submitted."""
        self.held_by_starting = False
        full = self.artifacts.full() if self.artifacts is not None else None
        if full != self.store_full:
            if full:
                log.warning("the artifact store is %s; no run starts until it has room", full)
            else:
                log.info("the artifact store has room again; runs start")
        self.store_full = full
        if full:
            return 0
        if propose:
            self.propose()
        cluster = self.executor.cluster_id
        with transaction(self.sessions) as s:
            running = repo.running_runs(s)
            starting = sum(1 for r in running if r.phase == repo.SUBMITTED)
            room = self.max_in_flight - len(running)
            free = max(0, min(room, self.max_starting - starting))
            if room <= 0:
                return 0
            queued = repo.queued_runs(s, limit=free + 1)
            # More runs wait than may start, and the starting jobs (not the room in
            # flight) are what holds them.
            self.held_by_starting = len(queued) > free and free < room
            jobs = []
            for run in queued[:free]:
                job = JobRequest(job_id_for(run), run.id, run.attempt, {
                    "experiment": str(run.experiment_id), "run": str(run.id),
                    "model": run.model, "dataset": run.dataset, "attempt": str(run.attempt)})
                if not repo.start_attempt(s, run_id=run.id, attempt=run.attempt,
                                          job_id=job.job_id, cluster=cluster):
                    continue  # cancelled (or deleted) since it was read: it stays so
                repo.refresh_experiment_status(s, experiment_id=run.experiment_id)
                jobs.append(job)
        for job in jobs:  # after the commit: the job id is durable first
            # Its lines carry the run's ids (JSON logs: run_id, experiment_id, attempt).
            with bound(run_id=job.run_id, attempt=job.attempt,
                       experiment_id=int(job.metadata["experiment"])):
                self._submit(job)
        return len(jobs)

    def _submit(self, job: JobRequest) -> None:
        """Hand one attempt to the executor; one it refuses goes back to the queue."""
        try:
            self.executor.submit(job)
            self.submit_error = None
            log.info("submitted %s", job.job_id)
        except Exception as exc:  # not submitted: back to the queue, tried again later
            self.submit_error = first_line(f"submitting {job.job_id}: {exc}")
            log.warning("could not submit %s: %s", job.job_id, first_line(str(exc)))
            with transaction(self.sessions) as s:
                if not repo.unsubmit(s, run_id=job.run_id, attempt=job.attempt):
                    log.warning("%s: its driver started (or the run ended) after all; "
                                "followed as submitted", job.job_id)

    def propose(self) -> int:
        """Make the search samples whose slots are free (``sampling.propose_samples``), in
        a transaction of their own: a proposal that fails (two proposers raced for a
        sample) costs this pass's proposals only."""
        try:
            with transaction(self.sessions) as s:
                return propose_samples(s)
        except Exception as exc:
            log.warning("proposing search samples failed: %s: %s", type(exc).__name__,
                        first_line(str(exc)))
            return 0

    def follow(self, reconcile: bool = False) -> dict[str, JobState | None]:
        """Settle runs whose job ended without the run saying so, or was lost with its
        cluster. Jobs their own cluster does not know are submitted then (only checked
        when reconciling: they were never started)."""
        with self.sessions() as s:
            running = [(r.id, r.ray_job_id, r.attempt, r.cluster, r.experiment_id, r.model,
                        r.dataset) for r in repo.running_runs(s)]
        here = self.executor.cluster_id
        # One call for every job followed this tick (the runs' and cancelled runs' whose
        # logs are still to keep), not one per job.
        states = self.executor.states(
            [job_id for _, job_id, _, cluster, *_ in running
             if job_id is not None and cluster == here] + list(self._logs_pending.values()))
        for run_id, job_id, attempt, cluster, experiment_id, model, dataset in running:
            if job_id is None:
                continue
            if cluster != here:
                if cluster is None or self.executor.is_gone(cluster):
                    self.lost(run_id, attempt, f"its Ray cluster ({cluster or 'unknown'}) "
                                                "is gone", lost_to=repo.LOST_TO_CLUSTER)
                elif run_id not in self._foreign_warned:
                    self._foreign_warned.add(run_id)
                    log.warning("run %s: its job %s is on Ray cluster %s, not the one this "
                                "service reaches (%s); left alone", run_id, job_id, cluster,
                                here)
                continue
            state = states.get(job_id)
            if state is None:
                if reconcile:
                    log.warning("run %s: job %s was never started (a crash before its "
                                "submit); submitting it now", run_id, job_id)
                    self.executor.submit(JobRequest(job_id, run_id, attempt, {
                        "experiment": str(experiment_id), "run": str(run_id),
                        "model": model, "dataset": dataset, "attempt": str(attempt)}))
                continue
            if state not in ENDED:
                continue
            if state == JobState.stopped:
                self.keep_log_or_warn(run_id, job_id)  # the driver could not save it
                with transaction(self.sessions) as s:
                    repo.finish_run(s, run_id=run_id, status=Status.cancelled,
                                    error="its Ray job was stopped", attempt=attempt)
                continue
            reason = (self.executor.failure_reason(job_id) if state == JobState.failed
                      else "the job ended without reporting a result")
            self.keep_log_or_warn(run_id, job_id, attempt=attempt)  # this attempt's, apart
            self.lost(run_id, attempt, f"its driver died: {reason}")
        return states

    def settle(self) -> None:
        """End experiments whose runs all ended while their status did not (runs that
        ended together on PostgreSQL: ``repo.experiments_left_unsettled``)."""
        try:
            with self.sessions() as s:
                unsettled = repo.experiments_left_unsettled(s)
            for experiment_id in unsettled:
                with transaction(self.sessions) as s:
                    repo.refresh_experiment_status(s, experiment_id=experiment_id)
        except SQLAlchemyError as exc:  # the database away: the next pass settles them
            log.warning("could not settle ended experiments: %s", first_line(str(exc)))

    def sweep(self) -> None:
        """Stop what outlives its run (when reconciling): runs still running in a cancelled
        experiment are cancelled (the cancel was recorded, the stop never came: the API
        died between them); jobs in flight on this cluster whose run was cancelled (a stop
        Ray did not get) or has moved on to a later attempt are stopped. Jobs no attempt in
        this database names — another service's on a shared cluster, a deleted run's —
        are left alone (a deleted run's driver stops at its next write, refused)."""
        with self.sessions() as s:
            leftover = list(repo.running_runs_of_cancelled(s))
        if leftover:
            log.warning("runs %s of cancelled experiments were still running (their cancel "
                        "was recorded, their jobs never stopped); cancelling them",
                        [run.id for run in leftover])
            self.cancel(leftover)
        try:
            live = self.executor.live_jobs()
        except Unavailable as exc:
            log.warning("could not list the jobs in flight: %s", first_line(str(exc)))
            return
        with self.sessions() as s:
            outliving = repo.jobs_outliving_their_runs(s, job_ids=list(live))
        for job_id, run_id, current in outliving:
            log.warning("job %s outlives its run %s (cancelled, or on a later attempt); "
                        "stopping it", job_id, run_id)
            try:
                self.executor.stop(job_id)
            except Unavailable as exc:
                log.warning("could not stop %s: %s", job_id, first_line(str(exc)))
                continue
            if current:  # the cancelled run's log, once its job has stopped
                self._logs_pending.setdefault(run_id, job_id)

    def lost(self, run_id: int, attempt: int, reason: str,
             lost_to: str = repo.LOST_TO_RUN) -> None:
        """The run's current attempt is lost (to its cluster, or by the run: its driver
        died): re-queue it, or fail it once that cause's budget is spent."""
        with bound(run_id=run_id, attempt=attempt), transaction(self.sessions) as s:
            lost = repo.lost_attempts(s, run_id=run_id, attempt=attempt)
            lost[lost_to] += 1
            own, cluster = lost[repo.LOST_TO_RUN], lost[repo.LOST_TO_CLUSTER]
            if own >= self.max_attempts or cluster > self.max_cluster_retries:
                spent = (f"{own} of {self.max_attempts} attempts lost by the run itself"
                         if lost_to == repo.LOST_TO_RUN else
                         f"its cluster lost {cluster} times, more than the "
                         f"{self.max_cluster_retries} re-queues allowed")
                log.error("run %s: attempt %s lost (%s); %s, giving up", run_id, attempt,
                          reason, spent)
                repo.finish_run(s, run_id=run_id, status=Status.failed, attempt=attempt,
                                error=f"gave up after {attempt + 1} attempts ({spent}); "
                                      f"the last one was lost: {reason}", lost_to=lost_to)
            else:
                log.warning("run %s: attempt %s lost (%s; %s by the run, %s with its "
                            "cluster); re-queued as attempt %s", run_id, attempt, reason,
                            own, cluster, attempt + 1)
                repo.requeue(s, run_id=run_id, attempt=attempt, reason=reason,
                             lost_to=lost_to)

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

    def in_flight(self) -> int:
        with self.sessions() as s:
            return len(repo.running_runs(s))

    # --- driver logs the drivers could not save (cancel, kill) --------------------------

    def keep_log(self, run_id: int, job_id: str, attempt: int | None = None) -> None:
        """Save the job's log from Ray (a log Ray no longer has is reported as lost by the
        logs endpoint): as the run's ``job.log`` unless it has one, or — for an attempt
        that was lost and is retried — as ``job-a<attempt>.log``, kept beside the next
        attempt's."""
        if self.artifacts is None:
            return
        name = "job.log" if attempt is None else f"job-a{attempt}.log"
        with self.sessions() as s:
            if s.get(Run, run_id) is None or repo.has_artifact(s, run_id=run_id, name=name):
                return  # deleted meanwhile, or kept already
        text = self.executor.logs(job_id)
        if text is None:
            return
        key = f"run-{run_id}" if attempt is None else f"run-{run_id}/a{attempt}"
        stored = self.artifacts.put(key, name, text.encode())
        try:
            with transaction(self.sessions) as s:
                repo.record_artifact(s, run_id=run_id, name=name, kind="log",
                                     uri=stored.uri, content_type="text/plain; charset=utf-8",
                                     size=stored.size, checksum=stored.checksum)
        except BaseException:  # the run was deleted since the check: leave no orphan file
            self.artifacts.remove(stored.uri)
            raise

    def keep_log_or_warn(self, run_id: int, job_id: str, attempt: int | None = None
                         ) -> None:
        """:meth:`keep_log`, where a log that cannot be written (a full store: no temporary
        file stays) is left on Ray, so the run is settled all the same."""
        try:
            self.keep_log(run_id, job_id, attempt=attempt)
        except OSError as exc:
            log.warning("run %s: its job's log stays on Ray: %s", run_id, first_line(str(exc)))

    def collect_logs(self, states: dict[str, JobState | None]) -> None:
        """Keep the logs of cancelled runs once their jobs have stopped (``states``: what
        :meth:`follow` read this tick)."""
        for run_id, job_id in list(self._logs_pending.items()):
            if job_id not in states:  # cancelled since follow() read: next tick
                continue
            try:
                if states.get(job_id) in (JobState.pending, JobState.running):
                    continue
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

    def stop(self, timeout_s: float = 3.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)

    def _loop(self) -> None:
        ticks = 0
        while not self._stop.is_set():
            try:
                self.tick(reconcile=ticks % self.reconcile_every == 0)
            except Exception as exc:  # the loop must outlive any one bad pass (DB down…)
                log.warning("dispatcher pass failed: %s: %s", type(exc).__name__,
                            str(exc).splitlines()[0][:300] if str(exc) else "")
            ticks += 1
            deadline = time.monotonic() + self.interval_s
            self._admit_while_starting(deadline)
            self._wake.wait(max(0.0, deadline - time.monotonic()))
            self._wake.clear()

    def _admit_while_starting(self, deadline: float) -> None:
        """Until ``deadline`` (the next pass) or a wake: while queued runs are held only
        by jobs starting, admit them as each driver's pipeline starts (reading runs from
        the database; search samples are proposed by the passes). Not while Ray is away
        or refused the last submit: the next pass tries again."""
        while (self.held_by_starting and self.executor_error is None
               and self.submit_error is None and time.monotonic() < deadline):
            if self._wake.wait(self.starting_poll_s):
                return
            try:
                self.admit(propose=False)
            except Exception as exc:  # the next pass tries again
                log.warning("admitting runs failed: %s: %s", type(exc).__name__,
                            first_line(str(exc)))
                return
