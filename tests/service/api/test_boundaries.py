"""Every bad input is a 4xx naming the field and changes nothing — on SQLite and
PostgreSQL alike — and exports cannot be forged by user text."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from service.context import context_of
from service.orchestration.ray_head import free_port
from service.persistence import repository as repo
from service.persistence.db import transaction
from service.results import FORMULA_START, csv_cell, md_text
from tests.utils import API, spec, wait_for
from workers.measures import RunMeasures

OK = spec(pretrained=False, classifier={"enabled": False})


def _stored(client: TestClient) -> int:
    return len(client.get(f"{API}/experiments", params={"limit": 200}).json()["items"])


def _refused(client: TestClient, body: object, loc: list, *, raw: bytes | None = None,
             words: tuple[str, ...] = ()) -> dict:
    """POST it as a dry run and for real: both 422, naming ``loc``; nothing stored."""
    before = _stored(client)
    for params in ({"dry_run": True}, {}):
        if raw is not None:
            r = client.post(f"{API}/experiments", params=params, content=raw,
                            headers={"Content-Type": "application/json"})
        else:
            r = client.post(f"{API}/experiments", params=params, json=body)
        assert r.status_code == 422, r.text
        errors = r.json()["detail"]
        hit = [e for e in errors if e["loc"][: len(loc)] == loc]
        assert hit, errors
        for word in words:
            assert word in hit[0]["msg"], hit[0]
    assert _stored(client) == before
    return hit[0]


@pytest.mark.parametrize("path", [
    "/experiments/{i}", "/experiments/{i}/results", "/runs/{i}", "/runs/{i}/logs",
    "/runs/{i}/samples.png", "/runs/{i}/artifacts/model.pt"])
@pytest.mark.parametrize("ident", ["9223372036854775808", "2147483648", "-1", "0",
                                   "99999999999999999999999999999999"])
def test_any_integer_id_that_names_no_row_is_404(client: TestClient, path: str,
                                                 ident: str) -> None:
    assert client.get(API + path.format(i=ident)).status_code == 404


def test_ids_that_are_not_integers_are_422_and_writes_by_huge_id_404(client: TestClient
                                                                     ) -> None:
    for ident in ("abc", "1.5", "1e3", "%00"):
        assert client.get(f"{API}/experiments/{ident}").status_code == 422, ident
    assert client.post(f"{API}/experiments/9223372036854775808/cancel").status_code == 404
    assert client.delete(f"{API}/experiments/9223372036854775808").status_code == 404
    cursor = client.get(f"{API}/experiments", params={"cursor": "999999999999999999"})
    assert cursor.status_code == 200


@pytest.mark.parametrize("raw,loc", [
    (b'{"models":["baseline"],"datasets":["synthetic"],"epochs":NaN}', ["body", "epochs"]),
    (b'{"models":["baseline"],"datasets":["synthetic"],"lr_search":{"max_lr":Infinity}}',
     ["body", "lr_search", "max_lr"]),
    (b'{"models":["baseline"],"datasets":["synthetic"],"resources":{"cpus_per_run":-Infinity}}',
     ["body", "resources", "cpus_per_run"]),
])
def test_non_finite_numbers_are_422_naming_the_field(client: TestClient, raw: bytes,
                                                     loc: list) -> None:
    error = _refused(client, None, loc, raw=raw)
    assert error["input"] in ("NaN", "Infinity", "-Infinity")  # and the 422 renders


@pytest.mark.parametrize("raw,loc", [
    (rb'{"models":["baseline"],"datasets":["synthetic"],"name":"\ud800"}', ["body", "name"]),
    (rb'{"models":["\udfff"],"datasets":["synthetic"]}', ["body", "models", 0]),
    (rb'{"models":["baseline"],"datasets":["synthetic"],"\ud800":1}', ["body"]),
])
def test_lone_surrogates_are_422_and_the_422_renders(client: TestClient, raw: bytes,
                                                     loc: list) -> None:
    # Valid JSON, no character: echoing the input back must not fail the response.
    error = _refused(client, None, loc, raw=raw)
    assert "\\ud800" in str(error) or "\\udfff" in str(error)


def test_seeds_are_bounded_to_what_the_generators_take(client: TestClient) -> None:
    _refused(client, {**OK, "seed": 18446744073709551616}, ["body", "seed"])
    _refused(client, {**OK, "seed": 2**32}, ["body", "seed"])
    _refused(client, {**OK, "seed": -1}, ["body", "seed"])
    assert client.post(f"{API}/experiments", json={**OK, "seed": 2**32 - 1}).status_code == 201


def test_data_limits_are_checked_against_the_datasets_size(client: TestClient) -> None:
    _refused(client, {**OK, "data": {"train_limit": 100000}}, ["body", "data", "train_limit"],
             words=("100000", "9000 training images of synthetic"))
    _refused(client, {**OK, "data": {"train_limit": 9001}}, ["body", "data", "train_limit"])
    _refused(client, {**OK, "data": {"train_limit": 10001, "validation": "test"}},
             ["body", "data", "train_limit"], words=("10000",))
    _refused(client, {**OK, "datasets": ["mnist"], "data": {"test_limit": 10001}},
             ["body", "data", "test_limit"], words=("10000 test images of mnist",))
    for ok in ({"train_limit": 9000}, {"train_limit": 10000, "validation": "test"},
               {"test_limit": 2000}):
        r = client.post(f"{API}/experiments", params={"dry_run": True},
                        json={**OK, "data": ok})
        assert r.status_code == 200, (ok, r.text)


def test_a_batch_needs_two_images_and_the_training_split_one_batch(client: TestClient
                                                                   ) -> None:
    _refused(client, {**OK, "models": ["resnet"], "batch_size": 1}, ["body", "batch_size"])
    _refused(client, {**OK, "data": {"train_limit": 100}, "batch_size": 128},
             ["body", "data", "train_limit"], words=("100", "batch_size 128"))
    assert client.post(f"{API}/experiments", params={"dry_run": True}, json={
        **OK, "data": {"train_limit": 128}, "batch_size": 128}).status_code == 200


@pytest.mark.parametrize("name", ["x\n# Injected heading", "a\x00b", "tab\there", "\r",
                                  "line\u2028separator"])
def test_names_with_control_characters_are_422_on_both_databases(client: TestClient,
                                                                 name: str) -> None:
    _refused(client, {**OK, "name": name}, ["body", "name"], words=("control characters",))


def test_an_idempotency_key_with_another_spec_is_422(client: TestClient) -> None:
    key = {"Idempotency-Key": "retry-7"}
    first = client.post(f"{API}/experiments", json=OK, headers=key)
    again = client.post(f"{API}/experiments", json=OK, headers=key)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    other = client.post(f"{API}/experiments", json={**OK, "epochs": 3}, headers=key)
    assert other.status_code == 422
    assert other.json()["detail"][0]["loc"] == ["header", "idempotency-key"]
    assert "different spec" in other.json()["detail"][0]["msg"]
    # A dry run never accepts what the real POST refuses; with the first spec it still is one.
    dry = client.post(f"{API}/experiments?dry_run=true", json={**OK, "epochs": 3}, headers=key)
    assert dry.status_code == 422 and dry.json()["detail"][0]["type"] == "idempotency_key_reused"
    assert [(r["model"], r["dataset"]) for r in client.post(
        f"{API}/experiments?dry_run=true", json=OK, headers=key).json()["runs"]] == [
        ("baseline", "synthetic")]
    # A default filled in by validation is the same spec: still a replay.
    same = client.post(f"{API}/experiments", json={**OK, "epochs": 15}, headers=key)
    assert same.status_code == 200 and same.json()["id"] == first.json()["id"]
    assert _stored(client) == 1
    for bad in ("", "has space", "x" * 201):
        r = client.post(f"{API}/experiments", json=OK, headers={"Idempotency-Key": bad})
        assert r.status_code == 422, bad


@pytest.mark.parametrize("cell", ["=1+2", "+SUM(A1)", "-2+3", "@cmd", "\tTAB", "\rCR",
                                  "=HYPERLINK(\"http://x\")"])
def test_csv_cells_never_start_a_formula(cell: str) -> None:
    assert csv_cell(cell) == "'" + cell
    assert cell.startswith(FORMULA_START)


def test_csv_numbers_and_plain_text_are_untouched() -> None:
    assert (csv_cell(-0.5), csv_cell(3), csv_cell("baseline"), csv_cell(None)) == \
        (-0.5, 3, "baseline", "")
    assert (csv_cell(float("inf")), csv_cell(float("-inf")), csv_cell(float("nan"))) == \
        ("Infinity", "-Infinity", "NaN")


def test_markdown_text_cannot_add_lines_columns_or_markup() -> None:
    assert md_text("a | b") == "a \\| b"
    assert md_text("x\n# Injected\r\n| forged | row |") == \
        "x # Injected  \\| forged \\| row \\|"
    assert md_text("<script>&") == "&lt;script&gt;&amp;"
    assert "\n" not in md_text("a\u2028b\u0085c")
    # A link or image a renderer would make clickable stays literal text.
    assert md_text("[l](javascript:alert(3))") == "\\[l\\](javascript:alert(3))"
    assert md_text("![x](http://t/p.png) `c` *e* pixel_shuffle") == \
        "!\\[x\\](http://t/p.png) \\`c\\` \\*e\\* pixel_shuffle"


def test_exports_escape_the_experiment_name_in_every_user_text_column(client: TestClient
                                                                      ) -> None:
    name = "=HYPERLINK(\"http://evil\") | forged"
    exp = client.post(f"{API}/experiments", json={**OK, "name": name}).json()
    text = client.get(f"{API}/experiments/{exp['id']}/results",
                      params={"format": "csv"}).text
    rows = list(csv.DictReader(io.StringIO(text)))
    text_columns = {k for k, v in rows[0].items()
                    if v and not v.replace(".", "", 1).replace("-", "", 1).isdigit()}
    assert text_columns == {"experiment", "kind", "model", "dataset", "status"}
    assert all(not row[c].startswith(FORMULA_START) for row in rows for c in text_columns)
    assert rows[0]["experiment"] == "'" + name
    md = client.get(f"{API}/experiments/{exp['id']}/results",
                    params={"format": "markdown"}).text
    assert md.splitlines()[0] == "# =HYPERLINK(\"http://evil\") \\| forged"


def test_non_finite_measures_read_the_same_in_every_format(client: TestClient) -> None:
    exp = client.post(f"{API}/experiments", json={**OK, "models": ["baseline", "resnet"]})
    run_id, missing_id = [r["id"] for r in exp.json()["runs"]]
    with transaction(context_of(client.app).sessions) as s:
        repo.record_measures(s, run_id=run_id, measures=RunMeasures(
            mse=0.0, mae=0.0, psnr=float("inf"), ssim=1.0, n_images=8,
            training_time_s=1.0, params=1, latent_dim=1000,
            compression_ratio=3.072, compression_ratio_bytes=0.768,
            classifier_accuracy=float("nan")))
    exp_id = exp.json()["id"]
    rows = {r["run_id"]: r for r in
            client.get(f"{API}/experiments/{exp_id}/results").json()["rows"]}
    assert rows[run_id]["psnr"] == "Infinity" and rows[run_id]["classifier_accuracy"] == "NaN"
    assert rows[missing_id]["psnr"] is None  # not measured: null, never "Infinity"
    detail = client.get(f"{API}/runs/{run_id}").json()
    assert detail["measures"]["psnr"] == "Infinity"
    assert detail["measures"]["classifier_accuracy"] == "NaN"
    parsed = {int(r["run_id"]): r for r in csv.DictReader(io.StringIO(client.get(
        f"{API}/experiments/{exp_id}/results", params={"format": "csv"}).text))}
    assert parsed[run_id]["psnr"] == "Infinity" and parsed[missing_id]["psnr"] == ""
    md = client.get(f"{API}/experiments/{exp_id}/results", params={"format": "markdown"}).text
    assert "| Infinity |" in md and "| NaN |" in md


# --- request size, on a real server process ---------------------------------------------

_SERVER = """
import sys, uvicorn
from pydantic import SecretStr
from service.app import create_app
from service.settings import Settings
settings = Settings(home=sys.argv[1], start_dispatcher=False,
                    api_token=SecretStr(sys.argv[3]) if sys.argv[3] else None)
uvicorn.run(create_app(settings), host="127.0.0.1", port=int(sys.argv[2]),
            log_level="warning")
"""
BIG = 64 * 1024 * 1024


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _chunks() -> object:
    chunk = b"x" * (1 << 20)
    for _ in range(BIG // len(chunk)):
        yield chunk


@pytest.mark.parametrize("token", ["", "t0ken-for-size"])
def test_a_64_mib_body_is_refused_before_it_is_read(tmp_path: Path, token: str) -> None:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", _SERVER, str(tmp_path), str(port),
                               token], env={**os.environ})
    base = f"http://127.0.0.1:{port}{API}/experiments"
    try:
        wait_for(lambda: _up(port), 60, "the server", 0.2)
        before = _rss_kib(server.pid)
        auth = {"Authorization": f"Bearer {token}"} if token else {}
        with httpx.Client(timeout=60) as http:
            sized = http.post(base, content=b"x" * BIG, headers={
                **auth, "Content-Type": "application/json"})
            chunked = http.post(base, content=_chunks(), headers={
                **auth, "Content-Type": "application/json"})
            assert "content-length" not in chunked.request.headers  # really chunked
            for r in (sized, chunked):
                assert r.status_code == 413, r.text
                assert r.json()["detail"] == "request body larger than 262144 bytes"
            if token:  # without the token: refused before a byte of the body is read
                for content in (b"x" * BIG, _chunks()):
                    r = http.post(base, content=content,
                                  headers={"Content-Type": "application/json"})
                    assert r.status_code == 401 and r.json()["detail"] == \
                        "missing bearer token"
            time.sleep(0.5)
        grown = _rss_kib(server.pid) - before
        assert grown < 16 * 1024, f"the server grew by {grown} KiB"
        assert httpx.get(base, timeout=10).json()["items"] == []  # nothing stored
    finally:
        server.terminate()
        server.wait(timeout=30)


def _up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
