"""Several Ray nodes declaring fake GPUs: a worker node removed mid-training, and the
final-training trial resumes from its last checkpoint on another node."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.utils import MemoryStore
from workers.request import RunRequest

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SPEC = {"epochs": 6, "batch_size": 32, "schedule": "one_cycle", "latent_dim": None, "seed": 0,
        "pretrained": False,
        "data": {"train_limit": 512, "test_limit": 64, "validation": "holdout",
                 "augment": False},
        "classifier": {"enabled": False}, "resources": {"gpus_per_run": 1, "cpus_per_run": 1},
        "lr_search": {"method": "fixed", "lr": 3e-3, "num_samples": 1, "budget_epochs": 1,
                      "min_lr": 1e-4, "max_lr": 1e-2, "range_test_steps": 100}}


@pytest.fixture()
def cluster(tmp_path: Path):
    import ray
    from ray.cluster_utils import Cluster

    from service.ray_executor import use_token_auth

    use_token_auth(tmp_path / "ray")
    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "num_gpus": 0,
        "_system_config": {"health_check_initial_delay_ms": 0,
                           "health_check_period_ms": 500,
                           "health_check_failure_threshold": 3}})
    workers = [c.add_node(num_cpus=2, num_gpus=1) for _ in range(2)]
    c.wait_for_nodes()
    ray.init(address=c.address)
    yield c, workers
    ray.shutdown()
    c.shutdown()


def test_trial_resumes_from_its_checkpoint_when_its_node_dies(cluster, tmp_path: Path) -> None:
    import ray
    from ray.util.state import list_actors

    from workers.ray_run import RaySteps, Resources

    c, workers = cluster
    by_id = {w.node_id: w for w in workers}
    killed: list[str] = []

    def kill_trial_node(metrics: dict) -> None:
        # After epoch 2 is checkpointed, take away the node the trial runs on.
        if metrics["epoch"] == 2 and not killed:
            actors = list_actors(filters=[("state", "=", "ALIVE")])
            node = next(a.node_id for a in actors if a.node_id in by_id)
            killed.append(node)
            c.remove_node(by_id[node])

    store = MemoryStore(on_epoch=kill_trial_node)
    req = RunRequest(1, 1, "baseline", "synthetic", SPEC, data_root=str(tmp_path),
                     weights_dir=str(tmp_path))
    steps = RaySteps(Resources(gpus=1, cpus=1, max_failures=3,
                               storage=str(tmp_path / "tune")))
    result = steps.train(req, req.load_data(), 3e-3, store)

    assert killed, "the trial never reached epoch 2"
    epochs = [m["epoch"] for m in store.epochs]
    assert epochs[:2] == [1, 2]
    assert epochs.count(1) == 1, f"restarted from epoch 0: {epochs}"
    assert epochs[-1] == 6 and sorted(set(epochs)) == [1, 2, 3, 4, 5, 6]
    assert [m.epoch for m in result.history] == [1, 2, 3, 4, 5, 6]
    alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert killed[0] not in alive
