"""The response models the API and its client share."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

from fastapi.testclient import TestClient

from service.api.schemas import RunSummary
from tests.utils import API

SPEC = {"models": ["baseline"], "datasets": ["synthetic"]}


def test_every_timestamp_is_utc_with_its_offset(client: TestClient) -> None:
    created = client.post(f"{API}/experiments", json=SPEC).json()
    listed = client.get(f"{API}/experiments").json()["items"][0]
    run = client.get(f"{API}/runs/{created['runs'][0]['id']}").json()
    for stamp in (created["created_at"], created["runs"][0]["created_at"],
                  listed["created_at"], run["created_at"]):
        assert stamp.endswith("Z"), stamp  # SQLite keeps no offset; the answer says UTC
        assert abs((datetime.now(UTC) - datetime.fromisoformat(stamp)).total_seconds()) < 60


def test_a_naive_time_is_read_as_utc_and_an_aware_one_converted() -> None:
    base = {"id": 1, "model": "baseline", "dataset": "synthetic", "status": "queued",
            "phase": None, "epoch": 0, "epochs_total": 2, "progress": 0.0, "lr": None,
            "attempt": 0, "error": None, "ray_job_id": None, "started_at": None,
            "finished_at": None, "links": {}}
    naive = RunSummary.model_validate({**base, "created_at": "2026-01-02T03:04:05"})
    aware = RunSummary.model_validate({**base, "created_at": "2026-01-02T05:04:05+02:00"})
    assert naive.created_at == aware.created_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert aware.created_at.utcoffset() is not None
    assert naive.model_dump(mode="json")["created_at"] == "2026-01-02T03:04:05Z"


def test_the_schemas_import_nothing_but_pydantic_the_states_and_the_measures() -> None:
    """Of aelab's other layers, only the measures contract (pydantic alone)."""
    code = ("import sys; import service.api.schemas; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('fastapi', 'sqlalchemy', 'ray', 'torch', 'starlette', 'models', 'workers')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "['workers', 'workers.measures']"
