"""The warm-runner pool on a real Ray head: a runner leased to a driver that dies goes back
to the pool, a hand-back under a reclaimed lease changes nothing, runners handed back while
a search runs are stopped (Tune's trials need their resources), and runners an earlier
pool left behind are stopped by the next one."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

from tests.utils import wait_for

pytestmark = [pytest.mark.ray, pytest.mark.slow]

# Two GPUs on the session's head: one runner of this shape fills it, so a lease that is
# never given back blocks every later one.
WHOLE = (2.0, 1.0, {"AELAB_TEST_POOL": "whole"}, 0)


@pytest.fixture()
def runner_pool(ray_driver) -> Iterator[Any]:
    import ray

    from workers.warm import NAMESPACE, POOL_NAME, pool

    handle = pool(600.0)
    yield handle
    # Whatever the test leaves (a runner holding both GPUs) goes, with the pool.
    if _named(POOL_NAME):
        ray.kill(ray.get_actor(POOL_NAME, namespace=NAMESPACE))
    for name in _runners():
        ray.kill(ray.get_actor(name, namespace=NAMESPACE))
    wait_for(lambda: not _runners(), 60, "the test's runners to stop", 0.5)


def _runners() -> list[str]:
    from ray.util import list_named_actors

    return [a["name"] for a in list_named_actors(all_namespaces=True)
            if a["name"].startswith("aelab-runner-") and a["name"] != "aelab-runner-pool"]


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


def test_a_lease_whose_driver_died_goes_back_to_the_pool(runner_pool) -> None:
    import ray

    child = _driver("""
        name, _, lease = ray.get(p.acquire.remote(2.0, 1.0, {"AELAB_TEST_POOL": "whole"}, 0,
                                                  "run-a", owner))
        print(name, flush=True)
    """)
    try:
        held = child.stdout.readline().strip()
        assert child.stdout.readline().strip() == "ready"
        assert ray.get(runner_pool.status.remote())["leased"] == 1
    finally:
        child.kill()
        child.wait()
    # The dead driver never calls its runner: only its death frees the two GPUs.
    owner = [ray.put(None)]
    name, _, lease = ray.get(runner_pool.acquire.remote(*WHOLE, "run-b", owner), timeout=60)
    assert name == held
    # A hand-back under the dead driver's lease, had it come late, changes nothing.
    ray.get(runner_pool.release.remote(name, "a-lease-since-reclaimed"))
    assert ray.get(runner_pool.status.remote()) == {
        "runners": 1, "idle": 0, "leased": 1, "tuning": 0}
    ray.get(runner_pool.release.remote(name, lease))
    assert ray.get(runner_pool.status.remote())["idle"] == 1


def test_runners_handed_back_during_a_search_are_stopped_until_it_ends(runner_pool) -> None:
    import ray

    owner = [ray.put(None)]
    name, _, lease = ray.get(runner_pool.acquire.remote(*WHOLE, "run-a", owner), timeout=60)
    child = _driver("ray.get(p.begin_tuning.remote('run-b', owner))")
    try:
        assert child.stdout.readline().strip() == "ready"
        ray.get(runner_pool.release.remote(name, lease))  # while run-b searches
        assert ray.get(runner_pool.status.remote()) == {
            "runners": 0, "idle": 0, "leased": 0, "tuning": 1}
    finally:
        child.kill()
        child.wait()
    # The searching driver died without ending its search: the pool forgets it.
    wait_for(lambda: ray.get(runner_pool.status.remote())["tuning"] == 0, 30,
             "the dead driver's search to be forgotten", 0.5)
    name, _, lease = ray.get(runner_pool.acquire.remote(*WHOLE, "run-a", owner), timeout=60)
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


def _named(name: str) -> bool:
    from ray.util import list_named_actors

    return any(a["name"] == name for a in list_named_actors(all_namespaces=True))
