"""Several Ray nodes declaring fake GPUs: a worker node removed mid-training, and the
final-training trial resumes from its last checkpoint on another node."""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.context import RunEnv, load_data
from workers.spec import RunSpec
from workers.store import MemoryStore

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SPEC = RunSpec(model="baseline", dataset="synthetic", epochs=6, batch_size=32,
               schedule="one_cycle", pretrained=False,
               data={"train_limit": 512, "test_limit": 64, "augment": False},
               classifier={"enabled": False},
               lr_search={"method": "fixed", "lr": 3e-3})


@pytest.fixture()
def cluster(tmp_path: Path):
    import ray
    from ray.cluster_utils import Cluster

    from service.orchestration.ray_executor import use_token_auth

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

    from workers.ray_run import RaySteps

    c, workers = cluster
    by_id = {w.node_id: w for w in workers}
    killed: list[str] = []

    def kill_trial_node(metrics) -> None:
        # After epoch 2 is checkpointed, take away the node the trial runs on.
        if metrics.epoch == 2 and not killed:
            actors = list_actors(filters=[("state", "=", "ALIVE")])
            node = next(a.node_id for a in actors if a.node_id in by_id)
            killed.append(node)
            c.remove_node(by_id[node])

    store = MemoryStore(on_epoch=kill_trial_node)
    env = RunEnv(data_root=str(tmp_path), weights_dir=str(tmp_path),
                 tune_storage=str(tmp_path / "tune"), max_trial_failures=3)
    steps = RaySteps(env, gpus=1, cpus=1)
    result = steps.train(SPEC, load_data(SPEC, env), 3e-3, None, store)

    assert killed, "the trial never reached epoch 2"
    epochs = [m.epoch for m in store.epochs]
    assert epochs[:2] == [1, 2]
    assert epochs.count(1) == 1, f"restarted from epoch 0: {epochs}"
    assert epochs[-1] == 6 and sorted(set(epochs)) == [1, 2, 3, 4, 5, 6]
    assert [m.epoch for m in result.history] == [1, 2, 3, 4, 5, 6]
    alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert killed[0] not in alive
