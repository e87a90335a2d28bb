"""The MLflow mirror (``AELAB_MLFLOW_TRACKING_URI``, extra ``aelab[mlflow]``): each run
becomes an MLflow run, written by the run's job driver as it goes.

The MLflow run sits in an MLflow experiment named ``aelab-<id> <name>`` after the aelab
experiment; it gets the run spec flattened as params (``data.train_limit``, …), each
epoch's losses as step metrics (``train_loss``, ``val_loss``, ``val_mse``, ``val_mae``,
``lr``, and ``gpu_utilization_percent``, ``gpu_memory_peak_mib`` when the epoch trained on
a GPU, at step = epoch), the final measures (``q_*`` included) as metrics, tags for model,
dataset, seed, the aelab ids and the run's page, and ``samples.png`` as an artifact.

A tracker that is down or slow never fails or delays the run: every call goes through
one thread with a bounded queue (a full queue drops, never waits), each HTTP call has a
short timeout and no retries, and the first failure stops the mirror for that run with
one line in the run's log (``mirroring to MLflow skipped: …``).

The MLflow run ends FINISHED or FAILED with the aelab run, and KILLED when the run is
cancelled: Ray stops a cancelled run's driver with SIGTERM, on which the driver ends it
first (:func:`end_mirror_on_sigterm`), or the driver itself sees the cancel at an epoch
(:func:`end_mirror`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from models.plan import EpochMetrics
from service.persistence.artifacts import ArtifactStore
from service.settings import Settings
from workers.measures import CodecRow, RunMeasures, SizeMeasures
from workers.store import LrTrial, RunPruned, RunStore

log = logging.getLogger("aelab.mlflow")
QUEUE_SIZE = 1000
HTTP_TIMEOUT_S = "5"
EPOCH_METRICS = ("train_loss", "val_loss", "val_mse", "val_mae", "lr", "images_per_s",
                 "gpu_utilization_percent", "gpu_memory_peak_mib")  # the GPU's when measured


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """``{"data": {"train_limit": 256}}`` → ``{"data.train_limit": "256"}``; lists as
    their JSON-ish text (MLflow params are strings of up to 6000 characters)."""
    if isinstance(value, Mapping):
        out: dict[str, str] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): str(value)[:6000]}


def experiment_id_of(client: Any, name: str) -> str:
    """The id of the MLflow experiment ``name`` (an ``MlflowClient``'s), created when
    missing. Runs of one aelab experiment start at once on several drivers: one that
    finds none and then loses the create to another (RESOURCE_ALREADY_EXISTS) reads the
    winner's by name. Any other MlflowException is raised."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    try:
        return str(client.create_experiment(name))
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        found = client.get_experiment_by_name(name)
        if found is None:  # said to exist, yet not found: the error stands
            raise
        return str(found.experiment_id)


class MlflowMirror:
    """Mirrors one aelab run to MLflow at ``tracking_uri`` from a background thread."""

    def __init__(self, tracking_uri: str, *, experiment: str, run_name: str,
                 params: Mapping[str, str], tags: Mapping[str, str]) -> None:
        # No retries and a short timeout for every HTTP call this process makes to MLflow.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", HTTP_TIMEOUT_S)
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        self.tracking_uri = tracking_uri
        self.skipped: str | None = None
        self.run_id: str | None = None
        self.ended: str | None = None  # the status the run was ended with
        self._end_lock = threading.Lock()
        self._epochs: set[int] = set()
        self._epochs_lock = threading.Lock()
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue(QUEUE_SIZE)
        self._thread = threading.Thread(target=self._work, name="aelab-mlflow", daemon=True)
        self._thread.start()
        self._put(lambda: self._start(experiment, run_name, params, tags))

    # --- the thread ---------------------------------------------------------------------

    def _start(self, experiment: str, run_name: str, params: Mapping[str, str],
               tags: Mapping[str, str]) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        run = self.client.create_run(experiment_id_of(self.client, experiment),
                                     run_name=run_name, tags=dict(tags))
        self.run_id = run.info.run_id
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow's batch limit
            self.client.log_batch(self.run_id, params=items[i:i + 100])
        log.info("mirroring to MLflow run %s at %s", self.run_id, self.tracking_uri)

    def _work(self) -> None:
        while (task := self._queue.get()) is not None:
            if self.skipped is None:
                try:
                    task()
                except Exception as exc:  # the tracker is away: the run goes on without
                    reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"\
                        if str(exc).strip() else type(exc).__name__
                    self.skipped = reason
                    log.warning("mirroring to MLflow skipped: %s", reason)

    def _put(self, task: Callable[[], None]) -> None:
        try:
            self._queue.put_nowait(task)
        except queue.Full:
            if self.skipped is None:
                self.skipped = "the tracker is too slow (queue full)"
                log.warning("mirroring to MLflow skipped: %s", self.skipped)

    # --- what the driver reports --------------------------------------------------------

    def epochs(self, epochs: Sequence[EpochMetrics]) -> None:
        """Log epochs not logged yet, as step metrics (step = epoch number)."""
        with self._epochs_lock:  # from the driver and from a step's checkpoint writer
            new = [e for e in epochs if e.epoch not in self._epochs]
            self._epochs.update(e.epoch for e in new)
        if new:
            def task() -> None:
                from mlflow.entities import Metric

                assert self.run_id is not None
                now = int(time.time() * 1000)
                metrics = [Metric(name, float(getattr(e, name)), now, e.epoch)
                           for e in new for name in EPOCH_METRICS
                           if getattr(e, name) is not None]
                self.client.log_batch(self.run_id, metrics=metrics)

            self._put(task)

    def measures(self, measures: RunMeasures) -> None:
        values = {k: float(v) for k, v in measures.model_dump().items()
                  if isinstance(v, int | float) and not isinstance(v, bool)}

        def task() -> None:
            from mlflow.entities import Metric

            assert self.run_id is not None
            self.client.log_batch(self.run_id, metrics=[Metric(k, v, int(time.time() * 1000), 0)
                                                        for k, v in values.items()])

        self._put(task)

    def artifact(self, name: str, data: bytes) -> None:
        def task() -> None:
            assert self.run_id is not None
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / name
                path.write_bytes(data)
                self.client.log_artifact(self.run_id, str(path))

        self._put(task)

    def end(self, status: str, timeout_s: float = 10.0) -> None:
        """End the MLflow run (FINISHED, FAILED or KILLED) and wait up to ``timeout_s``
        for the queue to drain (after the run's own outcome was recorded). Only the first
        call ends it: later ones (the driver's last word after ``succeed``) do nothing."""
        with self._end_lock:
            if self.ended is not None:
                return
            self.ended = status

        def task() -> None:
            assert self.run_id is not None
            self.client.set_terminated(self.run_id, status=status)

        self._put(task)
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=1.0)
        self._thread.join(timeout=timeout_s)
        if self._thread.is_alive() and self.skipped is None:
            self.skipped = f"still writing after {timeout_s:.0f}s"
            log.warning("mirroring to MLflow skipped: %s", self.skipped)


class MirroredStore:
    """A :class:`workers.store.RunStore` that also mirrors to MLflow: epochs recorded
    through it (in-process steps) or found by ``read_epochs`` (epochs a warm runner
    recorded, read when the phase changes and at the end), the measures, ``samples.png``
    (``read_artifact``) and the outcome."""

    def __init__(self, store: RunStore, mirror: MlflowMirror, *,
                 read_epochs: Callable[[], Sequence[EpochMetrics]],
                 read_artifact: Callable[[str], bytes | None]) -> None:
        self._store = store
        self.mirror = mirror
        self._read_epochs = read_epochs
        self._read_artifact = read_artifact

    def _sync(self) -> None:
        try:
            self.mirror.epochs(self._read_epochs())
        except Exception as exc:  # the mirror never fails the run
            log.warning("mirroring to MLflow: could not read the epochs: %s", exc)

    def set_phase(self, phase: str) -> None:
        self._store.set_phase(phase)
        self._sync()

    def record_epoch(self, metrics: EpochMetrics) -> None:
        try:
            self._store.record_epoch(metrics)
        except RunPruned:  # recorded, then the run was pruned: mirrored all the same
            self.mirror.epochs([metrics])
            raise
        self.mirror.epochs([metrics])

    def record_lr_trials(self, trials: list[LrTrial], chosen_lr: float) -> None:
        self._store.record_lr_trials(trials, chosen_lr)

    def record_measures(self, measures: RunMeasures, codecs: Sequence[CodecRow] = (),
                        sizes: Sequence[SizeMeasures] = ()) -> None:
        self._store.record_measures(measures, codecs, sizes)
        self._sync()
        self.mirror.measures(measures)
        try:
            samples = self._read_artifact("samples.png")
        except Exception as exc:
            log.warning("mirroring to MLflow: could not read samples.png: %s", exc)
            samples = None
        if samples is not None:
            self.mirror.artifact("samples.png", samples)

    def succeed(self) -> None:
        self._store.succeed()
        self.mirror.end("FINISHED")

    def fail(self, error: str) -> None:
        try:
            self._store.fail(error)
        finally:
            self._sync()
            self.mirror.end("FAILED")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


# MLflow's status for an aelab run that ended so; any other end (cancelled, or this
# attempt replaced by another) is KILLED. A run a search prunes (issue 26's ``pruned``)
# ended as planned: FINISHED, as Tune's MLflowLoggerCallback ends early-stopped trials.
MLFLOW_STATUS = {"succeeded": "FINISHED", "failed": "FAILED", "pruned": "FINISHED"}
STOP_GRACE_S = 2.0  # within Ray's SIGTERM-to-SIGKILL wait (RAY_JOB_STOP_WAIT_TIME_S, 3 s)


def end_mirror(store: RunStore, run_status: str, timeout_s: float = 10.0) -> None:
    """End ``store``'s MLflow run (when it mirrors one) as its aelab run ended
    (``run_status``: the run's status as the driver last read it): FINISHED, FAILED, else
    KILLED — a run cancelled (the driver saw it at an epoch), or an attempt replaced. Does
    nothing where ``succeed`` or ``fail`` already ended it. Epochs recorded since the last
    phase change (by a warm runner: a run pruned or cancelled at an epoch has no later
    phase change, measures or failure to read them at) are mirrored first."""
    if isinstance(store, MirroredStore):
        if store.mirror.ended is None:
            store._sync()
        store.mirror.end(MLFLOW_STATUS.get(run_status, "KILLED"), timeout_s)


def end_mirror_on_sigterm(store: RunStore, grace_s: float = STOP_GRACE_S) -> None:
    """When this driver gets SIGTERM (Ray stopping the job of a cancelled run: SIGKILL
    follows ``RAY_JOB_STOP_WAIT_TIME_S`` later, 3 s by default), end ``store``'s MLflow
    run as KILLED within ``grace_s`` first, then let the handler installed before (Ray's
    driver exits) or the default action run. Call it from the main thread after
    ``ray.init`` (which installs its own handler); nothing to do without a mirror."""
    if not isinstance(store, MirroredStore):
        return
    import os
    import signal

    previous = signal.getsignal(signal.SIGTERM)
    mirror = store.mirror

    def on_sigterm(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
        # From a thread, bounded: the main thread may hold a lock the mirror needs.
        ender = threading.Thread(target=mirror.end, args=("KILLED", grace_s),
                                 name="aelab-mlflow-end", daemon=True)
        ender.start()
        ender.join(grace_s + 0.5)
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            os.kill(os.getpid(), signum)  # the default action, as without a mirror

    signal.signal(signal.SIGTERM, on_sigterm)


def mirrored(store: RunStore, tracking_uri: str, *, run: Any, spec: Mapping[str, Any],
             experiment_name: str, page_url: str,
             read_epochs: Callable[[], Sequence[EpochMetrics]],
             read_artifact: Callable[[str], bytes | None]) -> MirroredStore:
    """``store`` mirrored to MLflow at ``tracking_uri`` (``run``: the aelab run's row)."""
    tags = {"aelab.experiment_id": str(run.experiment_id), "aelab.run_id": str(run.id),
            "aelab.attempt": str(run.attempt), "aelab.url": page_url, "model": run.model,
            "dataset": run.dataset, "seed": str(spec.get("seed")),
            "mlflow.note.content": f"aelab run {run.id}: {page_url}"}
    mirror = MlflowMirror(tracking_uri, experiment=experiment_name,
                          run_name=f"{run.model}-{run.dataset}-r{run.id}",
                          params=flatten(dict(spec)), tags=tags)
    return MirroredStore(store, mirror, read_epochs=read_epochs, read_artifact=read_artifact)


def db_mirrored(store: RunStore, settings: Settings, sessions: sessionmaker[Session],
                artifacts: ArtifactStore, run_id: int) -> RunStore:
    """``store`` mirrored to ``settings.mlflow_tracking_uri`` (``store`` itself when
    unset): the run, its epochs and artifacts read from the service's database."""
    if not settings.mlflow_tracking_uri:
        return store
    from service.persistence import repository as repo
    from service.persistence.tables import EpochMetric

    with sessions() as s:
        run = repo.get_run(s, run_id=run_id)
        experiment = repo.get_experiment(s, experiment_id=run.experiment_id)
        name = f"aelab-{experiment.id} {experiment.name}".strip()
        spec = dict(run.spec)
        s.expunge(run)
    base = (settings.public_url or "").rstrip("/")

    def read_epochs() -> list[EpochMetrics]:
        with sessions() as s:
            rows = s.scalars(select(EpochMetric).where(EpochMetric.run_id == run_id)
                             .order_by(EpochMetric.epoch)).all()
            return [EpochMetrics(**{f.name: getattr(r, f.name) for f in fields(EpochMetrics)})
                    for r in rows]

    def read_artifact(name: str) -> bytes | None:
        with sessions() as s:
            if not repo.has_artifact(s, run_id=run_id, name=name):
                return None
            uri = repo.find_artifact(s, run_id=run_id, name=name).uri
        return artifacts.read(uri)

    return mirrored(store, settings.mlflow_tracking_uri, run=run, spec=spec,
                    experiment_name=name, page_url=f"{base}/runs/{run_id}",
                    read_epochs=read_epochs, read_artifact=read_artifact)
