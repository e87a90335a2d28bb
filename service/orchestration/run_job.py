"""The entrypoint of a run's Ray job: ``python -m service.orchestration.run_job --run-id N``.

It validates the run's stored spec back into the run contract (``workers.spec.RunSpec``),
wires the DB-backed store into the one pipeline and runs its scheduled steps on Ray Tune.
Everything it needs from the service comes from ``Settings()`` (the job's environment is
derived from the same settings by ``service.settings.job_environment``). Lives in
``service`` (it knows the DB) so ``workers`` never imports ``service``; the API process
never imports it (it pulls in torch through the workers).

The driver is thin (no torch): its steps run on warm runners (``workers.warm``) that
stream their output back, so the job's log holds the run's training output. It saves the
log (Ray's copy, else its own) as the run's ``job.log`` artifact before it records a
terminal state.
"""

from __future__ import annotations

import argparse
import collections
import logging
import sys
import time
from typing import IO, Any

log = logging.getLogger("aelab.driver")
LOG_KEPT = 20_000_000  # characters of its own output a driver keeps, for its job.log
# What each attempt's log says it trains with (bench/chaos.py reads it: a GPU run's
# attempts must name the GPUs they asked for).
DRIVER_LINE = ("aelab run %s (%s), attempt %s: %s GPU, %s CPU; lr_search %s, %s epochs, "
               "precision %s")


class Tee:
    """A text stream writing to ``primary`` and keeping the last ``limit`` characters in
    memory (the driver's own copy of its log; no file is left behind when it is killed)."""

    def __init__(self, primary: IO[str], kept: collections.deque[str], limit: int) -> None:
        self.primary = primary
        self.kept = kept
        self.limit = limit
        self.size = 0

    def write(self, text: str) -> int:
        self.kept.append(text)
        self.size += len(text)
        while self.size > self.limit and len(self.kept) > 1:
            self.size -= len(self.kept.popleft())
        return self.primary.write(text)

    def flush(self) -> None:
        self.primary.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.primary, name)


def gpus_for_run(asked: float, gpu_cluster: bool | None,
                 nodes: list[dict[str, Any]]) -> tuple[float, str | None]:
    """The GPUs a run asking for ``asked`` trains with, and a line for its log.

    The CPU fallback is for a cluster without GPUs by design (a laptop, an embedded head
    on a machine without CUDA), decided from the deployment — ``gpu_cluster``
    (``AELAB_GPU_CLUSTER``) when set, else whether any node of this cluster's session,
    alive or lost since (``nodes``: ``ray.nodes()``), declared GPUs — never from a
    moment when no GPU node happens to be joined: on a GPU cluster the run waits for its
    GPU."""
    if asked <= 0:
        return 0.0, None
    declared = any(node.get("Resources", {}).get("GPU", 0) > 0 for node in nodes)
    joined = any(node.get("Alive") and node.get("Resources", {}).get("GPU", 0) > 0
                 for node in nodes)
    if gpu_cluster is False or (gpu_cluster is None and not declared):
        why = ("AELAB_GPU_CLUSTER is false" if gpu_cluster is False
               else "no node of it declared GPUs, and AELAB_GPU_CLUSTER is unset")
        return 0.0, f"aelab: the cluster has no GPUs ({why}); this run trains on CPUs"
    if not joined:
        why = "AELAB_GPU_CLUSTER is true" if gpu_cluster else "a node of it declared GPUs"
        return asked, (f"aelab: a GPU cluster ({why}) with no GPU node joined now; this run "
                       f"waits for {asked:g} GPU")
    return asked, None


def main(argv: list[str] | None = None) -> int:
    started = time.time()  # the service's modules are imported below, for the profile
    from service.client.states import Status
    from service.orchestration.mlflow_mirror import (
        db_mirrored,
        end_mirror,
        end_mirror_on_sigterm,
    )
    from service.orchestration.run_store import DbRunStore, DbSessionOpener, sessions_for
    from service.persistence import repository as repo
    from service.persistence.artifacts import ArtifactStore, remove_tree
    from service.settings import Settings, job_environment, run_storage_key
    from workers.logs import bind_process
    from workers.logs import configure as configure_logs
    from workers.priority import yield_cpu

    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--run-id", type=int, required=True)
    parser.add_argument("--attempt", type=int, required=True,
                        help="the attempt this job is; its writes are refused once the "
                             "run has moved on to another")
    parser.add_argument("--job-id", default=None, help="this Ray job's submission id")
    args = parser.parse_args(argv)

    kept: collections.deque[str] = collections.deque()
    sys.stdout = Tee(sys.stdout, kept, LOG_KEPT)  # type: ignore[assignment]
    sys.stderr = Tee(sys.stderr, kept, LOG_KEPT)  # type: ignore[assignment]
    settings = Settings()
    configure_logs(settings.log_format)
    bind_process(run_id=args.run_id, attempt=args.attempt)
    yield_cpu(settings.training_niceness)  # Ray starts this driver in a session of its own
    sessions = sessions_for(settings.sqlalchemy_url,
                            webhook_events=bool(settings.webhook_events))
    with sessions() as s:
        run = repo.get_run(s, run_id=args.run_id)
        if run.status != Status.running or run.attempt != args.attempt:
            log.info("run %s is %s at attempt %s; attempt %s has nothing to do", run.id,
                     run.status.value, run.attempt, args.attempt)
            return 0
        # One folder per attempt: a stale driver cleaning up never touches the current one.
        run_folder = run_storage_key(run.id, run.uid)
        storage_key = f"{run_folder}/a{args.attempt}"
        raw_spec = dict(run.spec)
        bind_process(experiment_id=run.experiment_id)

    import ray

    from workers.pipeline import run_pipeline
    from workers.spec import RunSpec
    from workers.warm import RunnerSteps

    spec = RunSpec.model_validate(raw_spec)
    # Runners stream their output to this driver; worker logs would only repeat it.
    imported_unix = time.time()
    context = ray.init(log_to_driver=False)
    # Marks before the pipeline's own, for the orchestration benchmark's profile.
    driver_clock = {"driver_started_unix": started,
                    "driver_imported_unix": imported_unix, "ray_connected_unix": time.time()}

    def read_log() -> bytes:
        """The log as Ray keeps it (what the logs endpoint served live, so offsets stay
        valid), else this driver's own copy."""
        if args.job_id and context.dashboard_url:
            try:
                from ray.job_submission import JobSubmissionClient

                url = context.dashboard_url
                url = url if url.startswith("http") else f"http://{url}"
                return JobSubmissionClient(url).get_job_logs(args.job_id).encode()
            except Exception as exc:  # the dashboard is busy or gone: keep our copy
                log.warning("saving the driver's own log (%s)", type(exc).__name__)
        return "".join(kept).encode()

    db_store = DbRunStore(sessions, ArtifactStore(settings.artifact_root), args.run_id,
                       attempt=args.attempt, log_reader=read_log,
                       retry_s=settings.db_retry_s,
                       heartbeat_s=settings.classifier_heartbeat_s,
                       claim_expiry_s=settings.classifier_claim_expiry_s)
    store = db_mirrored(db_store, settings, sessions, db_store.artifacts, args.run_id)
    end_mirror_on_sigterm(store)  # a cancelled run's job is stopped with SIGTERM
    cpus = spec.resources.cpus_per_run
    gpus, note = gpus_for_run(spec.resources.gpus_per_run, settings.gpu_cluster, ray.nodes())
    if note:
        log.info(note)
    steps = RunnerSteps(
        settings.run_env(storage_key), gpus=gpus, cpus=cpus, wait_for_nodes=True,
        opener=DbSessionOpener(args.run_id, args.attempt, storage_key),
        session=f"run-{args.run_id}-a{args.attempt}",
        env_vars=job_environment(settings, database_url_file=settings.database_url_file),
        idle_s=settings.runner_idle_s)
    log.info(DRIVER_LINE, args.run_id, spec.label(), args.attempt, gpus, cpus,
             spec.lr_search.method, spec.epochs, spec.precision)
    ok = run_pipeline(spec, store, steps, clock=driver_clock)
    with sessions() as s:
        refreshed = repo.get_run(s, run_id=args.run_id)
        log.info("aelab run %s: %s%s", args.run_id, refreshed.status.value,
                 f" — {refreshed.error}" if refreshed.error else "")
    db_store.keep_pruned_log()
    # Cancelled or pruned (seen at an epoch) or replaced: the MLflow run does not stay RUNNING.
    end_mirror(store, refreshed.status.value if refreshed.attempt == args.attempt
               else "replaced")
    if refreshed.status.finished and refreshed.attempt == args.attempt:
        # The run has ended for good: earlier, lost attempts' checkpoints go too.
        try:
            remove_tree(settings.tune_storage, run_folder)
        except OSError as exc:
            log.warning("could not remove %s: %s", run_folder, exc)
    return 0 if ok or refreshed.status in (Status.failed, Status.cancelled,
                                           Status.pruned) else 1


if __name__ == "__main__":
    sys.exit(main())
