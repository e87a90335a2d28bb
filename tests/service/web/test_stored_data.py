"""The pages answer whatever the store holds: runs without measures on a paged compare
list, unreadable gallery strips, and names carrying bidi controls."""

from __future__ import annotations

import html
import re
import struct
import zlib

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


def _png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width``×``height`` (8-bit RGB), with a few bytes of
    data: opening it promises an image far larger than the file."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + \
        chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_unreadable_gallery_strips_are_said_so_on_every_page(client: TestClient) -> None:
    """A strip whose header declares a 100000×100000 image (a decompression bomb), and a
    truncated one: the run, gallery and compare pages answer, saying the images cannot
    be read (never that none are stored)."""
    from service.context import context_of
    from service.persistence import repository as repo
    from service.persistence.db import transaction
    from workers.store import GALLERY_INPUTS, GALLERY_META, GALLERY_RECONSTRUCTIONS

    exp = client.post(f"{API}/experiments", json=SPEC).json()
    bomb_run, cut_run = exp["runs"][0]["id"], exp["runs"][1]["id"]
    good = _png_declaring(32, 32)
    ctx = context_of(client.app)
    with transaction(ctx.sessions) as s:
        for run, strip in ((bomb_run, _png_declaring(100_000, 100_000)),
                           (cut_run, good[:40])):
            for name, data in ((GALLERY_INPUTS, strip), (GALLERY_RECONSTRUCTIONS, strip),
                               (GALLERY_META, b'{"count": 1, "psnr_db": [9.0]}')):
                stored = ctx.artifacts.put(f"run-{run}/a0", name, data)
                repo.record_artifact(s, run_id=run, name=name, kind="gallery",
                                     uri=stored.uri, content_type="image/png",
                                     size=stored.size, checksum=stored.checksum)
            repo.set_run(s, run_id=run, status=repo.Status.succeeded)
    for url in (f"/runs/{bomb_run}", f"/runs/{cut_run}", f"/experiments/{exp['id']}/gallery",
                f"/compare/view?runs={bomb_run}&runs={cut_run}"):
        page = client.get(url)
        assert page.status_code == 200, (url, page.status_code)
        assert "cannot be read" in page.text, url
        assert "No reconstructions are stored yet" not in page.text, url
