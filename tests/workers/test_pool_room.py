"""The runner pool's room for a new runner, without Ray: a GPU fraction that is the only
one is counted per GPU (Ray places it on one GPU), beside other fractions by the sum, and a
runner Ray has not placed gets room from idle runners of other shapes, one at a time, those
holding GPUs first."""

from __future__ import annotations

import asyncio
import time

import pytest

from workers import warm
from workers.warm import PLACE_WAIT_S, RunnerPool, Shape


def _pool(monkeypatch: pytest.MonkeyPatch, gpus: float = 2.0, cpus: float = 8.0
          ) -> RunnerPool:
    monkeypatch.setattr(warm.ray, "cluster_resources", lambda: {"GPU": gpus, "CPU": cpus})
    monkeypatch.setattr(warm.ray, "kill", lambda handle: None)
    return RunnerPool(idle_s=600.0)


def _add(pool: RunnerPool, name: str, gpus: float, *, idle: bool = False,
         unplaced_for: float | None = None) -> None:
    shape = Shape(gpus, 1.0, (("AELAB_SHAPE", str(gpus)),))
    pool.runners[name] = (object(), shape)
    if idle:
        pool.idle[name] = time.monotonic()
    if unplaced_for is not None:
        pool.unplaced[name] = time.monotonic() - unplaced_for


@pytest.mark.parametrize(("gpus", "others", "fits", "cluster_gpus"), [
    (0.6, [], 2, 2.0),  # the sum says 3; one 0.6 per GPU
    (0.5, [], 4, 2.0),
    (0.6, [1.0], 1, 2.0),  # a whole GPU taken leaves one
    (0.5, [0.5], 3, 2.0),  # half of one GPU taken: three halves still fit
    (0.4, [0.5, 0.5], 2, 2.0),  # halves on each GPU (at worst): one 0.4 beside each
    (1.0, [0.5, 0.5], 1, 2.0),  # the sum's answer: Ray may not place it (the reaper's case)
    (0.5, [0.1, 0.1], 1, 1.0),  # fractions that share a GPU leave room for more
    (0.5, [0.25] * 4, 2, 2.0),
    (0.25, [], 2, 0.5),  # GPUs declared in fractions (not by `ray start`): the sum
])
def test_gpu_fractions_are_counted_per_gpu(monkeypatch: pytest.MonkeyPatch, gpus: float,
                                          others: list[float], fits: int,
                                          cluster_gpus: float) -> None:
    pool = _pool(monkeypatch, gpus=cluster_gpus)
    for i, other in enumerate(others):
        _add(pool, f"other-{i}", other)
    assert pool._capacity(Shape(gpus, 1.0, ())) == fits


def test_a_search_s_fractional_trials_leave_room_beside_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    pool = _pool(monkeypatch, gpus=1.0)
    pool.tuning = {"run-a": (None, 0.1, 1.0), "run-b": (None, 0.1, 1.0)}
    assert pool._capacity(Shape(0.5, 1.0, ())) == 1


def test_an_unplaced_runner_gets_room_one_idle_runner_at_a_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    pool = _pool(monkeypatch)
    _add(pool, "cpu-only", 0.0, idle=True)
    _add(pool, "half", 0.5, idle=True)
    _add(pool, "same-shape", 1.0, idle=True)
    _add(pool, "waiting", 1.0, unplaced_for=PLACE_WAIT_S + 1)
    asyncio.run(pool._reap_once())
    # A runner holding a GPU goes first; never one of its own shape (it would take that).
    assert set(pool.runners) == {"cpu-only", "same-shape", "waiting"}
    asyncio.run(pool._reap_once())  # its start takes seconds: no second stop meanwhile
    assert set(pool.runners) == {"cpu-only", "same-shape", "waiting"}
    pool.unplaced["waiting"] -= PLACE_WAIT_S + 1  # still not placed, a wait later
    asyncio.run(pool._reap_once())
    assert set(pool.runners) == {"same-shape", "waiting"}
    asyncio.run(pool.placed("waiting"))
    assert pool.unplaced == {}


def test_a_placed_or_handed_back_runner_makes_no_room(
        monkeypatch: pytest.MonkeyPatch) -> None:
    pool = _pool(monkeypatch)
    _add(pool, "half", 0.5, idle=True)
    _add(pool, "young", 1.0, unplaced_for=PLACE_WAIT_S / 2)  # still starting
    _add(pool, "placed", 1.0, unplaced_for=PLACE_WAIT_S + 1)
    asyncio.run(pool.placed("placed"))
    _add(pool, "handed-back", 2.0, unplaced_for=PLACE_WAIT_S + 1)
    pool._idle("handed-back")  # its placement never reached the pool: it waits for none
    for _ in range(3):
        asyncio.run(pool._reap_once())
    assert set(pool.runners) == {"half", "young", "placed", "handed-back"}


def test_status_counts_unplaced_runners(monkeypatch: pytest.MonkeyPatch) -> None:
    pool = _pool(monkeypatch)
    _add(pool, "waiting", 1.0, unplaced_for=0)
    assert asyncio.run(pool.status())["unplaced"] == 1


class _Created:
    """``ray.remote(Runner).options(...).remote(...)`` without Ray: records the names."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def __call__(self, cls: object) -> _Created:
        return self

    def options(self, **options: object) -> _Created:
        return self

    def remote(self, name: str, niceness: int) -> str:
        self.names.append(name)
        return name


def _serving(monkeypatch: pytest.MonkeyPatch, slow: dict[str, float] | None = None,
             gone: set[str] | None = None) -> tuple[RunnerPool, _Created, list[str]]:
    """A pool of one GPU without Ray; ``slow``: callers whose liveness check takes that
    many seconds (an owner on a node that does not answer); ``gone``: callers whose
    process has died (the set may grow)."""
    pool = _pool(monkeypatch, gpus=1.0)
    pool._reaper = object()  # type: ignore[assignment]
    created, killed = _Created(), []
    monkeypatch.setattr(warm.ray, "remote", created)
    monkeypatch.setattr(warm.ray, "kill", killed.append)

    async def check(owner: str) -> bool:
        await asyncio.sleep((slow or {}).get(owner, 0.0))
        return owner not in (gone or set())

    monkeypatch.setattr(pool, "_alive", check)
    return pool, created, killed


@pytest.mark.parametrize("freed", ["handed back", "gone"])
def test_a_runner_freed_goes_to_the_caller_that_waited_longest(
        monkeypatch: pytest.MonkeyPatch, freed: str) -> None:
    """The pool serves callers of a shape in the order they asked (the dispatcher's
    order): a runner handed back, or room for a new one (a runner died, a search ended),
    goes to the longest waiting, not to whichever wakes first nor to a caller that arrives
    at that moment."""
    pool, created, _ = _serving(monkeypatch)
    pool.runners["r1"] = ("r1", Shape(1.0, 1.0, ()))  # the cluster's one GPU, leased

    async def scenario() -> list[str]:
        served: list[str] = []

        async def ask(who: str) -> None:
            name, _, lease = await pool.acquire(1.0, 1.0, {}, 0, who, [who])
            served.append(who)
            await asyncio.sleep(0.05)
            await pool.release(name, lease)

        first = asyncio.create_task(ask("first"))
        await asyncio.sleep(0.1)
        second = asyncio.create_task(ask("second"))
        await asyncio.sleep(1.5)  # both have waited through a wake-up of their loop
        assert served == []
        if freed == "handed back":
            pool._idle("r1")
        else:
            await pool.forget("r1")  # its runner died: room for one
        late = asyncio.create_task(ask("late"))  # arrives in the same moment
        await asyncio.wait_for(asyncio.gather(first, second, late), timeout=10)
        return served

    assert asyncio.run(scenario()) == ["first", "second", "late"]
    assert pool.waiting == []
    assert len(created.names) == (1 if freed == "gone" else 0)  # then handed on in turn


def test_a_caller_whose_liveness_check_hangs_does_not_hold_up_the_hand_out(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The check that a caller is alive (up to OWNER_CHECK_S when its node does not
    answer) runs beside its wait: a runner handed back is leased at once."""
    pool, _, _ = _serving(monkeypatch, slow={"first": 5.0})
    pool.runners["r1"] = ("r1", Shape(1.0, 1.0, ()))

    async def scenario() -> float:
        first = asyncio.create_task(pool.acquire(1.0, 1.0, {}, 0, "first", ["first"]))
        second = asyncio.create_task(pool.acquire(1.0, 1.0, {}, 0, "second", ["second"]))
        await asyncio.sleep(1.5)  # the first caller is inside its check
        handed = time.monotonic()
        pool._idle("r1")
        await asyncio.wait_for(first, timeout=10)
        leased = time.monotonic() - handed
        second.cancel()
        return leased

    assert asyncio.run(scenario()) < 1.5
    assert pool.waiting == []


def test_a_caller_that_is_gone_passes_its_turn_to_the_next(
        monkeypatch: pytest.MonkeyPatch) -> None:
    gone: set[str] = set()
    pool, _, _ = _serving(monkeypatch, gone=gone)
    pool.runners["r1"] = ("r1", Shape(1.0, 1.0, ()))

    async def scenario() -> str:
        first = asyncio.create_task(pool.acquire(1.0, 1.0, {}, 0, "first", ["first"]))
        await asyncio.sleep(0.1)
        second = asyncio.create_task(pool.acquire(1.0, 1.0, {}, 0, "second", ["second"]))
        await asyncio.sleep(0.1)
        gone.add("first")
        with pytest.raises(ValueError, match="driver of first is gone"):
            await asyncio.wait_for(first, timeout=5)
        pool._idle("r1")
        name, _, _ = await asyncio.wait_for(second, timeout=5)
        return name

    assert asyncio.run(scenario()) == "r1"
    assert pool.waiting == []
