"""The web UI without a browser: pages, galleries composed from stored strips, the login
and its cookie, and the editor's form against the spec. (Browser tests: test_web_browser.)"""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pydantic import BaseModel, SecretStr

from service.access import SESSION_COOKIE, make_session, session_valid
from service.app import create_app
from service.context import context_of
from service.persistence import repository as repo
from service.persistence.db import transaction
from service.settings import Settings
from service.spec import ExperimentSpec
from service.web.auth import safe_next
from service.web.spec_form import spec_sections
from tests.utils import API, REPO, spec
from workers.store import (
    CODE_PROJECTION,
    GALLERY_INPUTS,
    GALLERY_META,
    GALLERY_RECONSTRUCTIONS,
)

SPEC = spec("baseline", "pixel_shuffle", "resnet", name="pages", epochs=2, pretrained=False)


class Tags(HTMLParser):
    """Every start tag of a page with its attributes, in order."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def find(self, tag: str, **attrs: str) -> list[dict[str, str | None]]:
        def match(a: dict[str, str | None]) -> bool:
            return all(k.rstrip("_") in a and (v is None or v in (a[k.rstrip("_")] or "").split())
                       for k, v in attrs.items())
        return [a for t, a in self.tags if t == tag and match(a)]


def pixels(data_uri: str) -> np.ndarray:
    assert data_uri.startswith("data:image/png;base64,")
    png = base64.b64decode(data_uri.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


@pytest.fixture()
def web_settings(tmp_path: Path) -> Settings:
    # Pages read through the repository functions that test_runs_list and test_api check
    # on SQLite and PostgreSQL; the page tests themselves run on SQLite.
    return Settings(home=tmp_path / "home", database_url=f"sqlite:///{tmp_path / 'web.db'}",
                    start_dispatcher=False, max_runs_per_experiment=12, max_epochs=50)


@pytest.fixture()
def web(web_settings: Settings):
    with TestClient(create_app(web_settings)) as c:
        yield c


def strip(tiles: list[np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.concatenate(tiles, axis=1)).save(buffer, format="PNG")
    return buffer.getvalue()


def store_gallery(client: TestClient, run_id: int, inputs: list[np.ndarray],
                  recon: list[np.ndarray], psnr: list[float],
                  **whole: Any) -> None:
    """Gallery artifacts as a run's evaluation stores them (see models.samples);
    ``whole``: gallery.json's facts of whole images (whole, fitted, sizes)."""
    app = client.app
    meta = json.dumps({"count": len(recon), "psnr_db": psnr, **whole}).encode()
    with transaction(context_of(app).sessions) as s:
        for name, data, ctype in ((GALLERY_INPUTS, strip(inputs), "image/png"),
                                  (GALLERY_RECONSTRUCTIONS, strip(recon), "image/png"),
                                  (GALLERY_META, meta, "application/json")):
            stored = context_of(app).artifacts.put(f"run-{run_id}/a0", name, data)
            repo.record_artifact(s, run_id=run_id, name=name, kind="gallery", uri=stored.uri,
                                 content_type=ctype, size=stored.size, checksum=stored.checksum)
        repo.set_run(s, run_id=run_id, status=repo.Status.succeeded)


def tile(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)


def test_a_gallery_is_the_stored_pixels_aligned_by_test_image(web: TestClient) -> None:
    exp = web.post(f"{API}/experiments", json={
        **SPEC, "models": ["baseline", "pixel_shuffle", "resnet", "feature_loss"]}).json()
    a, b, _queued, d = (r["id"] for r in exp["runs"])
    inputs = [tile(i) for i in range(3)]
    recon_a = [tile(10 + i) for i in range(3)]
    recon_b = [tile(20 + i) for i in range(2)]
    store_gallery(web, a, inputs, recon_a, [11.5, 12.25, 13.0])
    store_gallery(web, b, inputs[:2], recon_b, [21.0, 22.0])  # fewer samples
    store_gallery(web, d, [tile(99), *inputs[1:]], [tile(30 + i) for i in range(3)],
                  [1.0, 2.0, 3.0])  # other test images: flagged
    page = web.get(f"/experiments/{exp['id']}/gallery")
    assert page.status_code == 200
    tags = Tags(page.text)
    shown_inputs = tags.find("img", class_="input")
    assert [pixels(i["src"]).tolist() for i in shown_inputs] == [t.tolist() for t in inputs]
    assert [i["alt"] for i in shown_inputs] == [
        f"Test image {k} of Synthetic shapes" for k in range(3)]
    cells = tags.find("figure", class_="recon-cell")
    assert [(int(f["data-run-id"]), int(f["data-index"]), f["data-psnr"]) for f in cells] == [
        (a, 0, "11.5"), (a, 1, "12.25"), (a, 2, "13.0"), (b, 0, "21.0"), (b, 1, "22.0"),
        (d, 0, "1.0"), (d, 1, "2.0"), (d, 2, "3.0")]
    recon = tags.find("img", class_="recon")
    assert [pixels(i["src"]).tolist() for i in recon[:5]] == \
        [t.tolist() for t in recon_a + recon_b]
    assert recon[0]["alt"] == f"Baseline #{a}: reconstruction of test image 0, PSNR 11.5 dB"
    # Run b has no third sample, the queued run none: empty cells keep the columns aligned.
    assert len(tags.find("div", class_="empty")) == 1 + 3
    assert "no reconstructions yet (queued)" in page.text
    assert page.text.count("its test images differ from the first row") == 1
    assert '<div class="gallery" style="--n: 3" data-count="3"' in page.text


def test_pages_render_for_every_kind_of_run_without_torch(web: TestClient,
                                                          web_settings: Settings) -> None:
    exp = web.post(f"{API}/experiments", json=SPEC).json()
    first = exp["runs"][0]["id"]
    store_gallery(web, first, [tile(1)], [tile(2)], [9.0])
    store_projection(web, first, {"x": [0.0, 1.0], "y": [1.0, 0.0], "label": [3, 7],
                                  "index": [0, 1], "explained_variance_ratio": [0.6, 0.3],
                                  "codes": 2, "labelled": True})
    other = web.post(f"{API}/experiments", json={**SPEC, "datasets": ["mnist"]}).json()
    paths = ["/", f"/experiments/{exp['id']}", f"/experiments/{exp['id']}/gallery",
             f"/experiments/{exp['id']}/curves", "/compare", "/compare?order_by=-psnr",
             f"/compare/view?runs={first}&runs={first + 1}", f"/runs/{first}",
             f"/runs/{first + 1}", "/new", "/login"]
    code = f"""
import sys
from fastapi.testclient import TestClient
from service.app import create_app
from service.settings import Settings
settings = Settings(home={str(web_settings.home)!r}, database_url={web_settings.database_url!r},
                    start_dispatcher=False)
with TestClient(create_app(settings)) as c:
    for path in {paths!r}:
        r = c.get(path)
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
        assert r.headers["content-type"].startswith("text/html"), path
    mixed = c.get("/compare/view?runs={first}&runs={other['runs'][0]['id']}")
    assert mixed.status_code == 400 and "Pick runs of one dataset" in mixed.text
assert 'torch' not in sys.modules, 'a page imported torch'
"""
    subprocess.run([sys.executable, "-c", code], check=True)


def store_projection(client: TestClient, run_id: int, projection: dict) -> None:
    """A code projection as a run's evaluation stores it (models.probes.code_projection)."""
    app = client.app
    with transaction(context_of(app).sessions) as s:
        stored = context_of(app).artifacts.put(f"run-{run_id}/a0", CODE_PROJECTION,
                                               json.dumps(projection).encode())
        repo.record_artifact(s, run_id=run_id, name=CODE_PROJECTION, kind="codes",
                             uri=stored.uri, content_type="application/json",
                             size=stored.size, checksum=stored.checksum)


def scatter(html: str) -> tuple[list[dict[str, str | None]], list[str]]:
    """The run page's code scatter: its points' attributes and its axis labels."""
    match = re.search(r'<svg class="scatter".*?</svg>', html, re.S)
    assert match is not None, "no scatter on the page"
    axes = re.findall(r'<text class="axis"[^>]*>([^<]*)</text>', match.group(0))
    return Tags(match.group(0)).find("circle"), axes


def test_an_unlabelled_sets_codes_are_one_colour_and_the_page_says_so(web: TestClient) -> None:
    run_id = web.post(f"{API}/experiments", json=SPEC).json()["runs"][0]["id"]
    assert "<svg class=\"scatter\"" not in web.get(f"/runs/{run_id}").text  # none stored
    store_projection(web, run_id, {
        "x": [0.0, 1.0, 2.0], "y": [1.0, -1.0, 0.5], "label": [-1, -1, -1], "index": [0, 4, 9],
        "explained_variance_ratio": [0.5, 0.25], "codes": 12, "labelled": False})
    page = web.get(f"/runs/{run_id}").text
    points, axes = scatter(page)
    assert len(points) == 3 and len({p["fill"] for p in points}) == 1
    assert [(float(p["cx"]), float(p["cy"])) for p in points] == [
        (52.0, 12.0), (300.0, 356.0), (548.0, 98.0)]  # x and y spans fill the plot, y up
    assert axes == ["PC 1 (50.0 % of the variance)", "PC 2 (25.0 % of the variance)"]
    assert "This data set is unlabelled: every code has one colour." in page
    assert "scatter-legend" not in page and "fitted on all 12 codes; 3 drawn at random" in page


def test_a_run_page_numbers_attempts_as_the_api_and_the_ray_job_do(web: TestClient) -> None:
    """One numbering, from 0: a run re-queued once is attempt 1 on its page, in the API and
    in its Ray job's name (``-a1-``)."""
    from service.orchestration.dispatcher import job_id_for

    run_id = web.post(f"{API}/experiments", json=SPEC).json()["runs"][0]["id"]
    sessions = context_of(web.app).sessions
    for attempt in (0, 1):
        with transaction(sessions) as s:
            run = repo.get_run(s, run_id=run_id)
            repo.start_attempt(s, run_id=run_id, attempt=attempt, job_id=job_id_for(run),
                               cluster="session-1")
        if attempt == 0:
            with transaction(sessions) as s:
                assert repo.requeue(s, run_id=run_id, attempt=0, reason="its driver died")
    api = web.get(f"{API}/runs/{run_id}").json()
    assert api["attempt"] == 1 and [a["attempt"] for a in api["attempts"]] == [0, 1]
    assert f"-r{run_id}-baseline-synthetic-a1-" in api["ray_job_id"]
    facts = re.search(r"<dt>Attempt</dt><dd>([^<]*)</dd>", web.get(f"/runs/{run_id}").text)
    assert facts is not None and facts.group(1) == "1"


def test_a_run_page_plots_its_gpu_use_beside_the_losses_when_it_has_some(
        web: TestClient) -> None:
    """Epochs recorded as a GPU runner records them: the API returns the GPU fields, the
    page has the GPU chart's data and columns; a run without any says "No GPU"."""
    from models.plan import EpochMetrics

    exp = web.post(f"{API}/experiments", json=SPEC).json()
    gpu_run, cpu_run = exp["runs"][0]["id"], exp["runs"][1]["id"]
    base = ("train", 32, 1e-3, 0.1, 0.1, 0.1, 0.2, 2.0, 500.0)
    with transaction(context_of(web.app).sessions) as s:
        for run_id in (gpu_run, cpu_run):
            repo.set_run(s, run_id=run_id, status=repo.Status.running)
        repo.record_epoch(s, run_id=gpu_run, metrics=EpochMetrics(
            1, *base, gpu_utilization_percent=91.5, gpu_memory_peak_mib=2048.0))
        repo.record_epoch(s, run_id=gpu_run, metrics=EpochMetrics(
            2, *base, gpu_utilization_percent=None, gpu_memory_peak_mib=1234.4))
        repo.record_epoch(s, run_id=cpu_run, metrics=EpochMetrics(1, *base))
    api = web.get(f"{API}/runs/{gpu_run}").json()
    assert [(e["gpu_utilization_percent"], e["gpu_memory_peak_mib"]) for e in api["epochs"]
            ] == [(91.5, 2048.0), (None, 1234.4)]
    page = web.get(f"/runs/{gpu_run}").text
    assert len(Tags(page).find("div", class_="gpu-chart")) == 1
    assert len(Tags(page).find("div", class_="loss-chart")) == 1
    assert "No GPU" not in page
    curves = json.loads(re.search(r'<script type="application/json" id="curves-data">'
                                  r"(.*?)</script>", page, re.S).group(1))
    assert [(e["gpu_utilization_percent"], e["gpu_memory_peak_mib"])
            for e in curves[0]["epochs"]] == [(91.5, 2048.0), (None, 1234.4)]
    rows = re.findall(r"<tr><td>(\d+)</td>.*?</tr>", page, re.S)
    assert rows == ["1", "2"]
    cells = re.findall(r'<td class="n">([^<]*)</td></tr>', page)
    assert "GPU peak MiB" in page and cells[:2] == ["2048", "1234"]
    other = web.get(f"/runs/{cpu_run}").text
    assert "No GPU: this run's epochs trained without one" in other
    assert not Tags(other).find("div", class_="gpu-chart") and "GPU peak MiB" not in other
    assert len(Tags(other).find("div", class_="loss-chart")) == 1


def test_a_missing_page_is_a_page_and_a_missing_resource_stays_json(web: TestClient) -> None:
    page = web.get("/experiments/404")
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
    assert "experiment 404 not found" in page.text
    api = web.get(f"{API}/experiments/404")
    assert api.status_code == 404 and api.json() == {"detail": "experiment 404 not found",
                                                     "code": "not_found"}
    assert web.get("/runs/404").status_code == 404
    # Ids no database stores and ids that are not numbers: a page, never a 500.
    huge = web.get("/compare/view?runs=9223372036854775808")
    assert huge.status_code == 400 and "Pick at least one run" in huge.text
    bad = web.get("/runs/abc")
    assert bad.status_code == 422 and bad.headers["content-type"].startswith("text/html")
    assert "run_id" in bad.text
    assert web.get(f"{API}/runs/abc").json()["detail"][0]["loc"] == ["path", "run_id"]


def test_experiments_page_filters_and_keyset_pages(web: TestClient,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from service.web import pages

    monkeypatch.setattr(pages, "PAGE_SIZE", 2)
    ids = [web.post(f"{API}/experiments", json={**SPEC, "name": f"exp {k}",
                                                "models": [m]}).json()["id"]
           for k, m in enumerate(["baseline", "resnet", "baseline"])]

    def shown(html: str) -> list[int]:
        return [int(x) for x in re.findall(r'data-experiment-id="(\d+)"', html)]

    first = web.get("/").text
    assert shown(first) == [ids[2], ids[1]]
    older = re.search(r'<a href="([^"]+)" rel="next">Older', first)
    assert older is not None and older.group(1) == f"/?cursor={ids[1]}"
    assert shown(web.get(older.group(1)).text) == [ids[0]]
    assert shown(web.get("/?model=resnet").text) == [ids[1]]
    assert shown(web.get("/?model=baseline&name=EXP%200").text) == [ids[0]]
    filtered = web.get("/?model=baseline").text
    assert shown(filtered) == [ids[2], ids[0]] and 'rel="next"' not in filtered
    assert shown(web.get("/?status=succeeded").text) == []
    # Each run's progress: epoch/total and a progress bar per run.
    assert re.findall(r'data-role="epochs">([^<]+)<', first) == ["0/2", "0/2"]


def test_session_cookie_proves_the_token_and_nothing_more() -> None:
    value = make_session("tok", now=1000.0, ttl_s=60)
    assert "tok" not in value
    assert session_valid("tok", value, now=1059.0)
    assert not session_valid("tok", value, now=1061.0)  # expired
    assert not session_valid("other", value, now=1001.0)  # the token changed
    expires, mac = value.split(".")
    assert not session_valid("tok", f"{int(expires) + 1000}.{mac}", now=1001.0)  # forged
    for bad in (None, "", "x", "1.2.3", f"{expires}.", ".abc"):
        assert not session_valid("tok", bad, now=1001.0)


@pytest.mark.parametrize("target,expected", [
    ("/experiments/3?dataset=mnist", "/experiments/3?dataset=mnist"), (None, "/"),
    ("//evil.example/", "/"), ("https://evil.example/", "/"), ("/\\evil.example", "/"),
    ("relative", "/")])
def test_login_only_returns_to_this_site(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected


BEARER = {"Authorization": "Bearer t0ken"}


@contextmanager
def protected_service(settings: Settings) -> Iterator[tuple[TestClient, dict, int]]:
    """A service whose reads want the token ``t0ken`` (``BEARER``), with one experiment of
    ``SPEC`` whose run has a stored gallery: (client, the experiment, the run's id)."""
    settings.api_token = SecretStr("t0ken")
    settings.protect_reads = True
    with TestClient(create_app(settings)) as c:
        exp = c.post(f"{API}/experiments", json=SPEC, headers=BEARER).json()
        run = exp["runs"][0]["id"]
        store_gallery(c, run, [tile(1)], [tile(2)], [9.0])
        yield c, exp, run


def test_protected_reads_need_the_login_cookie_for_pages_images_and_exports(
        web_settings: Settings) -> None:
    with protected_service(web_settings) as (c, exp, run):
        guarded = [f"{API}/runs/{run}/artifacts/{GALLERY_RECONSTRUCTIONS}",
                   f"{API}/experiments/{exp['id']}/results?format=csv", f"{API}/runs"]
        page = c.get(f"/experiments/{exp['id']}?x=1", follow_redirects=False)
        assert page.status_code == 303
        assert page.headers["location"] == f"/login?next=/experiments/{exp['id']}%3Fx%3D1"
        for path in guarded:
            assert c.get(path).status_code == 401, path
        login = c.get("/login?next=/new")
        assert login.status_code == 200 and 'type="password"' in login.text
        wrong = c.post("/login", data={"token": "guess", "next": "/new"},
                       follow_redirects=False)
        assert wrong.status_code == 401 and "not this server" in wrong.text
        assert SESSION_COOKIE not in c.cookies
        ok = c.post("/login", data={"token": "t0ken", "next": "/new"}, follow_redirects=False)
        assert ok.status_code == 303 and ok.headers["location"] == "/new"
        cookie = ok.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "t0ken" not in cookie
        assert session_valid("t0ken", c.cookies[SESSION_COOKIE])
        for path in [f"/experiments/{exp['id']}", f"/experiments/{exp['id']}/gallery", "/new",
                     *guarded]:
            assert c.get(path, follow_redirects=False).status_code == 200, path
        # The cookie grants reads only: writes still need the bearer token.
        assert c.post(f"{API}/experiments", json=SPEC).status_code == 401
        assert c.post(f"{API}/experiments", json=SPEC, headers=BEARER).status_code == 201
        # A tampered cookie is no cookie.
        real = c.cookies[SESSION_COOKIE]  # its last character changed, whatever it was
        c.cookies.set(SESSION_COOKIE, real[:-1] + ("1" if real.endswith("0") else "0"))
        assert c.get("/", follow_redirects=False).status_code == 303
        assert c.get(guarded[0]).status_code == 401
        # Scripts and curl may send the bearer header to pages as well.
        assert c.get("/", headers=BEARER, follow_redirects=False).status_code == 200
        c.post("/login", data={"token": "t0ken"})
        assert c.get("/").status_code == 200
        out = c.post("/logout", follow_redirects=False)
        assert out.status_code == 303 and 'aelab_session=""' in out.headers["set-cookie"]


def test_open_reads_need_no_login(web: TestClient) -> None:
    r = web.get("/login?next=/compare", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/compare"
    assert "Log out" not in web.get("/").text


def _spec_paths(model: type[BaseModel], prefix: str = "") -> set[str]:
    paths = set()
    for name, info in model.model_fields.items():
        kind = info.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            paths |= _spec_paths(kind, f"{prefix}{name}.")
        else:
            paths.add(prefix + name)
    return paths


def test_the_editor_has_one_input_per_spec_field(web: TestClient) -> None:
    form = {f.path for s in spec_sections() for f in s.fields}
    assert form == _spec_paths(ExperimentSpec)
    assert "gallery_samples" in form and "lr_search.min_lr" in form
    tags = Tags(web.get("/new").text)
    inputs = {a["data-path"] for t, a in tags.tags if a.get("data-path")}
    assert inputs == form
    errors = {a["id"] for t, a in tags.tags if (a.get("id") or "").startswith("err:")}
    assert errors == {f"err:{p}" for p in form} | {"err:", "err:lr_search", "err:data",
                                                   "err:resources", "err:classifier",
                                                   "err:tolerance", "err:compression",
                                                   "err:evaluation"}
    by_path = {f.path: f for s in spec_sections() for f in s.fields}
    assert by_path["lr_search.min_lr"].hint == "above 0, below 10"
    assert by_path["data.train_limit"].hint == "at least 16; empty: none (the default)"
    assert [o.label for o in by_path["models"].options][:2] == ["Baseline", "Pixel Shuffle"]
    assert by_path["lambdas"].kind == "numbers" and by_path["lambdas"].nullable
    assert by_path["compression.bits"].numeric and by_path["compression.bits"].default == 8
    # list defaults are in the form (a default factory would leave the codecs unticked,
    # and an empty list box would send null)
    assert by_path["compression.codecs"].default == ["jpeg", "webp"]
    assert (by_path["evaluation.sizes"].default, by_path["evaluation.sizes"].nullable) == (
        [], False)


def _as_the_editor_sends(field: Any, value: Any) -> Any:
    """What editor.js's readValue sends for an input showing ``value`` (fill's rendering)."""
    if field.kind in ("choices", "bool", "choice"):
        return value
    shown = "" if value is None else (json.dumps(value) if field.kind == "json" else
                                      ", ".join(map(str, value)) if isinstance(value, list)
                                      else str(value))
    if field.kind == "text":
        return shown
    if field.kind == "numbers":
        return ([float(t) for t in re.split(r"[\s,;]+", shown) if t] if shown else
                None if field.nullable else [])
    if shown == "":
        return None
    return json.loads(shown) if field.kind == "json" else float(shown)


def test_the_editors_defaults_as_sent_are_a_valid_spec() -> None:
    """Every input left at its default sends a value the spec takes: a union or object
    field (``search``) shown as a text box would send "" and make every dry run a 422."""
    body: dict[str, Any] = {}
    for section in spec_sections():
        for f in section.fields:
            *parents, leaf = f.path.split(".")
            node = body
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = _as_the_editor_sends(f, f.default)
    body.update(models=["baseline"], datasets=["synthetic"])
    ExperimentSpec.model_validate(body)


def test_the_editors_dataset_choices_are_read_at_each_request(web: TestClient,
                                                               web_settings: Settings
                                                               ) -> None:
    """A folder placed while the server runs is a choice on the next /new, with its
    images counted; the built-in photos are one too."""
    from tests.utils import image_folder

    def choices() -> dict[str, str]:
        html = web.get("/new").text
        group = html[html.index('id="f-datasets"'):]
        group = group[:group.index("</div>")]
        return dict(re.findall(r'<input type="checkbox" value="([^"]+)"> ([^<]+)</label>',
                               group))

    assert choices()["photos"] == "Photographs (scikit-image)" and "later" not in choices()
    image_folder(Path(web_settings.datasets_path), "later", train=3, test=1)
    assert choices()["later"] == "later (folder, 6 + 2 images)"


def test_static_assets_ship_in_the_package_with_uplots_licence(web: TestClient) -> None:
    from service.web.render import static_url

    for path in ("app.css", "app.js", "gallery.js", "curves.js", "editor.js",
                 "vendor/uplot/uPlot.iife.min.js", "vendor/uplot/uPlot.min.css"):
        url = static_url(path)
        assert re.fullmatch(rf"/static/{re.escape(path)}\?v=[0-9a-f]{{10}}", url)
        assert web.get(url).status_code == 200
    licence = (REPO / "service/web/static/vendor/uplot/LICENSE").read_text()
    assert "Leon Sorokin" in licence
    for path in ("/", "/new", "/compare"):  # no asset from another origin: works offline
        assert not re.search(r'<(script|link|img)[^>]+(src|href)="(https?:)?//',
                             web.get(path).text), path


def test_every_template_and_asset_ships_in_the_wheel() -> None:
    """pip install . (the Docker image) copies only what package-data names."""
    import fnmatch
    import tomllib

    root = REPO
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["service"]
    web = root / "service" / "web"
    files = [p.relative_to(root / "service").as_posix()
             for folder in ("templates", "static") for p in (web / folder).rglob("*")
             if p.is_file()]
    assert len(files) > 20
    unshipped = [f for f in files if not any(fnmatch.fnmatch(f, g) for g in globs)]
    assert unshipped == []


def test_whole_images_are_shown_at_their_own_aspect_ratio(web: TestClient) -> None:
    """Whole images are stored fitted into 256-px squares at the top left (black
    beyond): the page cuts each to its fitted size, so no black margin is shown."""
    exp = web.post(f"{API}/experiments", json={**SPEC, "models": ["baseline"]}).json()
    (run_id,) = (r["id"] for r in exp["runs"])
    rng = np.random.default_rng(3)
    fitted = [[120, 200], [256, 96]]  # landscape, portrait (H, W)

    def boxed(k: int) -> np.ndarray:
        square = np.zeros((256, 256, 3), dtype=np.uint8)
        h, w = fitted[k]
        square[:h, :w] = rng.integers(1, 256, (h, w, 3), dtype=np.uint8)
        return square

    inputs, recon = [boxed(0), boxed(1)], [boxed(0), boxed(1)]
    store_gallery(web, run_id, inputs, recon, [20.0, 21.0], whole=True, fitted=fitted,
                  sizes=[[120, 200], [640, 240]])
    tags = Tags(web.get(f"/experiments/{exp['id']}/gallery").text)
    (gallery,) = tags.find("div", class_="gallery")
    assert "whole" in gallery["class"].split() and gallery["data-tile"] == "256"
    for kind, stored in (("input", inputs), ("recon", recon)):
        shown = tags.find("img", class_=kind)
        assert [(int(i["width"]), int(i["height"])) for i in shown] == [(200, 120), (96, 256)]
        for img, square, (h, w) in zip(shown, stored, fitted, strict=True):
            assert pixels(img["src"]).tolist() == square[:h, :w].tolist()
    heat = tags.find("img", class_="heat")
    assert [(int(i["width"]), int(i["height"])) for i in heat] == [(200, 120), (96, 256)]


def test_tiles_are_lossless_pngs() -> None:
    from service.web.gallery import cut_tiles, png_rgb

    rng = np.random.default_rng(7)
    for shape in ((32, 32, 3), (1, 1, 3), (5, 9, 3)):
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        decoded = Image.open(io.BytesIO(png_rgb(image)))
        assert decoded.mode == "RGB" and np.array_equal(np.asarray(decoded), image)
    tiles = [tile(k) for k in range(4)]
    assert [pixels(uri).tolist() for uri in cut_tiles(strip(tiles))] == \
        [t.tolist() for t in tiles]
    with pytest.raises(ValueError, match="not a gallery strip"):
        cut_tiles(strip([np.zeros((32, 40, 3), dtype=np.uint8)]))


def test_login_is_throttled_logout_ends_the_session_and_protected_answers_are_not_stored(
        web_settings: Settings) -> None:
    """Wrong tokens: 5 a minute per client, then 429 with Retry-After (the right token
    too, until the wait is over). Logout ends the session on the server: a copy of the
    cookie taken before stops working. Protected pages, exports and weights say
    Cache-Control no-store (private with an ETag); static assets stay cacheable."""
    with protected_service(web_settings) as (c, exp, run):
        assert c.post("/login", data={"token": "t0ken"}, follow_redirects=False
                      ).status_code == 303
        stolen = c.cookies[SESSION_COOKIE]
        for path in (f"/experiments/{exp['id']}", f"/runs/{run}",
                     f"{API}/experiments/{exp['id']}/results?format=csv",
                     f"{API}/runs/{run}"):
            answer = c.get(path)
            assert answer.status_code == 200 and answer.headers["cache-control"] == \
                "no-store", path
        weights = c.get(f"{API}/runs/{run}/artifacts/{GALLERY_RECONSTRUCTIONS}")
        assert "private" in weights.headers["cache-control"]
        assert "no-store" not in c.get("/static/app.css").headers.get("cache-control", "")
        assert c.post("/logout", follow_redirects=False).status_code == 303
        c.cookies.clear()
        c.cookies.set(SESSION_COOKIE, stolen)
        assert c.get("/", follow_redirects=False).status_code == 303  # to the login page
        assert c.get(f"{API}/runs/{run}").status_code == 401
        # The same session spelt another way ("0" before its expiry) stays ended.
        c.cookies.set(SESSION_COOKIE, "0" + stolen)
        assert c.get(f"{API}/runs/{run}").status_code == 401
        # Made-up cookies are not remembered, so they cannot push real logouts out.
        ended = context_of(c.app).logins
        before = len(ended._ended)
        for i in range(3):
            c.cookies.set(SESSION_COOKIE, f"99999999999{i}.junk")
            c.post("/logout", follow_redirects=False)
        assert len(ended._ended) == before and ended.ended(stolen)

        codes = [c.post("/login", data={"token": f"guess{i}"}).status_code for i in range(7)]
        assert codes == [401] * 5 + [429] * 2
        refused = c.post("/login", data={"token": "t0ken"}, follow_redirects=False)
        assert refused.status_code == 429 and 1 <= int(refused.headers["retry-after"]) <= 60


def test_rows_of_one_model_say_what_tells_them_apart(web: TestClient) -> None:
    """Two λ × two seeds of factorized_prior on one dataset: the gallery's rows, its tiles'
    labels, the curves, the compare and experiment pages' run rows and the aggregated
    table each name λ and seed, so no two runs read alike."""
    body = {**spec("factorized_prior", name="rd", epochs=1, pretrained=False),
            "lambdas": [0.01, 0.1], "seeds": [0, 1]}
    exp = web.post(f"{API}/experiments", json=body).json()
    runs = [r["id"] for r in exp["runs"]]
    for r in runs:
        store_gallery(web, r, [tile(0)], [tile(r)], [20.0])
    expected = ["λ=0.01 · seed 0", "λ=0.01 · seed 1", "λ=0.1 · seed 0", "λ=0.1 · seed 1"]
    gallery = web.get(f"/compare/view?{'&'.join(f'runs={r}' for r in runs)}").text
    shown = re.findall(r'<span class="detail" data-role="detail">([^<]*)</span>', gallery)
    assert shown == expected
    alts = [t["alt"] for t in Tags(gallery).find("img", class_="recon")]
    assert alts == [f"Factorized Prior {d} #{r}: reconstruction of test image 0, PSNR 20.0 dB"
                    for d, r in zip(expected, runs, strict=True)]
    curves = json.loads(re.search(r'<script type="application/json" id="curves-data">(.*?)'
                                  r'</script>', gallery, re.S).group(1))
    assert [c["label"] for c in curves] == [f"Factorized Prior {d} #{r}"
                                            for d, r in zip(expected, runs, strict=True)]
    for page in (f"/compare?experiment={exp['id']}&order_by=id", f"/experiments/{exp['id']}"):
        text = web.get(page).text
        assert re.findall(r'data-role="detail">([^<]*)<', text) == expected, page
    aggregated = text.split('class="study aggregated"')[1].split("</table>")[0]
    assert re.findall(r'<th scope="row">([^<]*)</th>', aggregated) == [
        "Factorized Prior λ=0.01", "Factorized Prior λ=0.1"]


def _record(client: TestClient, run_id: int, **measures: Any) -> None:
    """Measures stored for a run as its evaluation records them (the required ones made
    up), ``measures`` on top."""
    from workers.measures import RunMeasures

    required = {"mae": 0.05, "mse": 0.004, "psnr": 24.0, "ssim": 0.7, "n_images": 64,
                "training_time_s": 2.0, "params": 10, "latent_dim": 16,
                "compression_ratio": 192.0, "compression_ratio_bytes": 48.0}
    with transaction(context_of(client.app).sessions) as s:
        repo.record_measures(s, run_id=run_id, measures=RunMeasures(**{**required, **measures}))


def test_a_labelled_sets_codes_are_named_by_their_dataset_classes(web: TestClient) -> None:
    """The legend says which class a colour is by the dataset's class names (synthetic's
    shapes), not by the integer the codes were labelled with."""
    run_id = web.post(f"{API}/experiments", json=SPEC).json()["runs"][0]["id"]
    store_projection(web, run_id, {
        "x": [0.0, 1.0, 2.0, 3.0], "y": [1.0, -1.0, 0.5, 0.0], "label": [0, 3, 8, 3],
        "index": [0, 1, 2, 3], "explained_variance_ratio": [0.5, 0.25], "codes": 4,
        "labelled": True})
    page = web.get(f"/runs/{run_id}").text
    legend = re.search(r'<ul class="scatter-legend">(.*?)</ul>', page, re.S)
    assert legend is not None
    names = [n.strip() for n in re.findall(r"</svg>([^<]*)</li>", legend.group(1))]
    assert names == ["disc", "ring", "diamond"]
    assert "class 0" not in page


def test_a_run_page_says_why_a_measure_or_the_code_picture_is_missing(
        web: TestClient) -> None:
    """A null measure carries the reason it could not be measured (the spec's classifier
    off, 32-px images for MS-SSIM); where the page has no code picture it says why."""
    exp = web.post(f"{API}/experiments", json={**SPEC, "models": ["baseline"],
                                                "classifier": {"enabled": False}}).json()
    run_id = exp["runs"][0]["id"]
    page = web.get(f"/runs/{run_id}").text
    assert "No picture of the codes yet: the run has not been evaluated." in page
    _record(web, run_id)
    page = web.get(f"/runs/{run_id}").text
    why = dict(re.findall(r'<dt>([^<]*)</dt><dd class="mono">–<span class="why">([^<]*)'
                          r"</span></dd>", page))
    assert why["Classifier accuracy"] == (
        "not measured: the spec trains no reference classifier (classifier.enabled is "
        "false)")
    assert why["MS-SSIM"].startswith(
        "not measured: MS-SSIM&#39;s 5 scales need images of at least 176 px a side")
    assert "No picture of the codes: the run was evaluated before the projection of its " \
           "codes was stored." in page
    _record(web, run_id, n_images=1)
    assert "No picture of the codes: 1 test image, and a plane needs at least 2 codes " \
           "(data.test_limit)." in web.get(f"/runs/{run_id}").text
    _record(web, run_id, latent_dim=1)
    assert "No picture of the codes: its codes have 1 value each, and a plane needs 2." \
        in web.get(f"/runs/{run_id}").text
    tiles = web.post(f"{API}/experiments", json={
        **SPEC, "models": ["baseline"], "data": {"crop": 16}}).json()["runs"][0]["id"]
    _record(web, tiles)
    assert "No picture of the codes: its images are evaluated whole, as tiles of " \
           "data.crop (16 px): there is no one code per image to probe." \
        in web.get(f"/runs/{tiles}").text
