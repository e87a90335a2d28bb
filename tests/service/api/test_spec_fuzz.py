"""Random bodies never yield a 5xx and never store a row when refused."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.utils import API, spec

EXPERIMENTS = f"{API}/experiments"
VALID = spec(epochs=2, lr_search={"method": "fixed"}, data={"train_limit": 64})

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
fields = st.sampled_from(["models", "datasets", "epochs", "batch_size", "latent_dim",
                          "schedule", "lr_search", "data", "resources", "classifier", "seed",
                          "name", "pretrained", "unknown"])


@st.composite
def mutated_specs(draw: st.DrawFn) -> dict:
    spec = json.loads(json.dumps(VALID))
    for _ in range(draw(st.integers(1, 3))):
        spec[draw(fields)] = draw(json_values)
    return spec


def _stored(client: TestClient) -> int:
    return len(client.get(EXPERIMENTS, params={"limit": 200}).json()["items"])


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(json_values, mutated_specs()))
def test_random_bodies_never_5xx_and_refusals_store_nothing(client: TestClient,
                                                            body: object) -> None:
    before = _stored(client)
    r = client.post(EXPERIMENTS, json=body)
    assert r.status_code < 500, (body, r.text)
    if r.status_code >= 400:
        assert _stored(client) == before
        assert r.status_code == 422
        assert all("loc" in e and "msg" in e for e in r.json()["detail"])
    else:
        assert r.status_code == 201 and _stored(client) == before + 1


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=200))
def test_random_bytes_never_5xx(client: TestClient, raw: bytes) -> None:
    before = _stored(client)
    r = client.post(EXPERIMENTS, content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code in (400, 422), r.text  # undecodable → 400, malformed → 422
    assert _stored(client) == before
