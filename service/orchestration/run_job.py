"""The entrypoint of a run's Ray job: ``python -m service.orchestration.run_job --run-id N``.

It validates the run's stored spec back into the run contract (``workers.spec.RunSpec``),
wires the DB-backed store into the one pipeline and runs its scheduled steps on Ray Tune.
Everything it needs from the service comes from ``Settings()`` (the job's environment is
derived from the same settings by ``service.settings.job_environment``). Lives in
``service`` (it knows the DB) so ``workers`` never imports ``service``; the API process
never imports it (it pulls in torch through the workers).

The driver keeps a copy of everything it prints (its trials' output included) and saves
it as the run's ``job.log`` artifact before it records a terminal state.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
from pathlib import Path
from typing import IO, Any

from service.orchestration.run_store import DbRunStore
from service.persistence import repository as repo
from service.persistence.artifacts import ArtifactStore
from service.persistence.db import make_engine, make_sessionmaker
from service.settings import Settings, run_storage_key
from service.states import Status


class Tee:
    """A text stream writing to ``primary`` and to a log file."""

    def __init__(self, primary: IO[str], log: IO[str]) -> None:
        self.primary = primary
        self.log = log

    def write(self, text: str) -> int:
        self.log.write(text)
        self.log.flush()
        return self.primary.write(text)

    def flush(self) -> None:
        self.primary.flush()
        self.log.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.primary, name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--run-id", type=int, required=True)
    parser.add_argument("--attempt", type=int, required=True,
                        help="the attempt this job is; its writes are refused once the "
                             "run has moved on to another")
    parser.add_argument("--job-id", default=None, help="this Ray job's submission id")
    args = parser.parse_args(argv)

    folder = Path(tempfile.mkdtemp(prefix="aelab-job-"))
    try:
        return _drive(args.run_id, args.attempt, args.job_id, folder / "job.log")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _drive(run_id: int, attempt: int, job_id: str | None, log_path: Path) -> int:
    log_file = log_path.open("w", encoding="utf-8")
    sys.stdout = Tee(sys.stdout, log_file)  # type: ignore[assignment]
    sys.stderr = Tee(sys.stderr, log_file)  # type: ignore[assignment]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    settings = Settings()
    engine = make_engine(settings.sqlalchemy_url)
    sessions = make_sessionmaker(engine)
    with sessions() as s:
        run = repo.get_run(s, run_id=run_id)
        if run.status != Status.running or run.attempt != attempt:
            print(f"run {run.id} is {run.status.value} at attempt {run.attempt}; attempt "
                  f"{attempt} has nothing to do")
            return 0
        # One folder per attempt: a stale driver cleaning up never touches the current one.
        storage_key = f"{run_storage_key(run.id, run.uid)}/a{attempt}"
        raw_spec = dict(run.spec)

    import ray

    from workers.pipeline import run_pipeline
    from workers.ray_run import RaySteps
    from workers.spec import RunSpec

    spec = RunSpec.model_validate(raw_spec)
    context = ray.init(log_to_driver=True)

    def read_log() -> bytes:
        """The log as Ray keeps it (what the logs endpoint served live, so offsets stay
        valid), else this driver's own copy."""
        if job_id and context.dashboard_url:
            try:
                from ray.job_submission import JobSubmissionClient

                url = context.dashboard_url
                url = url if url.startswith("http") else f"http://{url}"
                return JobSubmissionClient(url).get_job_logs(job_id).encode()
            except Exception as exc:  # the dashboard is busy or gone: keep our copy
                print(f"aelab: saving the driver's own log ({type(exc).__name__})")
        return log_path.read_bytes()

    store = DbRunStore(sessions, ArtifactStore(settings.artifact_root), run_id,
                       attempt=attempt, log_reader=read_log, retry_s=settings.db_retry_s,
                       heartbeat_s=settings.classifier_heartbeat_s,
                       claim_expiry_s=settings.classifier_claim_expiry_s)
    gpus, cpus = spec.resources.gpus_per_run, spec.resources.cpus_per_run
    if gpus > 0 and not ray.cluster_resources().get("GPU"):
        # A CPU-only cluster: a GPU request would wait forever; train on the CPU instead.
        print("aelab: the cluster has no GPUs; this run trains on CPUs", flush=True)
        gpus = 0.0
    steps = RaySteps(settings.run_env(storage_key), gpus=gpus, cpus=cpus)
    print(f"aelab run {run_id} ({spec.label()}), attempt {attempt}: {gpus} GPU, {cpus} CPU "
          f"per trial; lr_search {spec.lr_search.method}, {spec.epochs} epochs", flush=True)
    ok = run_pipeline(spec, store, steps)
    with sessions() as s:
        refreshed = repo.get_run(s, run_id=run_id)
        print(f"aelab run {run_id}: {refreshed.status.value}"
              + (f" — {refreshed.error}" if refreshed.error else ""), flush=True)
    return 0 if ok or refreshed.status in (Status.failed, Status.cancelled) else 1


if __name__ == "__main__":
    sys.exit(main())
