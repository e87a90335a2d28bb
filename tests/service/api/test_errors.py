"""Every error the API answers is one of its two documented shapes, and every page route
answers a page: the OpenAPI's every operation is called with a missing token, a bad id and
a bad body, and each answer is checked against what the OpenAPI documents for it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from service.app import create_app
from service.client.schemas import ERROR_CODES, ErrorOut, ValidationErrorOut
from service.persistence import repository as repo
from service.settings import Settings

TOKEN = "errors-t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
OPEN = ("/healthz", "/readyz")  # answer without the token, by design (probes)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """An empty service whose reads and writes need the token (no id names a row)."""
    settings = Settings(home=tmp_path_factory.mktemp("errors"), start_dispatcher=False,
                        api_token=SecretStr(TOKEN), protect_reads=True)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def operations(api: TestClient) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path template, operation) of every operation the OpenAPI documents."""
    found = [(method.upper(), path, op) for path, item in api.app.openapi()["paths"].items()
             for method, op in item.items()]
    assert len(found) == 16  # a route added later is walked too; this says how many now
    return found


def url(path: str, value: str) -> str:
    """``path`` with every integer id ``value`` and every artifact name ``model.pt``."""
    return re.sub(r"\{(\w+)\}", lambda m: "model.pt" if m[1] == "name" else value, path)


def assert_documented(response: httpx.Response, method: str, path: str,
                      op: dict[str, Any]) -> None:
    """The answer's status is one the operation documents, with that status's schema,
    and its body is that shape exactly: a 422's field list, else detail + code."""
    status = response.status_code
    where = f"{method} {path} → {status}: {response.text[:300]}"
    assert str(status) in op["responses"], where
    documented = op["responses"][str(status)]["content"]["application/json"]["schema"]
    assert response.headers["content-type"] == "application/json", where
    body = response.json()
    if status == 422:
        assert documented == {"$ref": "#/components/schemas/HTTPValidationError"}, where
        assert list(body) == ["detail"] and body["detail"], where
        ValidationErrorOut.model_validate(body)
        assert all({"loc", "msg", "type"} <= set(e) for e in body["detail"]), where
    else:
        assert documented == {"$ref": "#/components/schemas/ErrorOut"}, where
        assert set(body) <= {"detail", "code", "request_id"}, where
        error = ErrorOut.model_validate(body)
        assert error.code == ERROR_CODES[status] and error.detail, where
        assert (error.request_id is not None) == (status == 500), where


def test_without_the_token_every_operation_but_the_probes_is_a_documented_401(
        api: TestClient) -> None:
    for method, path, op in operations(api):
        r = api.request(method, url(path, "1"), json={} if "requestBody" in op else None)
        if path in OPEN:
            assert r.status_code == 200, (path, r.text)
            continue
        assert r.status_code == 401, (method, path, r.text)
        assert_documented(r, method, path, op)
        assert r.json() == {"detail": "missing bearer token", "code": "unauthorized"}
        assert r.headers["www-authenticate"] == "Bearer"
        wrong = api.request(method, url(path, "1"), headers={"Authorization": "Bearer no"})
        assert wrong.status_code == 403
        assert_documented(wrong, method, path, op)


def test_a_bad_id_is_a_documented_422_and_an_id_naming_no_row_a_documented_404(
        api: TestClient) -> None:
    with_ids = [(m, p, op) for m, p, op in operations(api) if "{" in p]
    assert len(with_ids) == 9
    for method, path, op in with_ids:
        for ident, status in (("abc", 422), ("1.5", 422), ("1", 404),
                              ("9223372036854775808", 404)):
            r = api.request(method, url(path, ident), headers=AUTH)
            assert r.status_code == status, (method, path, ident, r.text)
            assert_documented(r, method, path, op)
            if status == 422:
                assert r.json()["detail"][0]["loc"][0] == "path"


def test_a_bad_body_is_a_documented_400_413_or_422(api: TestClient) -> None:
    json_type = {**AUTH, "Content-Type": "application/json"}
    writes = [(m, p, op) for m, p, op in operations(api) if m in ("POST", "DELETE")]
    assert len(writes) == 3
    for method, path, op in writes:
        too_big = api.request(method, url(path, "1"), content=b"x" * (256 * 1024 + 1),
                              headers=json_type)
        assert too_big.status_code == 413, (method, path)
        assert_documented(too_big, method, path, op)
        if "requestBody" not in op:
            continue
        for content, status in ((b'{"models": [', 422), (b'{"name": "\xff"}', 400),
                                (b'{"models": "baseline"}', 422), (b"[]", 422)):
            r = api.request(method, url(path, "1"), content=content, headers=json_type)
            assert r.status_code == status, (method, path, content, r.text)
            assert_documented(r, method, path, op)
            if status == 422:
                assert r.json()["detail"][0]["loc"][0] == "body"


def test_an_unexpected_error_is_a_documented_500_with_the_id_of_its_log_line(
        api: TestClient, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(repo, "list_experiments", broken)
    r = api.get("/api/v1/experiments", headers=AUTH)
    assert r.status_code == 500
    body = r.json()
    assert set(body) == {"detail", "code", "request_id"}
    assert (body["detail"], body["code"]) == ("internal error", "internal_error")
    assert re.fullmatch(r"[0-9a-f]{12}", body["request_id"])
    assert f"unhandled error {body['request_id']} on GET /api/v1/experiments" in caplog.text


def test_what_the_openapi_cannot_list_answers_the_same_shape(api: TestClient) -> None:
    unknown = api.get("/api/v1/nothing-here", headers=AUTH)
    assert (unknown.status_code, unknown.json()) == (404, {"detail": "Not Found",
                                                           "code": "not_found"})
    wrong_method = api.put("/api/v1/experiments", headers=AUTH)
    assert wrong_method.status_code == 405
    assert wrong_method.json() == {"detail": "Method Not Allowed", "code": "method_not_allowed"}
    assert "POST" in wrong_method.headers["allow"]  # the exception's headers are kept


def test_page_routes_answer_pages_for_the_same_failures(api: TestClient,
                                                        tmp_path: Path) -> None:
    def page(r: httpx.Response, status: int, text: str) -> None:
        assert r.status_code == status, r.text[:300]
        assert r.headers["content-type"].startswith("text/html")
        assert text in r.text

    # Reads are protected here: a page without the token or its cookie goes to the login.
    login = api.get("/experiments/1", follow_redirects=False)
    assert (login.status_code, login.headers["location"]) == (303,
                                                              "/login?next=/experiments/1")
    page(api.get("/experiments/1", headers=AUTH), 404, "experiment 1 not found")
    page(api.get("/runs/abc", headers=AUTH), 422, "run_id: Input should be a valid integer")
    page(api.get("/nothing-here", headers=AUTH), 404, "Not Found")
    page(api.post("/login", content=b"x" * (256 * 1024 + 1)), 413,
         "request body larger than 262144 bytes")
