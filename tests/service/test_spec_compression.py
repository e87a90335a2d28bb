"""The spec's compression fields: lambdas join the grid for factorized_prior only, the
quantiser's bits and the codecs are checked, every refusal names its field."""

from __future__ import annotations

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
