"""A run asking for a GPU trains on a GPU (issue 25): the CPU fallback is decided from the
deployment, never from a moment when no GPU node happens to be joined. Without Ray: the
decision reads ``ray.nodes()``-shaped rows, the driver's step check a patched one."""

from __future__ import annotations

import pytest

from service.orchestration.run_job import gpus_for_run
from workers import warm

HEAD = {"Alive": True, "Resources": {"CPU": 4.0}}
GPU_NODE = {"Alive": True, "Resources": {"CPU": 2.0, "GPU": 1.0}}
LOST_GPU_NODE = {**GPU_NODE, "Alive": False}


def test_a_cluster_without_gpus_by_design_trains_gpu_runs_on_cpus() -> None:
    gpus, note = gpus_for_run(1.0, None, [HEAD])
    assert gpus == 0.0 and "trains on CPUs" in note and "AELAB_GPU_CLUSTER is unset" in note
    gpus, note = gpus_for_run(1.0, False, [HEAD, GPU_NODE])
    assert gpus == 0.0 and "AELAB_GPU_CLUSTER is false" in note
    assert gpus_for_run(0.0, True, [HEAD]) == (0.0, None)


def test_a_gpu_cluster_whose_gpu_nodes_are_away_makes_the_run_wait_for_one() -> None:
    # Declared by the deployment: after a head replacement no node has rejoined yet.
    gpus, note = gpus_for_run(1.0, True, [HEAD])
    assert gpus == 1.0 and note == ("aelab: a GPU cluster (AELAB_GPU_CLUSTER is true) with "
                                    "no GPU node joined now; this run waits for 1 GPU")
    # Unset, but a GPU node of this session was lost: still a GPU cluster.
    gpus, note = gpus_for_run(0.5, None, [HEAD, LOST_GPU_NODE])
    assert gpus == 0.5 and "a node of it declared GPUs" in note and "waits" in note
    assert gpus_for_run(1.0, None, [HEAD, GPU_NODE]) == (1.0, None)
    assert gpus_for_run(1.0, True, [HEAD, GPU_NODE]) == (1.0, None)


def _steps(monkeypatch: pytest.MonkeyPatch, nodes: list[dict], *, gpus: float,
           wait_for_nodes: bool) -> tuple[warm.RunnerSteps, list[str], list[str]]:
    monkeypatch.setattr(warm.ray, "nodes", lambda: nodes)
    steps = object.__new__(warm.RunnerSteps)  # no pool, no Ray: the driver's check only
    steps.gpus, steps.cpus, steps.wait_for_nodes = gpus, 1.0, wait_for_nodes
    lines: list[str] = []
    called: list[str] = []
    steps.printer = lines.append
    steps._call = lambda method, *args, **kw: called.append(method)  # type: ignore[method-assign]
    return steps, lines, called


def test_the_driver_waits_for_a_gpu_node_instead_of_failing_the_run(monkeypatch) -> None:
    steps, lines, called = _steps(monkeypatch, [HEAD], gpus=1.0, wait_for_nodes=True)
    steps.prepare(None, False)  # type: ignore[arg-type]
    assert called == ["prepare"]  # leased (waiting in the pool) rather than failed
    assert lines == ["aelab: no node joined now has a GPU; this run waits for one with 1"]


def test_a_run_asking_more_than_any_gpu_node_has_still_fails_at_once(monkeypatch) -> None:
    steps, _, called = _steps(monkeypatch, [HEAD, GPU_NODE], gpus=2.0, wait_for_nodes=True)
    with pytest.raises(warm.ResourcesUnavailable, match="gpus_per_run 2 exceeds every node"):
        steps.prepare(None, False)  # type: ignore[arg-type]
    steps, _, called = _steps(monkeypatch, [HEAD], gpus=1.0, wait_for_nodes=False)
    with pytest.raises(warm.ResourcesUnavailable):
        steps.prepare(None, False)  # type: ignore[arg-type]
    assert called == []
