"""Each epoch's durable checkpoint is written off the training thread (issue 28, item 2):
the next epoch trains while the last one's checkpoint is written and its epoch recorded;
the writer's errors stop the step with their type; and a process killed right after an
epoch resumes from that epoch or the one before, never from a torn file, and never redoes
an epoch it recorded."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest
import torch

from models.plan import EpochMetrics
from models.training import (
    TrainingSession,
    load_checkpoint,
    save_checkpoint,
    snapshot_checkpoint,
)
from workers.context import RunEnv, load_data, train_config
from workers.logs import bound, current_ids
from workers.pipeline import LocalSteps
from workers.space import StorageFull
from workers.spec import RunSpec
from workers.store import MemoryStore, RunCancelled, RunPruned, StaleAttempt
from workers.warm import _Lines

LR = 1e-3


def tiny_spec(epochs: int, train_limit: int = 64) -> RunSpec:
    return RunSpec(model="baseline", dataset="synthetic", epochs=epochs, batch_size=32,
                   lr_search={"method": "fixed"},
                   data={"train_limit": train_limit, "test_limit": 16},
                   classifier={"enabled": False}, pretrained=False,
                   resources={"gpus_per_run": 0, "cpus_per_run": 1})


def env_at(root: Path) -> RunEnv:
    return RunEnv(data_root="/unused", weights_dir="/unused", allow_download=False,
                  tune_storage=str(root))


@pytest.fixture(scope="module")
def data() -> Any:
    return load_data(tiny_spec(1), env_at(Path("/unused")))


def steps_for(root: Path, store: MemoryStore, spec: RunSpec, data: Any) -> LocalSteps:
    steps = LocalSteps(env_at(root), persist=True)
    steps.open(spec, store)
    steps.data = data
    return steps


def progress_epoch(steps: LocalSteps, key: str = "train-progress") -> int | None:
    assert steps.storage is not None
    blob = steps.storage.read(key)
    return None if blob is None else int(load_checkpoint(blob)["epoch"])


class Store(MemoryStore):
    """A MemoryStore that notes the thread and log ids each epoch is recorded with and how
    often it was asked whether the run is cancelled (once per epoch, on the training
    thread, after the epoch's checkpoint was handed to the writer)."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[str] = []
        self.ids: list[dict[str, Any]] = []
        self.asked = 0

    def record_epoch(self, metrics: EpochMetrics) -> None:
        self.threads.append(threading.current_thread().name)
        self.ids.append(current_ids())
        super().record_epoch(metrics)

    def is_cancelled(self) -> bool:
        self.asked += 1
        return super().is_cancelled()


# --- the writer, in this process -----------------------------------------------------------


def test_the_next_epoch_trains_while_the_last_ones_record_is_pending(tmp_path, data):
    """Epoch 1's record waits until the training thread has gone on past epoch 1 (asked
    whether the run is cancelled, which it does after handing epoch 1 to the writer): a
    writer that recorded on the training thread would never get there (the wait times
    out and the test fails)."""
    moved_on = threading.Event()
    waited: list[bool] = []

    class Slow(Store):
        def record_epoch(self, metrics: EpochMetrics) -> None:
            if metrics.epoch == 1:
                waited.append(moved_on.wait(timeout=15))
            super().record_epoch(metrics)

        def is_cancelled(self) -> bool:
            moved_on.set()
            return super().is_cancelled()

    store = Slow()
    steps = steps_for(tmp_path, store, tiny_spec(3), data)
    with bound(run_id=41):
        steps.train(tiny_spec(3), LR, None)
    assert waited == [True]
    assert [m.epoch for m in store.epochs] == [1, 2, 3]
    assert all(name.startswith("aelab-checkpoint") for name in store.threads)
    assert all(ids.get("run_id") == 41 for ids in store.ids)  # the step's log context
    # The step's last checkpoint is the last epoch's, kept, and on storage once: as the
    # step's progress, which read_step serves for the finished step (no second write).
    assert load_checkpoint(steps.checkpoints["train"])["epoch"] == 3
    assert progress_epoch(steps) == 3 and progress_epoch(steps, "train") is None
    assert steps.storage is not None
    assert load_checkpoint(steps.storage.read_step("train"))["epoch"] == 3


def test_the_last_epochs_slow_write_and_record_are_awaited(tmp_path, data):
    class Slow(Store):
        def record_epoch(self, metrics: EpochMetrics) -> None:
            if metrics.epoch == 2:
                time.sleep(0.5)
            super().record_epoch(metrics)

    store = Slow()
    steps = steps_for(tmp_path, store, tiny_spec(2), data)
    steps.train(tiny_spec(2), LR, None)
    assert [m.epoch for m in store.epochs] == [1, 2]  # the last one's too, on return
    assert progress_epoch(steps) == 2
    assert steps.result is not None and len(steps.result.history) == 2


def test_a_failed_record_stops_the_step_at_the_next_epoch_with_its_type(tmp_path, data):
    class Fenced(Store):
        def record_epoch(self, metrics: EpochMetrics) -> None:
            super().record_epoch(metrics)
            raise StaleAttempt("attempt 0 of run 1 is no longer current")

    store = Fenced()
    steps = steps_for(tmp_path, store, tiny_spec(4), data)
    with pytest.raises(StaleAttempt, match="no longer current"):
        steps.train(tiny_spec(4), LR, None)
    # Epoch 2 trained, then its turn to hand over raised epoch 1's error: nothing after.
    assert [m.epoch for m in store.epochs] == [1] and store.asked == 1
    assert progress_epoch(steps) == 1  # written before the record that failed
    assert "train" not in steps.checkpoints


class PrunedAtEpoch2(Store):
    """A search's sample its pruner stops once epoch 2 is recorded."""

    def record_epoch(self, metrics: EpochMetrics) -> None:
        super().record_epoch(metrics)
        if metrics.epoch == 2:
            raise RunPruned("pruned after epoch 2: below the median")


def test_a_run_pruned_at_an_epoch_stops_one_epoch_later_at_most(tmp_path, data):
    store = PrunedAtEpoch2()
    steps = steps_for(tmp_path, store, tiny_spec(5), data)
    with pytest.raises(RunPruned, match="epoch 2"):
        steps.train(tiny_spec(5), LR, None)
    assert [m.epoch for m in store.epochs] == [1, 2]
    assert store.asked <= 3 and progress_epoch(steps) == 2


def test_a_run_its_pruner_ended_stops_as_pruned_though_it_then_reads_as_not_running(
        tmp_path, data):
    """The epoch just handed to the writer prunes the run, and the training thread's
    cancel check, coming after, finds the run no longer running: the step stops with
    the prune (its reason), not as cancelled."""
    pruned = threading.Event()

    class Pruning(PrunedAtEpoch2):
        def record_epoch(self, metrics: EpochMetrics) -> None:
            try:
                super().record_epoch(metrics)
            except RunPruned:
                pruned.set()
                raise

        def is_cancelled(self) -> bool:
            self.asked += 1
            # Asked after epoch 2 was handed over: once the writer has pruned the run, it
            # no longer reads as running (what RunStore.is_cancelled answers then).
            return self.asked >= 2 and pruned.wait(timeout=15)

    store = Pruning()
    steps = steps_for(tmp_path, store, tiny_spec(4), data)
    with pytest.raises(RunPruned, match="epoch 2"):
        steps.train(tiny_spec(4), LR, None)
    assert [m.epoch for m in store.epochs] == [1, 2]


def test_an_error_of_the_last_epochs_job_is_raised_at_the_end(tmp_path, data):
    store = PrunedAtEpoch2()
    steps = steps_for(tmp_path, store, tiny_spec(2), data)
    with pytest.raises(RunPruned):
        steps.train(tiny_spec(2), LR, None)
    assert "train" not in steps.checkpoints and progress_epoch(steps) == 2


def test_a_full_storage_stops_the_step_with_its_type_and_records_nothing_after(tmp_path,
                                                                                data):
    store = Store()
    steps = steps_for(tmp_path, store, tiny_spec(4), data)
    assert steps.storage is not None
    real = steps.storage.write
    writes: list[str] = []

    def write(key: str, blob: bytes) -> None:
        writes.append(key)
        if len(writes) == 2:
            raise StorageFull("the checkpoint storage is full", code=28, size=len(blob),
                              where="tmp")
        real(key, blob)

    steps.storage.write = write  # type: ignore[method-assign]
    with pytest.raises(StorageFull, match="full"):
        steps.train(tiny_spec(4), LR, None)
    # Epoch 2's write failed: epoch 2 is not recorded (durable first).
    assert [m.epoch for m in store.epochs] == [1] and progress_epoch(steps) == 1


def test_cancelling_stops_the_step_after_awaiting_the_pending_epoch(tmp_path, data, caplog):
    """Cancelled once epoch 2 is handed over: the step raises RunCancelled — after its
    pending epoch 2 was written and recorded, not abandoned; that record's own error
    (the store refusing a cancelled run's write) is logged, not lost, and does not
    replace the cancellation."""
    class Cancelled(Store):
        def record_epoch(self, metrics: EpochMetrics) -> None:
            if metrics.epoch == 2:
                time.sleep(0.3)  # still pending when the cancellation is seen
                super().record_epoch(metrics)
                raise StaleAttempt("the run moved on")
            super().record_epoch(metrics)

        def is_cancelled(self) -> bool:
            super().is_cancelled()
            return self.asked >= 2

    store = Cancelled()
    steps = steps_for(tmp_path, store, tiny_spec(4), data)
    with caplog.at_level(logging.WARNING, logger="aelab.run"), \
            pytest.raises(RunCancelled) as raised:
        steps.train(tiny_spec(4), LR, None)
    assert type(raised.value) is RunCancelled
    assert [m.epoch for m in store.epochs] == [1, 2] and progress_epoch(steps) == 2
    assert any("StaleAttempt" in r.getMessage() and "RunCancelled" in r.getMessage()
               for r in caplog.records)


def test_without_storage_every_epoch_is_recorded_on_the_training_thread(data):
    store = Store()
    steps = LocalSteps(env_at(Path("/unused")))
    steps.open(tiny_spec(2), store)
    steps.data = data
    steps.train(tiny_spec(2), LR, None)
    assert store.threads == [threading.current_thread().name] * 2
    assert load_checkpoint(steps.checkpoints["train"])["epoch"] == 2


def test_a_snapshot_is_a_copy_that_training_does_not_change(data):
    session = TrainingSession(train_config(tiny_spec(2), env_at(Path("/unused")), LR), data)
    session.run(None, stop_after=1)
    live = session.checkpoint()
    snap = snapshot_checkpoint(live)
    before = save_checkpoint(snap)
    assert isinstance(snap["model"], OrderedDict)
    assert snap["model"]._metadata == live["model"]._metadata  # read by load_state_dict
    session.run(None)  # epoch 2 changes the weights and Adam's moments in place
    after = session.checkpoint()
    name = next(iter(after["model"]))
    assert not torch.equal(after["model"][name], snap["model"][name])
    assert save_checkpoint(snap) == before
    state = next(iter(snap["optimizer"]["state"].values()))
    assert all(t.device.type == "cpu" for t in state.values() if isinstance(t, torch.Tensor))
    # It restores as the live checkpoint of epoch 1 would.
    restored = TrainingSession(session.config, data)
    restored.restore(load_checkpoint(before))
    assert restored.epoch == 1


def test_lines_of_two_threads_writing_at_once_stay_apart():
    import queue

    sink: queue.Queue[object] = queue.Queue()
    lines = _Lines(sink, io.StringIO())
    go = threading.Barrier(2)

    def write(tag: str) -> None:
        go.wait()
        for i in range(200):
            lines.write(f"{tag}{i} ")
            lines.write("part\n")

    threads = [threading.Thread(target=write, args=(tag,)) for tag in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines.drain()
    got = []
    while not sink.empty():
        got.append(sink.get())
    assert sorted(got) == sorted(f"{tag}{i} part" for tag in "ab" for i in range(200))


# --- a process killed right after an epoch -------------------------------------------------

# A fork server: imports torch and the pipeline once and loads the data (one thread, so
# no OpenMP pool is forked), then forks one child per line on stdin, prints its pid and,
# once it ended, "ended". A child trains the run's "train" step on ``storage`` with
# checkpoints written slowly (in 8 flushed pieces, 12 ms apart: a kill lands mid-write),
# appending "trained N" to ``marks`` when epoch N ends (before the pipeline sees it) and
# "recorded N" when the store records it.
SERVER = r'''
import json, os, sys, time, traceback
import torch
torch.set_num_threads(1)
from fsspec.implementations.local import LocalFileSystem
import models.training
from workers.context import RunEnv, load_data
from workers.pipeline import LocalSteps
from workers.spec import RunSpec
from workers.store import MemoryStore

SPEC = RunSpec.model_validate_json(sys.argv[1])
LR = float(sys.argv[2])
ENV = dict(data_root="/unused", weights_dir="/unused", allow_download=False)
DATA = load_data(SPEC, RunEnv(**ENV))


class SlowFile:
    def __init__(self, f):
        self.f = f

    def write(self, data):
        view = memoryview(data)
        piece = max(1, len(view) // 8)
        for i in range(0, len(view), piece):
            self.f.write(view[i:i + piece])
            self.f.flush()
            time.sleep(0.012)
        return len(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


class SlowFS(LocalFileSystem):
    def open(self, path, mode="rb", **kwargs):
        f = super().open(path, mode, **kwargs)
        return SlowFile(f) if "w" in mode else f


_train_epoch = models.training.TrainingSession.train_epoch


def slow_epoch(self, phase):
    # Each epoch outlasts its predecessor's checkpoint write and record by far, on a
    # loaded machine too: a kill once epoch N is recorded finds epoch N+1 training.
    result = _train_epoch(self, phase)
    time.sleep(0.8)
    return result


models.training.TrainingSession.train_epoch = slow_epoch


def run(storage, marks):
    def mark(line):
        with open(marks, "a") as f:
            f.write(line + "\n")

    class Store(MemoryStore):
        def record_epoch(self, metrics):
            super().record_epoch(metrics)
            mark(f"recorded {metrics.epoch}")

    train = models.training.train

    def marked(config, data, *, on_epoch, **kwargs):
        def each(metrics, checkpoint):
            mark(f"trained {metrics.epoch}")
            on_epoch(metrics, checkpoint)
        return train(config, data, on_epoch=each, **kwargs)

    models.training.train = marked
    steps = LocalSteps(RunEnv(**ENV, tune_storage=storage), persist=True)
    steps.storage.fs = SlowFS()
    steps.open(SPEC, Store())
    steps.data = DATA
    steps.train(SPEC, LR, None)
    mark("done")


print("ready", flush=True)
for line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            run(**json.loads(line))
        except BaseException:
            traceback.print_exc()
            code = 1
        os._exit(code)
    print(pid, flush=True)
    os.waitpid(pid, 0)
    print("ended", flush=True)
'''


def _marks(path: Path, kind: str) -> list[int]:
    if not path.exists():
        return []
    return [int(line.split()[1]) for line in path.read_text().splitlines()
            if line.startswith(kind + " ")]


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    if not folder.exists():
        return {}
    out = {}
    for p in folder.iterdir():
        try:
            st = p.stat()
        except FileNotFoundError:
            continue
        out[p.name] = (st.st_size, st.st_mtime_ns)
    return out


def _wait(predicate: Any, timeout_s: float, what: str, log_path: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; the server said:\n"
                                 + log_path.read_text()[-3000:])
        time.sleep(0.003)


@pytest.mark.slow
def test_a_kill_right_after_an_epoch_resumes_from_it_or_the_one_before(tmp_path):
    """A run's training is SIGKILLed four times, each time right after an epoch ended —
    at once, while the epoch's checkpoint is being written (a file in the storage changes)
    or once the epoch is recorded — and resumed by a fresh process on the same
    storage. After every kill the progress checkpoint loads (never torn), its epoch is at
    least the last one recorded (a recorded epoch is never redone) and is the last one
    trained or the one before; a last resume trains the plan to its end."""
    epochs = 6
    spec = tiny_spec(epochs, train_limit=128)  # an epoch outlasts its checkpoint's write
    storage, marks = tmp_path / "storage", tmp_path / "marks.txt"
    folder = storage / "run"
    progress = folder / "train-progress.pt"
    server_log = tmp_path / "server.log"
    with server_log.open("w") as err:
        server = subprocess.Popen(
            [sys.executable, "-c", SERVER, spec.model_dump_json(), repr(LR)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=err, text=True,
            cwd=Path(__file__).resolve().parents[2])
    assert server.stdin is not None and server.stdout is not None
    seen: list[tuple[str, int, int, int]] = []  # (moment, last trained, recorded, resumed)
    try:
        assert server.stdout.readline().strip() == "ready", server_log.read_text()
        for moment in ("writing", "recorded", "writing", "at once"):
            trained_before = len(_marks(marks, "trained"))
            recorded_before = len(_marks(marks, "recorded"))
            server.stdin.write(json.dumps({"storage": str(storage),
                                           "marks": str(marks)}) + "\n")
            server.stdin.flush()
            pid = int(server.stdout.readline())
            _wait(lambda n=trained_before: len(_marks(marks, "trained")) > n, 60,
                  "an epoch to end", server_log)
            if moment == "writing":  # a write under way: some file there changes
                files = _listing(folder)
                _wait(lambda was=files: _listing(folder) != was, 30, "a checkpoint write",
                      server_log)
                time.sleep(0.03)
            elif moment == "recorded":  # the epoch's checkpoint written and recorded
                _wait(lambda n=recorded_before: len(_marks(marks, "recorded")) > n, 30,
                      "an epoch to be recorded", server_log)
            os.kill(pid, signal.SIGKILL)
            assert server.stdout.readline().strip() == "ended"
            assert "done" not in marks.read_text(), "the child finished before its kill"
            trained, recorded = _marks(marks, "trained"), _marks(marks, "recorded")
            last_trained = trained[-1]
            last_recorded = recorded[-1] if recorded else 0
            # Never torn: the progress file is a whole checkpoint (or none yet).
            resumed = int(load_checkpoint(progress.read_bytes())["epoch"]) \
                if progress.exists() else 0
            seen.append((moment, last_trained, last_recorded, resumed))
            assert resumed >= last_recorded, f"a recorded epoch would be redone: {seen}"
            assert resumed in (last_trained - 1, last_trained), seen
    finally:
        server.stdin.close()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
    # The kills landed in both windows: while the last epoch's checkpoint was being
    # written (resumed from the one before) and once it was recorded (resumed from it).
    assert any(resumed == trained - 1 for _, trained, _, resumed in seen), seen
    assert any(resumed == trained for _, trained, _, resumed in seen), seen
    # A fresh process resumes and trains to the end of the plan.
    store = Store()
    steps = LocalSteps(env_at(storage), persist=True)
    steps.open(spec, store)
    steps.data = load_data(spec, env_at(storage))
    steps.train(spec, LR, None)
    resumed = seen[-1][3]
    assert [m.epoch for m in store.epochs] == list(range(resumed + 1, epochs + 1))
    assert steps.result is not None
    assert [m.epoch for m in steps.result.history] == list(range(1, epochs + 1))
    assert load_checkpoint(steps.checkpoints["train"])["epoch"] == epochs
