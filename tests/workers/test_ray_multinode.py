"""Several Ray nodes declaring fake GPUs: the node of the warm runner training a run is
removed mid-training, and the step resumes from its last checkpoint on another node."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from service.orchestration.run_store import DbRunStore, DbSessionOpener, sessions_for
from service.persistence import repository as repo
from service.persistence.artifacts import ArtifactStore
from service.persistence.db import transaction
from service.persistence.migrate import upgrade
from service.settings import Settings, job_environment
from service.spec import ExperimentSpec
from tests.utils import tiny_spec
from workers.pipeline import run_pipeline
from workers.spec import RunSpec
from workers.warm import RunnerSteps

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SPEC = tiny_spec(epochs=6, schedule="one_cycle",
                 data={"train_limit": 2048, "test_limit": 64, "augment": False},
                 lr_search={"method": "fixed", "lr": 3e-3},
                 resources={"gpus_per_run": 1, "cpus_per_run": 1})


@pytest.fixture()
def cluster(tmp_path: Path):
    import ray
    from ray.cluster_utils import Cluster

    from service.orchestration.ray_auth import use_token_auth

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


def test_a_step_resumes_from_its_checkpoint_when_its_runners_node_dies(
        cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ray.util.state import list_actors

    c, workers = cluster
    home = tmp_path / "home"
    settings = Settings(_env_file=None, home=home)
    for key, value in job_environment(settings).items():
        monkeypatch.setenv(key, value)  # the opener reads the same settings in the runner
    upgrade(settings.sqlalchemy_url)
    sessions = sessions_for(settings.sqlalchemy_url)
    with transaction(sessions) as s:
        run = repo.create_experiment(s, spec=ExperimentSpec.model_validate(SPEC)).runs[0]
        repo.start_attempt(s, run_id=run.id, attempt=0, job_id="test-job", cluster="c")
        spec = RunSpec.model_validate(run.spec)
    store = DbRunStore(sessions, ArtifactStore(settings.artifact_root), run.id)
    printed: list[str] = []
    key = f"run-{run.id}/a0"
    steps = RunnerSteps(settings.run_env(key), gpus=1, cpus=1,
                        opener=DbSessionOpener(run.id, 0, key), session=f"run-{run.id}-a0",
                        env_vars=job_environment(settings), printer=printed.append)

    by_id = {w.node_id: w for w in workers}
    killed: list[str] = []

    def kill_the_runners_node() -> None:
        # Once epoch 2 is recorded (and checkpointed), take the runner's node away.
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not killed:
            with sessions() as s:
                if repo.get_run(s, run_id=run.id).epoch >= 2:
                    runner = next(a for a in list_actors(filters=[("state", "=", "ALIVE")])
                                  if a.class_name == "Runner")
                    killed.append(runner.node_id)
                    c.remove_node(by_id[runner.node_id])
                    return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_the_runners_node, daemon=True)
    killer.start()
    assert run_pipeline(spec, store, steps), printed[-20:]
    killer.join(timeout=5)

    assert killed, "the run never reached epoch 2"
    lost = [line for line in printed if "was lost during train" in line]
    assert len(lost) == 1, printed
    trained = [line.split()[1] for line in printed if line.startswith("epoch ")]
    assert trained.count("1/6") == 1, f"restarted from epoch 0: {trained}"
    assert trained[-1] == "6/6" and sorted(set(trained)) == [f"{i}/6" for i in range(1, 7)]
    run_out = repo.get_run(sessions(), run_id=run.id, detail=True)
    assert run_out.status.value == "succeeded"
    assert [e.epoch for e in run_out.epochs] == [1, 2, 3, 4, 5, 6]
    import ray

    assert killed[0] not in {n["NodeID"] for n in ray.nodes() if n["Alive"]}
