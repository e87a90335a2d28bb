"""schemathesis against the app's own OpenAPI, on SQLite and PostgreSQL, with the token:
every operation fuzzed (positive and negative data), then stateful sequences through the
schema's links (POST → GET, results, cancel, DELETE of the created id). Zero server
errors, responses as documented, and no row written by a refused request.

Fixed seed (derandomized) and a bounded budget: the same cases on every run."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from pydantic import SecretStr
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import delete, func, select

from service.app import create_app
from service.context import context_of
from service.persistence.tables import Experiment, Run

TOKEN = "fuzz-token-" + "x" * 20
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, negative_data_rejection]
EXAMPLES_PER_OPERATION = 60


@pytest.fixture()
def fuzz_app(settings):
    settings.api_token = SecretStr(TOKEN)
    app = create_app(settings)
    with TestClient(app):  # runs the lifespan: migrations
        yield app


def _rows(app: Any) -> tuple[int, int]:
    with context_of(app).sessions() as s:
        return (s.scalar(select(func.count()).select_from(Experiment)) or 0,
                s.scalar(select(func.count()).select_from(Run)) or 0)


def test_every_operation_is_fuzzed_without_a_server_error(fuzz_app) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    calls: Counter[str] = Counter()
    refused_writes: Counter[str] = Counter()
    def fuzz(operation: schemathesis.APIOperation) -> None:
        strategy = (operation.as_strategy(GenerationMode.POSITIVE, headers=AUTH)
                    | operation.as_strategy(GenerationMode.NEGATIVE, headers=AUTH))
        label = operation.label

        @hypothesis_settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None,
                             derandomize=True, database=None,
                             phases=[Phase.explicit, Phase.generate],
                             suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def one(case: schemathesis.Case) -> None:
            before = _rows(fuzz_app)
            response = case.call()
            case.validate_response(response, checks=CHECKS)
            if response.status_code >= 400:
                assert _rows(fuzz_app) == before, (label, response.status_code)
                if case.method.upper() != "GET":
                    refused_writes[label] += 1
            calls[label] += 1

        one()

    for operation in operations:
        fuzz(operation)
    skipped = [op.label for op in operations if calls[op.label] == 0]
    assert not skipped, f"operations never exercised: {skipped}"
    assert refused_writes["POST /api/v1/experiments"] > 0  # refusals were really tried


def test_stateful_sequences_follow_the_links(fuzz_app) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)
    # Sequences of valid calls reach deep states (negative data is fuzzed per operation).
    schema.config.generation.update(modes=[GenerationMode.POSITIVE])
    seen: Counter[tuple[str, int]] = Counter()

    class Machine(schema.as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            # Each sequence starts from an empty database: the same steps get the same
            # answers, as Hypothesis needs to replay and shrink them.
            with context_of(fuzz_app).sessions.begin() as s:
                s.execute(delete(Experiment))

        def before_call(self, case: schemathesis.Case) -> None:
            # Creations are fuzzed per operation above; here they must succeed so that
            # the sequences reach what follows them (GET, results, cancel, DELETE).
            if case.operation.label == "POST /api/v1/experiments":
                case.body = {"name": "stateful", "models": ["baseline"],
                             "datasets": ["synthetic"], "pretrained": False}
                case.query = {}
                case.headers = {}

        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
            return {"headers": AUTH}

        def validate_response(self, response: Any, case: schemathesis.Case,
                              **kwargs: Any) -> None:
            seen[(case.operation.label, response.status_code)] += 1
            # Negative data is the per-operation test's; creations here are made valid.
            case.validate_response(response, checks=[c for c in CHECKS
                                                     if c is not negative_data_rejection])

    Machine.run(settings=hypothesis_settings(
        max_examples=60, stateful_step_count=8, deadline=None, derandomize=True,
        database=None, suppress_health_check=list(HealthCheck)))
    ok = {label for (label, code), n in seen.items() if 200 <= code < 300 and n}
    # The created experiment was read, cancelled and deleted through the links.
    assert {"POST /api/v1/experiments", "GET /api/v1/experiments/{experiment_id}",
            "POST /api/v1/experiments/{experiment_id}/cancel",
            "DELETE /api/v1/experiments/{experiment_id}"} <= ok, sorted(seen)
