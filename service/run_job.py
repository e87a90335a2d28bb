"""The entrypoint of a run's Ray job: ``python -m service.run_job --run-id N``.

It wires the DB-backed store into the worker pipeline and runs the scheduled steps on
Ray Tune. Lives in ``service`` (it knows the DB) so ``workers`` never imports ``service``;
the API process never imports it (it pulls in torch through the workers).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from service import repository as repo
from service.artifacts import ArtifactStore
from service.db import make_engine, make_sessionmaker, transaction
from service.run_store import DbRunStore
from service.settings import Settings
from service.tables import Status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-id", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    settings = Settings()
    engine = make_engine(settings.sqlalchemy_url)
    sessions = make_sessionmaker(engine)
    with sessions() as s:
        run = repo.get_run(s, run_id=args.run_id, detail=True)
        if run.status != Status.running:
            print(f"run {run.id} is {run.status.value}; nothing to do")
            return 0
        spec = dict(run.experiment.spec)
        ident = (run.id, run.experiment_id, run.model, run.dataset)

    import ray

    from workers.pipeline import run_pipeline
    from workers.ray_run import RaySteps, Resources
    from workers.request import RunRequest

    req = RunRequest(*ident, spec=spec, data_root=settings.data_path,
                     weights_dir=settings.weights_path)
    store = DbRunStore(sessions, ArtifactStore(settings.artifact_root), req.run_id)
    res = Resources(gpus=float(os.environ.get("AELAB_GPUS_PER_RUN",
                                              spec["resources"]["gpus_per_run"])),
                    cpus=float(os.environ.get("AELAB_CPUS_PER_RUN",
                                              spec["resources"]["cpus_per_run"])),
                    max_failures=int(os.environ.get("AELAB_MAX_TRIAL_FAILURES", "3")),
                    storage=settings.tune_storage)
    ray.init(log_to_driver=True)
    if res.gpus > 0 and not ray.cluster_resources().get("GPU"):
        # A CPU-only cluster: a GPU request would wait forever; train on the CPU instead.
        print("aelab: the cluster has no GPUs; this run trains on CPUs", flush=True)
        res.gpus = 0.0
    steps = RaySteps(res)
    print(f"aelab run {req.name}: {res.gpus} GPU, {res.cpus} CPU per trial", flush=True)
    ok = run_pipeline(req, store, search=steps.search, final_train=steps.train,
                      train_classifier=steps.train_classifier)
    with transaction(sessions) as s:
        refreshed = repo.get_run(s, run_id=req.run_id)
        print(f"aelab run {req.name}: {refreshed.status.value}"
              + (f" — {refreshed.error}" if refreshed.error else ""), flush=True)
    return 0 if ok or refreshed.status in (Status.failed, Status.cancelled) else 1


if __name__ == "__main__":
    sys.exit(main())
