"""A run's log says what its steps on the leased runner do: "waiting" only while the
runner has not begun a step, and once it has, that the step started, runs (for how long,
its last output) and ended — never "waiting … to start" while its own runner runs it.

The driver's side of ``workers.warm.RunnerSteps`` is driven here without Ray: a scripted
stream of the runner's answers on a fake clock stands in for Ray's streaming generator."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest

from workers import warm


@dataclass
class _Ref:
    due: float
    answer: tuple[str, Any]


class _Timeline:
    """A runner's answers to one call, each arriving at a given second of a fake clock;
    ``wait``/``get``/``next`` advance the clock as Ray's would block."""

    def __init__(self, answers: list[tuple[float, tuple[str, Any]]]) -> None:
        self.now = 0.0
        self.refs = [_Ref(due, answer) for due, answer in answers]

    def clock(self) -> float:
        return self.now

    # Ray's streaming generator
    def __iter__(self) -> _Timeline:
        return self

    def __next__(self) -> _Ref:
        if not self.refs:
            raise StopIteration
        ref = self.refs.pop(0)
        self.now = max(self.now, ref.due)
        return ref

    # the ``ray`` functions the driver calls
    def wait(self, waitables: list[Any], timeout: float) -> tuple[list[Any], list[Any]]:
        assert waitables == [self]
        due = self.refs[0].due if self.refs else self.now
        if due <= self.now + timeout:
            self.now = max(self.now, due)
            return [self], []
        self.now += timeout
        return [], [self]

    def get(self, ref: _Ref) -> tuple[str, Any]:
        return ref.answer


def _steps(timeline: _Timeline, monkeypatch: pytest.MonkeyPatch
           ) -> tuple[warm.RunnerSteps, list[str]]:
    """A run's RunnerSteps whose runner ``r1`` is already leased, its Ray calls answered
    by ``timeline``."""
    import ray

    monkeypatch.setattr(warm, "ray", SimpleNamespace(
        wait=timeline.wait, get=timeline.get, exceptions=ray.exceptions,
        available_resources=lambda: {"CPU": 0.0, "GPU": 0.0}))
    runner = SimpleNamespace(call=SimpleNamespace(remote=lambda *args: timeline))
    lines: list[str] = []
    steps = object.__new__(warm.RunnerSteps)  # no pool, no Ray: only the driver's loop
    steps.env = SimpleNamespace(max_trial_failures=2)
    steps.gpus, steps.cpus = 0.0, 2.0
    steps.session, steps.opener, steps.spec = "s", None, SimpleNamespace()
    steps.leased = ("r1", runner, "lease")
    steps.printer = lines.append
    steps.clock = timeline.clock
    return steps, lines


def test_a_step_its_runner_runs_is_reported_running_not_waiting(monkeypatch):
    # What the runner answers (its real Runner.call on a session whose step prints one
    # line), timed: it begins at once, prints at 40 s and answers at 300 s — silent for
    # minutes, as the reference classifier on real MNIST is.
    class Session:
        env = SimpleNamespace(log_format="text", run_id=7)  # what a run's LocalSteps carry

        def train_classifier(self, spec: Any) -> tuple[bytes, float]:
            print("reference classifier: epoch 1/3")
            return b"weights", 0.9

    runner = object.__new__(warm.Runner)  # no torch import, no actor
    runner.name, runner.sessions = "r1", OrderedDict(s=Session())
    answers = list(runner.call("s", None, None, "train_classifier", (None,)))
    due = {"started": 1.0, "log": 40.0, "result": 300.0}
    timeline = _Timeline([(due[kind], (kind, value)) for kind, value in answers])
    steps, lines = _steps(timeline, monkeypatch)

    assert steps.train_classifier(steps.spec) == (b"weights", 0.9)
    assert lines == [
        "aelab: train_classifier started on runner r1",
        "reference classifier: epoch 1/3",
        # a note per RUN_NOTE_S (60 s) of silence, counted from the last line (40 s)
        "aelab: train_classifier running on runner r1 for 99 s; "
        "last output: reference classifier: epoch 1/3",
        "aelab: train_classifier running on runner r1 for 159 s; "
        "last output: reference classifier: epoch 1/3",
        "aelab: train_classifier running on runner r1 for 219 s; "
        "last output: reference classifier: epoch 1/3",
        "aelab: train_classifier running on runner r1 for 279 s; "
        "last output: reference classifier: epoch 1/3",
        "aelab: train_classifier done on runner r1 in 299 s",
    ]


def test_waiting_is_said_only_until_the_runner_begins_the_step(monkeypatch):
    # The runner (its actor not yet placed) begins the step at 40 s; it prints nothing and
    # fails at 110 s.
    timeline = _Timeline([(40.0, ("started", "r1")),
                          (110.0, ("error", RuntimeError("CUDA out of memory")))])
    steps, lines = _steps(timeline, monkeypatch)

    with pytest.raises(RuntimeError, match="CUDA out of memory"):
        steps.evaluate(steps.spec, None, None)
    free = "the cluster has 0 GPU, 0 CPU free"
    assert lines == [
        f"aelab: waiting 15 s for runner r1 to start evaluate (0 GPU, 2 CPU); {free}",
        f"aelab: waiting 30 s for runner r1 to start evaluate (0 GPU, 2 CPU); {free}",
        "aelab: evaluate started on runner r1",
        "aelab: evaluate running on runner r1 for 60 s; no output yet",
        "aelab: evaluate failed on runner r1 after 70 s",
    ]


def test_a_run_waiting_on_another_hands_its_runner_back_and_says_so(monkeypatch):
    released: list[tuple[str, str]] = []
    monkeypatch.setattr(warm.ray, "get", lambda ref, timeout=None: ref)
    steps = object.__new__(warm.RunnerSteps)  # no pool, no Ray: only the driver's side
    steps.pool = SimpleNamespace(release=SimpleNamespace(
        remote=lambda name, lease: released.append((name, lease))))
    steps.leased = ("r1", object(), "lease-1")
    steps.marks = {}
    lines: list[str] = []
    steps.printer = lines.append

    steps.hand_back()
    steps.hand_back()  # nothing held any more: nothing handed back twice

    assert released == [("r1", "lease-1")] and steps.leased is None
    assert steps.marks["runner_released_unix"] > 0  # when, for the run's timings
    assert lines == ["aelab: runner r1 handed back while this run waits for the reference "
                     "classifier another run is training"]
