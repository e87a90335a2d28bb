"""The Executor on Ray: one Ray job per run, through Ray's job-submission API.

Each run appears in the Ray dashboard's job list under its readable id, with its logs;
stopping the job stops its Tune trials and frees their GPUs.

Which cluster a job went to matters: a run is re-queued only when the cluster that ran
its job says the job is gone, or that cluster is confirmed gone. A cluster is known by its
Ray *session* (``/api/version``'s ``session_name``, unique to one start of a head): the
executor's ``cluster_id``. The cluster is ``RAY_ADDRESS``'s, or the service's own head
(:mod:`.ray_head`); Ray's token auth is :mod:`.ray_auth`'s, and why a job failed is read
from its log by :mod:`.job_logs`.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

from service.errors import Unavailable
from service.orchestration.dispatcher import ENDED, JobRequest, JobState
from service.orchestration.job_logs import failure_line
from service.orchestration.ray_auth import probe, ray_auth_token
from service.orchestration.ray_head import EmbeddedHead
from service.settings import Settings, job_environment

LIVE_JOBS_LIMIT = 10_000  # jobs in flight at once; far above any max_in_flight
STATE_TIMEOUT_S = 10


def ray_job_url(dashboard: str | None, job_id: str | None) -> str | None:
    """The Ray dashboard's page of one job (its submission id), when both are known."""
    if not dashboard or not job_id:
        return None
    return f"{dashboard.rstrip('/')}/#/jobs/{job_id}"


def _unknown_job(exc: Exception) -> bool:
    """Whether Ray's error says it does not know the job."""
    return "does not exist" in str(exc) or "not found" in str(exc).lower()


class RayExecutor:
    """Runs each run as a Ray job on one cluster: ``RAY_ADDRESS``'s (``dashboard_url``
    given), or the service's own embedded head (``embedded`` given, ``dashboard_url``
    learnt from it). ``job_env`` is every job's environment (``job_environment``).

    ``cluster_id`` is the session of the cluster jobs go to now and ``dashboard_url`` its
    dashboard (also its job API), both known once :meth:`check` succeeded. Calls that
    cannot reach Ray raise :class:`~service.errors.Unavailable`; the dispatcher retries.
    """

    def __init__(self, dashboard_url: str | None, *, job_env: dict[str, str],
                 embedded: EmbeddedHead | None = None) -> None:
        self.dashboard_url = dashboard_url
        self.job_env = job_env
        self.cluster_id: str | None = None
        self._embedded = embedded
        self._client: Any = None
        self._client_address: str | None = None
        self._state_client: Any = None
        self._state_address: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings, *,
                      announce: Callable[[str], None] | None = None) -> RayExecutor:
        """Join ``RAY_ADDRESS``, or run an embedded head (started in the background) whose
        news (up, re-adopted, left running) goes to ``announce`` as well as the log."""
        address = settings.ray_address
        if address and ray_auth_token() and not os.environ.get("RAY_AUTH_MODE"):
            # A token was given for the cluster: Ray's clients use it only in token mode.
            os.environ["RAY_AUTH_MODE"] = "token"
        if address and not address.startswith(("http://", "https://")):
            # A GCS address (host:6379): the job API lives on the dashboard port.
            address = f"http://{address.split(':')[0]}:8265"
        embedded = None if address else EmbeddedHead(
            settings.home_path / "ray", dashboard_port=settings.dashboard_port,
            dead_after_s=settings.ray_head_dead_after_s, niceness=settings.training_niceness,
            announce=announce)
        env = job_environment(settings, database_url_file=settings.database_url_for_jobs())
        return cls(address, job_env=env, embedded=embedded)

    def wait_until_up(self, timeout_s: float) -> None:
        """Return once the cluster answers; raise :class:`Unavailable` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.check()
                return
            except Unavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def client(self) -> Any:
        """Ray's ``JobSubmissionClient`` for the cluster's dashboard (made again when the
        embedded head has moved); raises :class:`Unavailable` when it cannot be made."""
        if self._embedded is not None:
            self.dashboard_url = self._embedded.ensure()
        if self._client is None or self._client_address != self.dashboard_url:
            from ray.job_submission import JobSubmissionClient

            try:
                self._client = JobSubmissionClient(self.dashboard_url)
                self._client_address = self.dashboard_url
            except Exception as exc:  # ConnectionError, auth errors, …
                raise Unavailable(f"Ray at {self.dashboard_url}: {exc}") from exc
        return self._client

    def check(self) -> None:
        """Raise :class:`Unavailable` unless the cluster answers; learn its session."""
        if self._embedded is not None:
            self.dashboard_url = self._embedded.ensure()
            self.cluster_id = self._embedded.session
            return
        assert self.dashboard_url is not None
        try:
            self.cluster_id = probe(self.dashboard_url)
        except Unavailable:
            self._client = None
            self._state_client = None
            raise

    def is_gone(self, cluster: str) -> bool:
        """Whether the cluster ``cluster`` is confirmed gone, so its jobs are: the
        embedded head cleaned it up, or ``RAY_ADDRESS`` now answers as another session."""
        if self._embedded is not None:
            return self._embedded.dead(cluster)
        return self.cluster_id is not None and cluster != self.cluster_id

    def _state(self) -> Any:
        """Ray's state API client for the current dashboard (made again when the embedded
        head moves). Raises Unavailable when it cannot be made."""
        self.client()  # resolves the dashboard's address (the embedded head may move)
        if self._state_client is None or self._state_address != self.dashboard_url:
            from ray.util.state import StateApiClient

            try:
                self._state_client = StateApiClient(address=self.dashboard_url)
                self._state_address = self.dashboard_url
            except Exception as exc:
                raise Unavailable(f"Ray state API at {self.dashboard_url}: {exc}") from exc
        return self._state_client

    def runners(self) -> dict[tuple[float, float], int]:
        """The warm runners alive on the cluster (``workers.warm``), counted by resource
        shape: (GPUs, CPUs) → how many. Unavailable when Ray's state API does not answer."""
        from ray.util.state.common import ListApiOptions, StateResource

        from workers.warm import RUNNER_PREFIX

        self._state()
        options = ListApiOptions(limit=LIVE_JOBS_LIMIT, timeout=STATE_TIMEOUT_S, detail=True,
                                 filters=[("state", "=", "ALIVE"), ("class_name", "=", "Runner")])
        try:
            actors = self._state_client.list(StateResource.ACTORS, options=options,
                                             raise_on_missing_output=False)
        except Exception as exc:
            self._state_client = None
            raise Unavailable(f"listing the runners: {exc}") from exc
        shapes: dict[tuple[float, float], int] = {}
        for actor in actors:
            if not (getattr(actor, "name", None) or "").startswith(RUNNER_PREFIX):
                continue
            held = getattr(actor, "required_resources", None) or {}
            shape = (float(held.get("GPU", 0.0)), float(held.get("CPU", 0.0)))
            shapes[shape] = shapes.get(shape, 0) + 1
        return shapes

    def submit(self, job: JobRequest) -> None:
        """Submit the run's driver (``service.orchestration.run_job``) as the Ray job
        ``job.job_id``; a job id Ray already has is a no-op."""
        try:
            self.client().submit_job(
                entrypoint=f"{sys.executable} -m service.orchestration.run_job "
                           f"--run-id {job.run_id} --attempt {job.attempt} "
                           f"--job-id {job.job_id}",
                submission_id=job.job_id,
                runtime_env={"env_vars": self.job_env},
                metadata=job.metadata,
                entrypoint_num_cpus=0,
            )
        except Unavailable:
            raise
        except Exception as exc:
            if "already exists" in str(exc):
                return  # submitted before a crash: the job is running, nothing to do
            # Unreachable, or up but not ready ("No available agent"): try again later.
            raise Unavailable(f"submitting {job.job_id}: {exc}") from exc

    def state(self, job_id: str) -> JobState | None:
        """Ray's state of the job; None when Ray does not know it."""
        try:
            status = self.client().get_job_status(job_id)
        except Unavailable:
            raise
        except Exception as exc:
            if _unknown_job(exc):
                return None
            raise Unavailable(str(exc)) from exc
        return JobState(str(status.value if hasattr(status, "value") else status))

    def states(self, job_ids: list[str]) -> dict[str, JobState | None]:
        """The states of ``job_ids`` with one call to Ray's state API, filtered on the
        dashboard to jobs that have not ended, so the answer grows with the jobs in flight
        and not with the cluster's history. Only a job that has left that list since the
        last call (it ended, or was never submitted) costs one more status call."""
        if not job_ids:
            return {}
        live = self.live_jobs()
        return {job_id: live[job_id] if job_id in live else self.state(job_id)
                for job_id in job_ids}

    def live_jobs(self) -> dict[str, JobState]:
        """Every job not yet ended on the cluster (submission id → state), with one call to
        Ray's state API filtered on the dashboard."""
        from ray.util.state.common import ListApiOptions, StateResource

        self._state()
        options = ListApiOptions(limit=LIVE_JOBS_LIMIT, timeout=STATE_TIMEOUT_S, filters=[
            ("status", "!=", state.value) for state in ENDED])
        try:
            jobs = self._state_client.list(StateResource.JOBS, options=options,
                                           raise_on_missing_output=False)
        except Exception as exc:
            self._state_client = None
            raise Unavailable(f"listing the jobs in flight: {exc}") from exc
        return {job.submission_id: JobState(str(getattr(job.status, "value", job.status)))
                for job in jobs if job.submission_id}

    def stop(self, job_id: str) -> None:
        """Stop the job (and its Tune trials); a job Ray does not know is already stopped."""
        try:
            self.client().stop_job(job_id)
        except Unavailable:
            raise
        except Exception as exc:
            if "does not exist" not in str(exc):
                raise Unavailable(str(exc)) from exc

    def failure_reason(self, job_id: str) -> str:
        """One line: the last error the job's log shows, else Ray's own message."""
        try:
            info = self.client().get_job_info(job_id)
            logs = self.client().get_job_logs(job_id)
        except Exception as exc:
            return f"job {job_id} ended; its details are unavailable ({type(exc).__name__})"
        return failure_line(logs, info.message or "")

    def logs(self, job_id: str) -> str | None:
        """The job driver's log as Ray keeps it, or None when Ray does not know the job."""
        try:
            return self.client().get_job_logs(job_id)
        except Unavailable:
            raise
        except Exception as exc:
            if _unknown_job(exc):
                return None
            raise Unavailable(str(exc)) from exc

    def close(self, *, in_flight: int | None = 0) -> None:
        """On the service's exit: stop the embedded head unless runs are in flight."""
        if self._embedded is not None:
            self._embedded.close(in_flight=in_flight)
