"""``aelab submit`` on a search, in-process against the app (the dispatcher ticked and
the samples finished between the CLI's polls): the run counts are the samples', and a
pruned sample is an ordinary end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from service.cli import remote
from service.client import Client
from service.persistence.tables import Status
from tests.service.test_search import ISSUE_SEARCH, dispatcher, finish, sample_rows, search_spec

SMALL = {**ISSUE_SEARCH, "algorithm": "random", "num_samples": 2, "max_concurrent": 1}


class _World(Client):
    """The CLI's client, in-process; before each read of the experiment the dispatcher
    proposes and the open samples end, in turn, as ``ends`` says (None: leave it
    running). (The CLI's own sleep between polls is its Ctrl-C handler's.)"""

    def __init__(self, client: TestClient, ends: list[Status | None]) -> None:
        super().__init__("http://testserver", transport=client._transport)
        self.app, self.outcomes = client, iter(ends)
        self.dispatcher, _ = dispatcher(client)

    def get(self, experiment_id: int) -> Any:
        self.dispatcher.tick()
        for run in sample_rows(self.app, experiment_id):
            if run.status in (Status.queued, Status.running):
                end = next(self.outcomes, None)
                if end is not None:
                    finish(self.app, run, 25.0 if end == Status.succeeded else None, end)
        self.dispatcher.tick()
        return super().get(experiment_id)


def cli(client: TestClient, monkeypatch: pytest.MonkeyPatch, *args: str,
        ends: list[Status | None]) -> Any:
    """``aelab args`` (output to a pipe) against the app."""
    world = _World(client, ends)
    monkeypatch.setattr(remote, "Client", lambda url=None: world)
    return CliRunner().invoke(remote.app, list(args))


@pytest.fixture()
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "search.json"
    path.write_text(json.dumps(search_spec(SMALL)))
    return path


def test_submit_counts_the_samples_not_the_grid(client: TestClient, spec: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    planned = cli(client, monkeypatch, "submit", str(spec), "--dry-run", ends=[])
    assert planned.exit_code == 0, planned.output
    assert "valid: 4 run(s) (2 samples × 2 (model, dataset)): baseline/synthetic, " \
           "factorized_prior/synthetic" in planned.output
    submitted = cli(client, monkeypatch, "submit", str(spec), ends=[])
    assert submitted.exit_code == 0, submitted.output
    assert "experiment 1 submitted: 4 run(s) queued" in submitted.output
    status = cli(client, monkeypatch, "status", "1", ends=[Status.succeeded, None])
    assert status.exit_code == 0, status.output
    assert "search: 3/4 run(s) made" in status.output  # one ended, its next proposed


def test_submit_wait_ends_0_when_every_sample_succeeded_or_was_pruned(
        client: TestClient, spec: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ok, pruned = Status.succeeded, Status.pruned
    result = cli(client, monkeypatch, "submit", str(spec), "--wait", "--poll", "0.1",
                 ends=[ok, pruned, pruned, ok])
    assert result.exit_code == 0, result.output
    assert "experiment 1: 4 run(s) on http://testserver" in result.output
    assert "experiment 1 succeeded: 2/4 run(s) succeeded, 2 pruned in" in result.output
    assert "failed" not in result.output
