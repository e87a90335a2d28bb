"""``precision`` is part of the run contract: an experiment's spec carries it to every run
spec, the trainer's config and the LR range test, so a researcher pins the study's fp32 on
a GPU (where ``auto`` trains under bf16 autocast) or tries bf16 anywhere; a value outside
the three is a 422 naming the field."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.spec import ExperimentSpec
from tests.utils import API, tiny_spec
from workers.context import RunEnv, load_data, train_config
from workers.spec import RunSpec

ENV = RunEnv(data_root="/unused", weights_dir="/unused", allow_download=False)


def run_spec(precision: str) -> RunSpec:
    spec = ExperimentSpec.model_validate(tiny_spec(precision=precision, seed=3))
    (run,) = spec.run_specs()
    return run


def test_an_unknown_precision_is_a_422_naming_the_field_and_stores_nothing(
        client: TestClient) -> None:
    response = client.post(f"{API}/experiments", json=tiny_spec(precision="fp16"))
    assert response.status_code == 422
    assert any(e["loc"][-1] == "precision" for e in response.json()["detail"]), \
        response.json()
    assert client.get(f"{API}/experiments").json()["items"] == []


def test_each_run_spec_stores_the_experiments_precision(client: TestClient) -> None:
    exp = client.post(f"{API}/experiments", json=tiny_spec(
        "baseline", "pixel_shuffle", precision="fp32")).json()
    specs = [client.get(f"{API}/runs/{r['id']}").json()["spec"] for r in exp["runs"]]
    assert [s["precision"] for s in specs] == ["fp32", "fp32"]
    assert RunSpec.model_validate({k: v for k, v in specs[0].items()
                                   if k != "precision"}).precision == "auto"  # stored before


def test_the_runs_precision_reaches_the_forward_pass() -> None:
    """The same seed trained at each precision on the CPU: ``auto`` is fp32 there (the
    same losses to the bit), bf16 autocast moves them (by well under 10 %); a config that
    dropped the field would train all three alike."""
    from models.training import train

    data = load_data(run_spec("auto"), ENV)
    losses = {}
    for precision in ("auto", "fp32", "bf16"):
        run = run_spec(precision)
        config = train_config(run, ENV, run.fixed_lr)
        assert config.precision == precision
        losses[precision] = [m.train_loss for m in train(config, data).history]
    assert losses["auto"] == losses["fp32"]
    assert losses["bf16"] != losses["fp32"]
    assert losses["bf16"][-1] == pytest.approx(losses["fp32"][-1], rel=0.1)


def test_the_lr_range_test_sweeps_at_the_runs_precision() -> None:
    from models.lr_finder import lr_range_test

    data = load_data(run_spec("auto"), ENV)
    points = {p: lr_range_test(train_config(run_spec(p), ENV), data.train, num_steps=6)
              for p in ("fp32", "bf16")}
    assert points["fp32"].losses != points["bf16"].losses
