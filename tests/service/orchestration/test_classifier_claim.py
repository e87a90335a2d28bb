"""The reference-classifier claim under lost runners, without Ray: real pipelines and the
DB-backed store (SQLite, and PostgreSQL where reachable) on steps that lease *slots* the
way warm runners are leased — one slot held from step to step, a slot lost with its
runner, waiting for a free one."""

from __future__ import annotations

import threading
import time

import pytest
from fastapi.testclient import TestClient

from service.context import context_of
from service.orchestration import run_store
from service.orchestration.run_store import DbRunStore
from service.persistence import repository as repo
from service.persistence.db import transaction
from service.persistence.tables import ReferenceClassifier, Run
from tests.utils import API, SMALL_CLASSIFIER, tiny_spec
from workers.context import RunEnv, classifier_key
from workers.measures import RunMeasures
from workers.pipeline import run_pipeline
from workers.spec import RunSpec

SLOT_WAIT_S = 6.0  # a step that finds no free slot in this long is stuck for good


class NoSlot(RuntimeError):
    pass


class Slots:
    """The cluster's runner slots: each run holds one from step to step."""

    def __init__(self, n: int) -> None:
        self.free = threading.Semaphore(n)

    def take(self, timeout: float = SLOT_WAIT_S) -> None:
        if not self.free.acquire(timeout=timeout):
            raise NoSlot(f"no runner slot came free in {timeout:.0f} s")

    def give(self) -> None:
        self.free.release()


class SlotSteps:
    """A run's steps on a leased slot (as ``RunnerSteps`` holds a warm runner); the
    classifier's trainer loses its slot with its runner as it starts, and needs another."""

    kind = "ray"
    marks: dict[str, float] = {}  # noqa: RUF012  (never written)

    def __init__(self, slots: Slots, *, loses_runner: threading.Event | None = None,
                 before_retake: threading.Event | None = None) -> None:
        self.env = RunEnv(data_root="/unused", weights_dir="/unused", allow_download=False)
        self.slots = slots
        self.held = False
        self.loses_runner = loses_runner
        self.before_retake = before_retake
        self.trained_classifier = 0

    def _step(self) -> None:
        if not self.held:
            self.slots.take()
            self.held = True

    def open(self, spec, store) -> None:
        self.store = store

    def prepare(self, spec, classifier_ready) -> None:
        self._step()

    def train(self, spec, lr, start) -> None:
        self._step()

    def train_classifier(self, spec) -> tuple[bytes, float]:
        self._step()
        if self.loses_runner is not None:  # its node goes: the slot is the pool's again
            self.held = False
            self.slots.give()
            self.loses_runner.set()
            assert self.before_retake is not None
            assert self.before_retake.wait(30)
        self._step()
        self.trained_classifier += 1
        return b"classifier weights", 0.75

    def evaluate(self, spec, classifier, original_accuracy):
        self._step()
        assert (classifier, original_accuracy) == (b"classifier weights", 0.75)
        return RunMeasures(mae=0.1, mse=0.02, psnr=17.0, ssim=0.5, n_images=64,
                           training_time_s=1.0, compression_ratio=4.0, params=10,
                           latent_dim=8, compression_ratio_bytes=4.0), [], []

    def hand_back(self) -> None:
        if self.held:
            self.held = False
            self.slots.give()

    def finish(self) -> None:
        self.hand_back()


def test_waiters_hand_back_their_runners_so_a_trainer_that_lost_its_own_finishes(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two slots, three runs sharing one classifier. A claims it and loses its runner; C
    takes the slot that freed; B and C wait for the classifier. Were the waiters to keep
    their slots (the deadlock of issue 25), A would never get one back: here it would
    fail after SLOT_WAIT_S, and B take the classifier over."""
    monkeypatch.setattr(run_store, "CLASSIFIER_POLL_S", 0.05)
    app = client.app
    sessions, artifacts = context_of(app).sessions, context_of(app).artifacts
    body = tiny_spec("baseline", "resnet", "pixel_shuffle", classifier=SMALL_CLASSIFIER)
    exp = client.post(f"{API}/experiments", json=body)
    assert exp.status_code == 201, exp.text
    a, b, c = [r["id"] for r in exp.json()["runs"]]
    with transaction(sessions) as s:
        for run_id in (a, b, c):
            repo.start_attempt(s, run_id=run_id, attempt=0, job_id=f"job-{run_id}",
                               cluster="c1")
        specs = {r: RunSpec.model_validate(s.get(Run, r).spec) for r in (a, b, c)}
    key = classifier_key(specs[a])
    assert {classifier_key(spec) for spec in specs.values()} == {key}

    slots = Slots(2)
    lost, waiters_wait = threading.Event(), threading.Event()
    steps = {a: SlotSteps(slots, loses_runner=lost, before_retake=waiters_wait),
             b: SlotSteps(slots), c: SlotSteps(slots)}
    results: dict[int, bool] = {}

    def run(run_id: int) -> None:
        store = DbRunStore(sessions, artifacts, run_id, attempt=0)
        results[run_id] = run_pipeline(specs[run_id], store, steps[run_id])

    def phase(run_id: int) -> str | None:
        with sessions() as s:
            return s.get(Run, run_id).phase

    threads = {r: threading.Thread(target=run, args=(r,), daemon=True) for r in (a, b, c)}
    threads[a].start()
    # A holds the claim before the others start, and C waits for a slot until A's goes.
    deadline = time.monotonic() + 30
    while not lost.is_set() and time.monotonic() < deadline:
        time.sleep(0.02)
    with sessions() as s:
        assert s.get(ReferenceClassifier, key).owner == f"run-{a}-a0"
    threads[b].start()
    threads[c].start()
    while time.monotonic() < deadline and (phase(b), phase(c)) != ("evaluate", "evaluate"):
        time.sleep(0.02)
    assert (phase(b), phase(c)) == ("evaluate", "evaluate")
    time.sleep(0.5)  # both are in their wait for the classifier
    waiters_wait.set()
    for thread in threads.values():
        thread.join(60)
        assert not thread.is_alive()

    with sessions() as s:
        runs = {r: s.get(Run, r) for r in (a, b, c)}
        row = s.get(ReferenceClassifier, key)
        states = {r: (run.status.value, run.error) for r, run in runs.items()}
        assert (row.status.value, row.owner) == ("succeeded", f"run-{a}-a0"), states
    assert states == {r: ("succeeded", None) for r in (a, b, c)}
    assert results == {a: True, b: True, c: True}
    assert [steps[r].trained_classifier for r in (a, b, c)] == [1, 0, 0]
