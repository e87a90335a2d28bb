"""The pages answer whatever the store holds: runs without measures on a paged compare
list, unreadable gallery strips, and names carrying bidi controls."""

from __future__ import annotations

import html
import re

import pytest
from fastapi.testclient import TestClient

from service.web import pages
from tests.utils import API, spec

SPEC = spec("baseline", "pixel_shuffle", "resnet", name="stored", epochs=2, pretrained=False)


def test_compare_pages_older_through_runs_without_measures(client: TestClient,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """Ordered by a measure no run has yet, "Next page »" stands on a run without it (the
    cursor holds null): each page answers, and every run shows once."""
    monkeypatch.setattr(pages, "COMPARE_PAGE_SIZE", 1)
    runs = [r["id"] for r in client.post(f"{API}/experiments", json=SPEC).json()["runs"]]
    shown, url = [], "/compare?order_by=-mse"
    while url:
        page = client.get(url)
        assert page.status_code == 200, page.text[-500:]
        shown.append({int(i) for i in re.findall(r'href="/runs/(\d+)"', page.text)})
        found = re.search(r'<a href="([^"]+)" rel="next">', page.text)
        url = html.unescape(found.group(1)) if found else ""
    assert shown == [{r} for r in sorted(runs, reverse=True)]  # no value: newest first
