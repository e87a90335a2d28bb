"""Structured logs (AELAB_LOG_FORMAT=json): one JSON object per line, with the ids known
where the record was made."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.utils import API
from workers.logs import JsonFormatter, bind_process, bound


@pytest.fixture()
def json_lines():
    """Records of the ``aelab`` loggers, as JSON lines in a buffer."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("aelab")
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield lambda: [json.loads(line) for line in buffer.getvalue().splitlines()]
    logger.removeHandler(handler)
    logger.setLevel(old)


def test_a_record_is_one_json_line_with_its_ids(json_lines) -> None:
    log = logging.getLogger("aelab.test")
    bind_process(run_id=7)
    try:
        with bound(experiment_id=3, request_id="abc"):
            log.warning("two\nlines %s", "here", extra={"route": "/x"})
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
    finally:
        bind_process(run_id=None)
    log.info("after")
    first, second, third = json_lines()
    assert first["level"] == "WARNING" and first["logger"] == "aelab.test"
    assert first["message"] == "two\nlines here" and first["route"] == "/x"
    assert (first["run_id"], first["experiment_id"], first["request_id"]) == (7, 3, "abc")
    assert first["time"].endswith("+00:00")
    assert second["run_id"] == 7 and "experiment_id" not in second
    assert "ValueError: boom" in second["exc_info"]
    assert "run_id" not in third


def test_each_request_logs_one_line_with_its_id(json_lines, tmp_path) -> None:
    settings = Settings(home=tmp_path, start_dispatcher=False, log_format="json")
    with TestClient(create_app(settings)) as client:
        mine = client.get(f"{API}/experiments", headers={"X-Request-ID": "proxy-id-1"})
        theirs = client.get(f"{API}/experiments/999")
        bad = client.get(f"{API}/experiments", headers={"X-Request-ID": "no spaces!"})
    assert mine.headers["x-request-id"] == "proxy-id-1"
    assert theirs.status_code == 404 and len(theirs.headers["x-request-id"]) == 12
    assert bad.headers["x-request-id"] != "no spaces!"
    lines = [line for line in json_lines() if line["logger"] == "aelab.access"]
    assert [(line["request_id"], line["route"], line["status"]) for line in lines] == [
        ("proxy-id-1", "/api/v1/experiments", 200),
        (theirs.headers["x-request-id"], "/api/v1/experiments/{experiment_id}", 404),
        (bad.headers["x-request-id"], "/api/v1/experiments", 200)]


def _serve_json(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **kw: Any) -> Any:
    """``aelab serve`` with AELAB_LOG_FORMAT=json, in-process: migrating for real, then,
    in place of uvicorn's serving, the Ray head's news as the executor would tell it."""
    import uvicorn
    from typer.testing import CliRunner

    import service.app
    from service.cli import app as cli

    made: dict[str, Any] = {}

    def create_app(settings: Settings, executor_factory: Any = None) -> Any:
        made["factory"] = executor_factory
        return object()

    def run(app: Any, **options: Any) -> None:  # what the head says once up
        announce = made["factory"].keywords["announce"]
        logging.getLogger("aelab.ray").info("local Ray head up (session s)")
        if announce is not None:
            announce("aelab: local Ray head up (session s)")

    monkeypatch.setattr(service.app, "create_app", create_app)
    monkeypatch.setattr(uvicorn, "run", run)
    env = {"AELAB_HOME": str(tmp_path), "AELAB_LOG_FORMAT": "json",
           "AELAB_DATABASE_URL": f"sqlite:///{tmp_path / 'aelab.db'}"}
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        return CliRunner().invoke(cli, ["serve", "--port", "8123"], env=env, **kw)
    finally:  # configure() replaced the root logger's handlers: give pytest's back
        root.handlers[:], root.level = handlers, level


def test_serve_with_json_logs_writes_json_lines_only(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    result = _serve_json(monkeypatch, tmp_path)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]  # no plain line
    # (alembic's own lines are JSON too when its loggers are live; earlier tests in one
    # process may have silenced them, so their presence is not asserted here)
    assert [line["message"] for line in lines if line["logger"] == "aelab.ray"] == [
        "local Ray head up (session s)"]  # once, as a record


def test_serve_refusing_to_start_says_why_as_a_json_line(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    import fcntl

    with (tmp_path / "serve.lock").open("a") as lock:  # another service holds this home
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = _serve_json(monkeypatch, tmp_path)
    assert result.exit_code == 1
    [line] = [json.loads(line) for line in result.output.splitlines()]
    assert (line["level"], line["logger"]) == ("ERROR", "aelab.serve")
    assert line["message"].startswith(f"another aelab serve uses AELAB_HOME={tmp_path}")


def test_the_dispatchers_run_lines_carry_the_runs_ids(json_lines, client: TestClient) -> None:
    """README: the dispatcher's records carry run_id, experiment_id and attempt where
    known (submitting a run's attempt, losing it)."""
    from tests.service.test_search import dispatcher
    from tests.utils import tiny_spec

    exp = client.post(f"{API}/experiments", json=tiny_spec()).json()
    run_id = exp["runs"][0]["id"]
    d, _ = dispatcher(client)
    d.tick()
    d.lost(run_id, 0, "its node died")
    ids = [(line["message"].split(" ")[0], line.get("run_id"), line.get("experiment_id"),
            line.get("attempt")) for line in json_lines()
           if line["logger"] == "aelab.dispatcher"]
    assert ("submitted", run_id, exp["id"], 0) in ids
    assert ("run", run_id, None, 0) in ids  # "run 1: attempt 0 lost (…); re-queued"
