"""HTTP on every route: HEAD wherever GET is, conditional GETs where an ETag is sent
(one middleware, so a new route gets both without a line of its own)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from service.app import create_app
from service.context import context_of
from service.persistence import repository as repo
from service.persistence.db import transaction
from service.settings import Settings
from tests.utils import API, spec

SPEC = spec(epochs=2, pretrained=False)
PNG = b"\x89PNG\r\n\x1a\n" + b"not really an image" * 10


@pytest.fixture()
def client(tmp_path: Path) -> Iterator[TestClient]:
    """SQLite only: the middleware never reaches the database."""
    settings = Settings(home=tmp_path / "home", database_url=f"sqlite:///{tmp_path}/a.db",
                        start_dispatcher=False)
    with TestClient(create_app(settings)) as c:
        yield c


def _routes(routes: list[Any]) -> Iterator[Any]:
    for route in routes:  # an included router's routes, as FastAPI keeps them
        if hasattr(route, "original_router"):
            yield from _routes(route.original_router.routes)
        else:
            yield route


def _get_paths(client: TestClient, exp: int, run: int) -> list[str]:
    """Every GET route of the app, its path parameters filled in: the API's from its
    OpenAPI, the pages' (outside the schema) from the routes, and a static file."""
    schema = client.get("/openapi.json").json()["paths"]
    paths = [p for p, ops in schema.items() if "get" in ops]
    paths += [r.path for r in _routes(client.app.routes) if isinstance(r, APIRoute)
              and "GET" in r.methods and not r.include_in_schema]
    values = {"experiment_id": exp, "run_id": run, "name": "samples.png"}
    return [re.sub(r"\{(\w+)(:\w+)?\}", lambda m: str(values.get(m[1], 1)), p)
            for p in paths] + ["/static/app.css", "/openapi.json", "/docs"]


def test_head_answers_every_get_route_with_its_headers_and_no_body(client: TestClient
                                                                    ) -> None:
    exp = client.post(f"{API}/experiments", json=SPEC).json()
    run = exp["runs"][0]["id"]
    paths = _get_paths(client, exp["id"], run)
    assert "/healthz" in paths and f"{API}/runs/{run}/samples.png" in paths
    for path in paths:
        get, head = client.get(path, follow_redirects=False), \
            client.head(path, follow_redirects=False)
        assert head.status_code == get.status_code != 405, (path, head.status_code)
        assert head.content == b"", path
        # /metrics counts the requests themselves: its length moves between the two.
        live = ("content-length", "etag") if path == "/metrics" else ()
        for header in ("content-type", "content-length", "etag", "location"):
            if header not in live:
                assert head.headers.get(header) == get.headers.get(header), (path, header)


def test_if_none_match_is_a_304_where_an_etag_is_sent(client: TestClient) -> None:
    exp = client.post(f"{API}/experiments", json=SPEC).json()
    run = exp["runs"][0]["id"]
    ctx = context_of(client.app)
    stored = ctx.artifacts.put(f"run-{run}/a0", "samples.png", PNG)
    with transaction(ctx.sessions) as s:
        repo.record_artifact(s, run_id=run, name="samples.png", kind="image", uri=stored.uri,
                             content_type="image/png", size=stored.size,
                             checksum=stored.checksum)
    url = f"{API}/runs/{run}/samples.png"
    first = client.get(url)
    etag = first.headers["etag"]
    assert first.status_code == 200 and first.content == PNG
    for sent in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        for method in ("GET", "HEAD"):
            again = client.request(method, url, headers={"If-None-Match": sent})
            assert again.status_code == 304 and again.content == b"", (method, sent)
            assert again.headers["etag"] == etag
    changed = client.get(url, headers={"If-None-Match": '"other"'})
    assert changed.status_code == 200 and changed.content == PNG
