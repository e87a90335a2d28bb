"""The warm-runner pool on a real Ray head: a runner leased to a driver that dies is stopped
and its resources reused, a hand-back under a reclaimed lease changes nothing, a live
driver keeps its lease, a search keeps one trial's resources free and stops runners handed
back until it ends (or its driver dies), and runners an earlier pool left behind are
stopped by the next one; a runner the resource count admits but Ray cannot place (GPU
fractions spread over both GPUs) gets room from idle runners of other shapes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.utils import wait_for

pytestmark = [pytest.mark.ray, pytest.mark.slow]

# Two GPUs on the session's head: one runner of this shape fills it, so a lease that is
# never given back blocks every later one.
WHOLE = (2.0, 1.0, {"AELAB_TEST_POOL": "whole"}, 0)
HALF = (0.5, 0.5, {"AELAB_TEST_POOL": "half"}, 0)
ONE = (1.0, 1.0, {"AELAB_TEST_POOL": "one"}, 0)


@pytest.fixture()
def runner_pool(ray_driver) -> Iterator[Any]:
    """A fresh pool on the session's head (earlier tests' pool and runners stopped first,
    and this test's afterwards)."""
    _clear()
    from workers.warm import pool

    yield pool(600.0)
    _clear()


def _clear() -> None:
    import ray

    from workers.warm import NAMESPACE, POOL_NAME

    if _named(POOL_NAME):
        ray.kill(ray.get_actor(POOL_NAME, namespace=NAMESPACE))
    for name in _runners():
        ray.kill(ray.get_actor(name, namespace=NAMESPACE))
    wait_for(lambda: not _runners() and not _named(POOL_NAME), 60,
             "the pool and its runners to stop", 0.5)


def _runners() -> list[str]:
    from ray.util import list_named_actors

    from workers.warm import POOL_NAME, RUNNER_PREFIX

    return [a["name"] for a in list_named_actors(all_namespaces=True)
            if a["name"].startswith(RUNNER_PREFIX) and a["name"] != POOL_NAME]


def _driver(code: str) -> subprocess.Popen[str]:
    """Another Ray driver on the same head (the token travels in the environment)."""
    import ray

    address = ray.get_runtime_context().gcs_address
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import ray, sys, time
        from workers.warm import pool
        ray.init(address={address!r}, log_to_driver=False)
        p = pool(600.0)
        owner = [ray.put(None)]
    """) + textwrap.dedent(code) + "\nprint('ready', flush=True)\ntime.sleep(600)\n"],
        stdout=subprocess.PIPE, text=True)


def test_a_runner_whose_driver_died_is_stopped_and_its_resources_reused(
        runner_pool) -> None:
    import ray

    child = _driver("""
        name, _, lease = ray.get(p.acquire.remote(2.0, 1.0, {"AELAB_TEST_POOL": "whole"}, 0,
                                                  "run-a", owner))
        print(name, lease, flush=True)
    """)
    try:
        held, dead_lease = child.stdout.readline().split()
        assert child.stdout.readline().strip() == "ready"
        assert ray.get(runner_pool.status.remote())["leased"] == 1
    finally:
        child.kill()
        child.wait()
    # The dead driver never handed its runner back: only its death frees the two GPUs.
    # The runner may still be running that driver's step: it is stopped, not reused.
    owner = [ray.put(None)]
    name, handle, lease = ray.get(runner_pool.acquire.remote(*WHOLE, "run-b", owner),
                                  timeout=60)
    assert name != held and not _named(held)
    ray.get(handle.ping.remote(), timeout=120)
    # A hand-back under the dead driver's lease, had it come late, changes nothing.
    ray.get(runner_pool.release.remote(held, dead_lease))
    # A live driver keeps its lease across the reaper's rounds (every 2 s).
    time.sleep(5)
    assert ray.get(runner_pool.status.remote()) == {
        "runners": 1, "idle": 0, "leased": 1, "tuning": 0, "unplaced": 0}
    ray.get(runner_pool.release.remote(name, lease))
    assert ray.get(runner_pool.status.remote())["idle"] == 1


def test_a_search_gets_one_trials_resources_until_it_ends(runner_pool) -> None:
    import ray

    owner = [ray.put(None)]
    name, _, lease = ray.get(runner_pool.acquire.remote(*WHOLE, "run-a", owner), timeout=60)
    child = _driver("ray.get(p.begin_tuning.remote('run-b', owner, 1.0, 1.0))")
    try:
        assert child.stdout.readline().strip() == "ready"
        ray.get(runner_pool.release.remote(name, lease))  # while run-b searches
        assert ray.get(runner_pool.status.remote()) == {
            "runners": 0, "idle": 0, "leased": 0, "tuning": 1, "unplaced": 0}
        # Two GPUs, one kept for run-b's trial: no runner needing both is started.
        waiting = runner_pool.acquire.remote(*WHOLE, "run-a", owner)
        assert not ray.wait([waiting], timeout=6)[0]
    finally:
        child.kill()
        child.wait()
    # The searching driver died without ending its search: the pool forgets it, and the
    # waiting lease comes.
    name, _, lease = ray.get(waiting, timeout=60)
    assert ray.get(runner_pool.status.remote())["tuning"] == 0
    ray.get(runner_pool.release.remote(name, lease))
    assert ray.get(runner_pool.status.remote())["idle"] == 1  # kept warm again


def test_runners_left_by_an_earlier_pool_are_stopped(runner_pool) -> None:
    import ray

    from workers.warm import NAMESPACE, POOL_NAME, pool

    owner = [ray.put(None)]
    name, handle, _ = ray.get(runner_pool.acquire.remote(*WHOLE, "run-a", owner), timeout=60)
    ray.get(handle.ping.remote(), timeout=120)
    ray.kill(ray.get_actor(POOL_NAME, namespace=NAMESPACE))  # the runner is now an orphan
    wait_for(lambda: not _named(POOL_NAME), 30, "the pool to go", 0.5)
    fresh = pool(600.0)
    # Without the orphan's two GPUs given back, this lease would never come.
    got, handle, _ = ray.get(fresh.acquire.remote(*WHOLE, "run-b", owner), timeout=60)
    assert got != name and not _named(name)
    ray.get(handle.ping.remote(), timeout=120)


def test_a_runner_that_the_count_admits_but_ray_cannot_place_gets_room(runner_pool) -> None:
    """Idle half-GPU runners, one on each GPU, leave "one GPU" free that a whole-GPU runner
    cannot take: the pool stops an idle one for it (before, it waited for the idle timeout,
    600 s here)."""
    import ray

    owner = [ray.put(None)]
    halves = []
    for i in range(4):  # both GPUs full, two halves each
        name, handle, lease = ray.get(runner_pool.acquire.remote(*HALF, f"run-{i}", owner),
                                      timeout=60)
        gpu = ray.get(handle.__ray_call__.remote(lambda runner: ray.get_gpu_ids()),
                      timeout=120)
        halves.append((name, gpu[0], lease))
    for name, _, lease in halves:
        ray.get(runner_pool.release.remote(name, lease))
    for gpu in {gpu for _, gpu, _ in halves}:  # one half from each GPU
        ray.get(runner_pool.forget.remote(next(n for n, g, _ in halves if g == gpu)))
    assert ray.get(runner_pool.status.remote())["idle"] == 2
    wait_for(lambda: ray.available_resources().get("GPU") == 1.0, 60, "the halves to stop",
             0.5)
    name, handle, lease = ray.get(runner_pool.acquire.remote(*ONE, "run-one", owner),
                                  timeout=60)
    assert ray.get(handle.__ray_call__.remote(lambda runner: len(ray.get_gpu_ids())),
                   timeout=120) == 1
    # One half stopped for it, and no more once it is placed (rounds every 2 s).
    time.sleep(5)
    assert ray.get(runner_pool.status.remote()) == {
        "runners": 2, "idle": 1, "leased": 1, "tuning": 0, "unplaced": 0}


def _named(name: str) -> bool:
    from ray.util import list_named_actors

    return any(a["name"] == name for a in list_named_actors(all_namespaces=True))
