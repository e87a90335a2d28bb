"""A full artifact store fails a run cleanly, on a real full disk (a 2 MB tmpfs as the
store): the run that cannot write fails with one line naming the store and the space, no
temporary file stays, a run whose driver died is settled although its log does not fit,
no run starts while the store is full (however often the dispatcher passes), `/readyz`
says why — and once space returns, runs start again."""

from __future__ import annotations

import errno
import os
import pickle
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.orchestration.dispatcher import JobState
from service.orchestration.run_store import DbRunStore
from service.persistence.artifacts import ArtifactStore
from service.persistence.tables import Run, Status
from service.settings import Settings
from tests.service.orchestration.test_dispatcher import make
from tests.utils import API, tiny_spec
from workers.pipeline import run_pipeline
from workers.space import StorageFull
from workers.spec import RunSpec


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB filesystem of its own (tmpfs; needs root and CAP_SYS_ADMIN)."""
    root = tmp_path / "store"
    root.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(root)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    yield root
    subprocess.run(["umount", str(root)], check=True)


@pytest.fixture()
def settings(db_url: str, tmp_path: Path, small_disk: Path) -> Settings:
    return Settings(home=tmp_path / "home", database_url=db_url, start_dispatcher=False,
                    artifact_url=str(small_disk), artifact_min_free_mb=0.5)


def _fill(folder: Path) -> Path:
    """Write a file until the filesystem refuses it for space."""
    filler = folder / "filler"
    with filler.open("wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def _temp_files(root: Path) -> list[str]:
    return [str(p.relative_to(root)) for p in root.rglob("*") if p.name.endswith(".tmp")]


class _EvaluatingSteps:
    """The steps of a run that trained and now saves its weights (1 MB)."""

    kind = "local"
    marks: dict[str, float] = {}  # noqa: RUF012  (never written)

    def open(self, spec, store):
        self.store = store

    def prepare(self, spec, classifier_ready):
        pass

    def train(self, spec, lr, start):
        pass

    def evaluate(self, spec, classifier, original_accuracy):
        self.store.save_artifact("model.pt", "weights", os.urandom(1_000_000),
                                 "application/octet-stream")
        raise AssertionError("the weights were stored on a full disk")

    def finish(self):
        pass


def test_a_full_store_fails_the_run_cleanly_and_nothing_starts_until_space_returns(
        client, settings: Settings, small_disk: Path) -> None:
    from service.context import context_of

    sessions = context_of(client.app).sessions
    r = client.post(f"{API}/experiments", json=tiny_spec("baseline", "pixel_shuffle"))
    assert r.status_code == 201, r.text
    dispatcher, executor = make(client, max_in_flight=2)
    dispatcher.tick()
    first, second = executor.submitted
    assert client.get("/readyz").json()["checks"]["artifacts"] == "ok"

    filler = _fill(small_disk)

    # The first run's driver: its weights do not fit, nor does its log.
    with sessions() as s:
        spec = RunSpec.model_validate(s.get(Run, first.run_id).spec)
    store = DbRunStore(sessions, ArtifactStore(settings.artifact_root), first.run_id,
                       attempt=first.attempt, log_reader=lambda: b"epoch 1/2\n" * 30_000)
    assert run_pipeline(spec, store, _EvaluatingSteps()) is False
    with sessions() as s:
        run = s.get(Run, first.run_id)
        assert run.status == Status.failed
        assert run.error == (
            f"StorageFull: the artifact store {small_disk} is full: writing model.pt (1.0 MB) "
            "failed: No space left on device (ENOSPC); free space there, then retry the run")
    assert _temp_files(small_disk) == []
    with pytest.raises(StorageFull) as caught:  # as a runner's step raises it, through Ray
        ArtifactStore(settings.artifact_root).put("run-9", "model.pt", b"w" * 100_000)
    again = pickle.loads(pickle.dumps(caught.value))
    assert (str(again), again.errno, again.size) == (str(caught.value), errno.ENOSPC, 100_000)

    # The second run's driver died; keeping its log hits the full disk, every pass.
    executor.jobs[second.job_id] = JobState.failed
    for _ in range(4):
        dispatcher.tick(reconcile=True)
    with sessions() as s:
        run = s.get(Run, second.run_id)
        assert (run.status, run.attempt) == (Status.queued, 1)  # settled, not started
    assert executor.submitted == [first, second]
    assert _temp_files(small_disk) == []
    assert dispatcher.store_full is not None and dispatcher.store_full.startswith("full: ")
    ready = client.get("/readyz")
    assert ready.status_code == 503
    # the threshold (0.5 MB) plus what the last write that failed needed (its log)
    assert ready.json()["checks"]["artifacts"] == (
        f"full: 0 B free at {small_disk}, below 500.1 kB; the last write that failed "
        "needed 59 B")

    filler.unlink()  # space returns
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.json()
    dispatcher.tick()
    assert [(j.run_id, j.attempt) for j in executor.submitted[2:]] == [(second.run_id, 1)]
    assert dispatcher.store_full is None
    with sessions() as s:  # the run that failed for space is not retried
        assert s.get(Run, first.run_id).status == Status.failed
