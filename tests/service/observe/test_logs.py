"""Structured logs (AELAB_LOG_FORMAT=json): one JSON object per line, with the ids known
where the record was made."""

from __future__ import annotations

import io
import json
import logging

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
