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


def test_names_stored_with_bidi_controls_are_shown_neutralised(client: TestClient) -> None:
    """A name stored before names refused format controls: every page, CSV and Markdown
    shows its U+202E as U+FFFD, never raw (it would reorder the title and the rows)."""
    from service.context import context_of
    from service.persistence.db import transaction
    from service.persistence.tables import Experiment

    exp = client.post(f"{API}/experiments", json=SPEC).json()
    stored = "invoice\u202egnp.exe"
    with transaction(context_of(client.app).sessions) as s:
        s.get(Experiment, exp["id"]).name = stored
    shown = "invoice\ufffdgnp.exe"
    run = exp["runs"][0]["id"]
    for url in ("/", f"/experiments/{exp['id']}", f"/runs/{run}", "/compare",
                f"/experiments/{exp['id']}/gallery",
                f"{API}/experiments/{exp['id']}/results?format=csv",
                f"{API}/experiments/{exp['id']}/results?format=markdown"):
        page = client.get(url)
        assert page.status_code == 200, (url, page.status_code)
        assert "\u202e" not in page.text, url
        assert shown in page.text or html.escape(shown) in page.text, url
    # The API's JSON is data: it gives the stored name as it is.
    assert client.get(f"{API}/experiments/{exp['id']}").json()["name"] == stored
