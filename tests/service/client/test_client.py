"""The Python client against a scripted transport: retries, idempotency keys, errors,
paging, waiting, logs and checked downloads. (Against a real server: test_cli_remote.)"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.client import (
    ApiError,
    ChecksumMismatch,
    Client,
    ConflictError,
    InvalidRequest,
    NotFoundError,
    ServiceUnavailable,
    SpecError,
    Unreachable,
    UnsafeArtifactName,
    WaitTimeout,
    load_spec,
)
from service.spec import ExperimentSpec
from tests.utils import spec

NOW = "2026-01-02T03:04:05Z"
SPEC = spec(epochs=2, data={"train_limit": 256})


def run_json(run_id: int = 1, status: str = "running", phase: str | None = "train",
             epoch: int = 0, **kw: Any) -> dict[str, Any]:
    return {"id": run_id, "model": "baseline", "dataset": "synthetic", "status": status,
            "phase": phase, "epoch": epoch, "epochs_total": 2, "progress": epoch / 2,
            "lr": None, "attempt": 0, "error": None, "ray_job_id": None,
            "created_at": NOW, "started_at": NOW, "finished_at": None, "links": {}, **kw}


def experiment_json(exp_id: int = 7, status: str = "running",
                    runs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"id": exp_id, "name": "t", "status": status, "error": None, "created_at": NOW,
            "started_at": NOW, "finished_at": None, "links": {},
            "runs": runs if runs is not None else [run_json()]}


class Script:
    """A transport that answers each request with the next step (a response, an
    exception to raise, or a function of the request), recording what was sent."""

    def __init__(self, *steps: httpx.Response | Exception | Callable[[httpx.Request], Any]
                 ) -> None:
        self.steps = list(steps)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.steps.pop(0)
        if callable(step) and not isinstance(step, httpx.Response):
            step = step(request)
        if isinstance(step, Exception):
            raise step
        return step


def client_for(script: Script, sleeps: list[float] | None = None, **kw: Any) -> Client:
    record = sleeps if sleeps is not None else []
    return Client("http://aelab.test", token="t0k", transport=httpx.MockTransport(script),
                  sleep=record.append, **kw)


def ok(body: Any, status: int = 200, **kw: Any) -> httpx.Response:
    return httpx.Response(status, json=body, **kw)


def test_reads_retry_connection_errors_with_doubling_jittered_waits() -> None:
    script = Script(httpx.ConnectError("refused"), httpx.ReadError("reset"),
                    ok(experiment_json()))
    sleeps: list[float] = []
    exp = client_for(script, sleeps).get(7)
    assert exp.id == 7 and exp.runs[0].phase == "train"
    assert len(script.requests) == 3
    assert 0.25 <= sleeps[0] <= 0.5 and 0.5 <= sleeps[1] <= 1.0  # 0.5·2ⁿ, halved at worst
    assert script.requests[0].headers["Authorization"] == "Bearer t0k"


def test_a_503_is_retried_honouring_retry_after_and_raised_when_it_persists() -> None:
    busy = ok({"detail": "service unavailable: the database cannot be reached",
               "code": "unavailable"}, 503, headers={"Retry-After": "2"})
    sleeps: list[float] = []
    assert client_for(Script(busy, ok(experiment_json())), sleeps).get(7).id == 7
    assert sleeps == [2.0]
    with pytest.raises(ServiceUnavailable, match="database cannot be reached"):
        client_for(Script(busy, busy, busy, busy)).get(7)


def test_unreachable_after_every_retry() -> None:
    script = Script(*[httpx.ConnectError("refused")] * 4)
    sleeps: list[float] = []
    with pytest.raises(Unreachable,
                       match=re.escape("cannot reach http://aelab.test: ConnectError")):
        client_for(script, sleeps).get(7)
    assert len(script.requests) == 4 and len(sleeps) == 3


def test_submit_keeps_its_idempotency_key_across_retries_and_makes_one_per_call() -> None:
    script = Script(httpx.ReadError("dropped after sending"), ok(experiment_json(), 201),
                    ok(experiment_json(8), 201))
    client = client_for(script)
    assert client.submit(SPEC).id == 7
    assert client.submit(SPEC).id == 8
    keys = [r.headers["Idempotency-Key"] for r in script.requests]
    assert keys[0] == keys[1] and keys[2] != keys[0] and len(keys[0]) == 36
    assert json.loads(script.requests[0].content) == SPEC
    assert client_for(Script(ok(experiment_json(), 201))).submit(
        SPEC, idempotency_key="mine").id == 7


def test_a_cancel_that_may_have_been_applied_is_not_resent() -> None:
    script = Script(httpx.ReadError("reset"))
    with pytest.raises(Unreachable, match="not retried: POST /api/v1/experiments/7/cancel"):
        client_for(script).cancel(7)
    assert len(script.requests) == 1
    # A connection that was never made is safe to retry, whatever the method.
    script = Script(httpx.ConnectError("refused"), ok(experiment_json(status="cancelled")))
    assert client_for(script).cancel(7).status == "cancelled"


def test_a_refused_spec_carries_the_api_field_errors() -> None:
    body = {"detail": [{"type": "greater_than_equal", "loc": ["body", "epochs"],
                        "msg": "Input should be greater than or equal to 1", "input": 0}]}
    with pytest.raises(InvalidRequest) as refused:
        client_for(Script(ok(body, 422))).submit({**SPEC, "epochs": 0}, dry_run=True)
    error = refused.value
    assert error.status_code == 422
    assert [(e.loc, e.type) for e in error.errors] == [(["body", "epochs"],
                                                        "greater_than_equal")]
    assert str(error) == "HTTP 422: body.epochs: Input should be greater than or equal to 1"


def test_error_statuses_raise_their_exceptions_with_the_api_detail() -> None:
    with pytest.raises(NotFoundError, match=r"^HTTP 404: experiment 9 not found$"):
        client_for(Script(ok({"detail": "experiment 9 not found", "code": "not_found"},
                             404))).get(9)
    with pytest.raises(ConflictError) as conflict:
        client_for(Script(ok({"detail": "experiment 7 is succeeded", "code": "conflict"},
                             409))).cancel(7)
    assert (conflict.value.detail, conflict.value.code) == ("experiment 7 is succeeded",
                                                            "conflict")
    failed = ok({"detail": "internal error", "code": "internal_error",
                 "request_id": "0123456789ab"}, 500)
    with pytest.raises(ApiError, match=r"^HTTP 500: internal error \(request id 0123456789ab\)$"):
        client_for(Script(failed)).get(9)
    # Not the API's answer (a proxy's page): its text is the message, nothing is invented.
    proxy = httpx.Response(502, text="<html>Bad Gateway</html>")
    with pytest.raises(ApiError) as bad_gateway:
        client_for(Script(proxy)).get(9)
    assert (bad_gateway.value.detail, bad_gateway.value.code) == ("<html>Bad Gateway</html>",
                                                                  None)


def test_a_spec_object_a_mapping_and_files_send_the_same_body(tmp_path: Path) -> None:
    (tmp_path / "spec.yaml").write_text(
        "models: [baseline]\ndatasets: [synthetic]\nepochs: 2\ndata:\n  train_limit: 256\n")
    (tmp_path / "spec.json").write_text(json.dumps(SPEC))
    spec = ExperimentSpec(models=["baseline"], datasets=["synthetic"], epochs=2,
                          data={"train_limit": 256})  # type: ignore[arg-type]
    for source in (spec, SPEC, tmp_path / "spec.yaml", str(tmp_path / "spec.json")):
        assert load_spec(source) == SPEC, source


def test_spec_files_that_cannot_be_used_are_refused_before_sending(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"missing\.yaml: No such file"):
        load_spec(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- baseline\n")
    with pytest.raises(SpecError, match="a spec is a mapping"):
        load_spec(tmp_path / "list.yaml")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(SpecError, match="not valid JSON"):
        load_spec(tmp_path / "bad.json")


def test_list_pages_through_cursors_with_the_filter_and_stops_at_the_limit() -> None:
    def item(i: int) -> dict[str, Any]:
        return {**experiment_json(i), "runs": {"total": 1, "succeeded": 1}}

    script = Script(ok({"items": [item(9), item(8)], "next": "8"}),
                    ok({"items": [item(5)], "next": None}))
    ids = [e.id for e in client_for(script).list(status="succeeded", page_size=2)]
    assert ids == [9, 8, 5]
    assert [dict(r.url.params) for r in script.requests] == [
        {"limit": "2", "status": "succeeded"},
        {"limit": "2", "status": "succeeded", "cursor": "8"}]
    script = Script(ok({"items": [item(9), item(8)], "next": "8"}))
    assert [e.id for e in client_for(script).list(limit=1, page_size=2)] == [9]
    assert len(script.requests) == 1  # no page fetched beyond the limit


def test_wait_calls_back_once_per_change_and_returns_the_ended_experiment() -> None:
    states = [experiment_json(runs=[run_json(epoch=0)]),
              experiment_json(runs=[run_json(epoch=0)]),  # nothing new: no callback
              experiment_json(runs=[run_json(epoch=1)]),
              experiment_json(status="succeeded",
                              runs=[run_json(status="succeeded", phase=None, epoch=2)])]
    seen: list[tuple[str, int]] = []
    done = client_for(Script(*[ok(s) for s in states])).wait(
        7, poll_s=0.01, on_change=lambda e: seen.append((e.status.value, e.runs[0].epoch)))
    assert done.status == "succeeded"
    assert seen == [("running", 0), ("running", 1), ("succeeded", 2)]


def test_wait_rides_out_a_server_restart_within_its_patience() -> None:
    down = [httpx.ConnectError("refused")] * 4  # one get: a try and 3 retries
    script = Script(ok(experiment_json()), *down,
                    ok(experiment_json(status="succeeded",
                                       runs=[run_json(status="succeeded", epoch=2)])))
    assert client_for(script).wait(7, poll_s=0).status == "succeeded"
    with pytest.raises(Unreachable):
        client_for(Script(ok(experiment_json()), *down)).wait(7, poll_s=0, patience_s=0)


def test_wait_times_out_leaving_the_experiment_alone() -> None:
    script = Script(*[ok(experiment_json())] * 50)
    with pytest.raises(WaitTimeout, match=r"experiment 7 still running after 0\.05 s") as late:
        Client("http://aelab.test", transport=httpx.MockTransport(script)).wait(
            7, timeout=0.05, poll_s=0.01)
    assert late.value.experiment.id == 7
    assert not [r for r in script.requests if r.method != "GET"]


def test_follow_logs_reads_from_next_offset_until_the_saved_log_is_complete() -> None:
    def log(text: str, offset: int, status: str, source: str, complete: bool) -> Any:
        return ok({"run_id": 3, "status": status, "source": source, "offset": offset,
                   "next_offset": offset + len(text), "text": text, "complete": complete})

    script = Script(log("a\n", 0, "running", "ray", False), log("", 2, "running", "ray", False),
                    log("b\n", 2, "succeeded", "saved", True))
    chunks = list(client_for(script).follow_logs(3, poll_s=0))
    assert "".join(c.text for c in chunks) == "a\nb\n" and chunks[-1].complete
    assert [r.url.params["offset"] for r in script.requests] == ["0", "2", "2"]


def _run_with(artifact_bytes: bytes, checksum: str | None = None) -> dict[str, Any]:
    return {**run_json(status="succeeded"), "experiment_id": 7, "spec": {}, "attempts": [],
            "lr_trials": [], "epochs": [], "measures": None,
            "artifacts": [{"name": "model.pt", "kind": "weights",
                           "content_type": "application/octet-stream",
                           "size": len(artifact_bytes),
                           "checksum": checksum or hashlib.sha256(artifact_bytes).hexdigest(),
                           "created_at": NOW, "url": "/api/v1/runs/1/artifacts/model.pt"}]}


def test_download_streams_to_disk_and_checks_the_sha256(tmp_path: Path) -> None:
    data = bytes(range(256)) * 1000
    script = Script(ok(_run_with(data)), httpx.Response(200, content=data))
    path = client_for(script).download(1, "model.pt", tmp_path)
    assert path == tmp_path / "model.pt" and path.read_bytes() == data
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]

    bad = Script(ok(_run_with(data, checksum="0" * 64)), httpx.Response(200, content=data))
    (tmp_path / "again").mkdir()
    with pytest.raises(ChecksumMismatch, match="differs from the listed 0000"):
        client_for(bad).download(1, "model.pt", tmp_path / "again")
    assert list((tmp_path / "again").iterdir()) == []  # nothing kept, not even a part

    with pytest.raises(NotFoundError,
                       match=re.escape("has no artifact 'x.bin' (it has: model.pt)")):
        client_for(Script(ok(_run_with(data)))).download(1, "x.bin", tmp_path)


@pytest.mark.parametrize("name", ["../escaped.txt", "/tmp/abs.txt", "sub/x.txt",
                                  "..\\win.txt", "..", ""])
def test_download_all_refuses_names_a_server_could_use_to_escape_the_folder(
        tmp_path: Path, name: str) -> None:
    data = b"payload"
    run = _run_with(data)
    run["artifacts"][0]["name"] = name
    out = tmp_path / "a" / "out"
    out.mkdir(parents=True)
    with pytest.raises(UnsafeArtifactName, match="not a plain file name"):
        client_for(Script(ok(run), httpx.Response(200, content=data))).download_all(1, out)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # nothing written anywhere


def test_results_as_rows_and_as_a_dataframe() -> None:
    table = {"experiment_id": 7, "columns": ["run_id", "model", "mse"],
             "rows": [{"run_id": 1, "model": "baseline", "mse": 0.01}]}
    assert client_for(Script(ok(table))).results(7) == table["rows"]
    frame = client_for(Script(ok(table))).results_frame(7)
    assert list(frame.columns) == ["run_id", "model", "mse"] and frame["mse"][0] == 0.01


def test_url_and_token_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AELAB_URL", "http://elsewhere.test:9000/")
    monkeypatch.setenv("AELAB_API_TOKEN", "s3cret")
    script = Script(ok(experiment_json()))
    client = Client(transport=httpx.MockTransport(script))
    client.get(7)
    assert str(script.requests[0].url) == "http://elsewhere.test:9000/api/v1/experiments/7"
    assert script.requests[0].headers["Authorization"] == "Bearer s3cret"
    assert client.ui_url(7) == "http://elsewhere.test:9000/experiments/7"
    with pytest.raises(ValueError, match="must start with http"):
        Client("localhost:8000")


def test_retry_after_is_read_as_rfc_9110_has_it_and_bounded() -> None:
    """Delta-seconds or an HTTP-date; anything else (negative, NaN, words) falls back to
    the client's own backoff, and every wait stays within 0 … max_backoff_s."""
    from datetime import UTC, datetime

    from service.client.client import retry_after_s

    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert retry_after_s("3", now) == 3.0
    assert retry_after_s("Fri, 02 Jan 2026 03:04:09 GMT", now) == 4.0
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT", now) == 0.0  # past: now
    for odd in (None, "-1", "nan", "inf", "1.5", "+3", "soon", "", "٣"):
        assert retry_after_s(odd, now) is None, odd
    sleeps: list[float] = []
    answers = [ok({"detail": "busy", "code": "unavailable"}, 503,
                  headers={"Retry-After": value}) for value in ("-1", "nan", "99999999999")]
    client_for(Script(*answers, ok(experiment_json())), sleeps).get(7)
    assert len(sleeps) == 3 and all(0 <= s <= 8.0 for s in sleeps), sleeps
