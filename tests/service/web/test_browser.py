"""The web UI in a real headless Chromium (Debian's, driven by Playwright) against a real
server holding real small runs on offline data.

Three tiny runs on the synthetic dataset are executed in-process (the worker pipeline and
the DB store, no Ray): two variants of one experiment (LR range test) and one of another
(fixed LR). A uvicorn server in a thread serves them; every test saves screenshots at
1366×768 and 390×844 under tests/artifacts/ and fails on any console error.
"""

from __future__ import annotations

import base64
import io
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from service.context import context_of
from tests.utils import API, CPU, REPO, SMALL_CLASSIFIER, execute_runs

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "tests" / "artifacts"  # the screenshots (README)
SIZES = ((1366, 768), (390, 844))
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run"]
DASHBOARD = "http://ray-head.example:8265"
TOKEN = "browser-t0ken"

try:
    from playwright.sync_api import Browser, Page, sync_playwright
except ImportError:  # pragma: no cover - the dev extra installs it
    sync_playwright = None  # type: ignore[assignment]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(sync_playwright is None, reason="playwright is not installed "
                       "(pip install -e '.[dev]')"),
    pytest.mark.skipif(not CHROMIUM.is_file(), reason="Debian's chromium is not installed at "
                       "/usr/bin/chromium (apt-get install chromium; .ci/run does it); "
                       "browser tests never download a browser"),
]

TINY = {"datasets": ["synthetic"], "epochs": 2, "batch_size": 32, "pretrained": False,
        "gallery_samples": 8, "data": {"train_limit": 256, "test_limit": 64},
        "resources": CPU, "classifier": SMALL_CLASSIFIER}


@dataclass
class Server:
    base: str
    app: Any
    server: Any
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(settings: Any) -> Server:
    """The app on uvicorn in a thread (its lifespan included), on a free port."""
    import uvicorn

    from service.app import create_app

    app = create_app(settings)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    return Server(f"http://127.0.0.1:{port}", app, server, thread)


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """A server holding two experiments with three real, tiny, evaluated runs."""
    from service.persistence import repository as repo
    from service.persistence.db import transaction
    from service.settings import Settings

    home = tmp_path_factory.mktemp("ui-home")
    settings = Settings(home=home, database_url=f"sqlite:///{home / 'ui.db'}",
                        start_dispatcher=False, public_dashboard_url=DASHBOARD)
    server = serve(settings)
    try:
        with httpx.Client(base_url=server.base, timeout=30) as http:
            a = http.post(f"{API}/experiments", json={
                **TINY, "name": "range-tested pair", "models": ["baseline", "pixel_shuffle"],
                "lr_search": {"method": "range_test", "range_test_steps": 20}}).json()
            b = http.post(f"{API}/experiments", json={
                **TINY, "name": "fixed-LR baseline", "models": ["baseline"],
                "lr_search": {"method": "fixed"}}).json()
            runner = SimpleNamespace(app=server.app)
            assert execute_runs(runner, a) == [True, True]
            assert execute_runs(runner, b) == [True]
            runs = [r["id"] for r in a["runs"] + b["runs"]]
            with transaction(context_of(server.app).sessions) as s:  # as the dispatcher records
                for run_id in runs:
                    repo.set_run(s, run_id=run_id, ray_job_id=f"aelab-job-{run_id}")
            yield SimpleNamespace(base=server.base, http=http, app=server.app, a=a, b=b,
                                  runs=runs, settings=settings)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module", autouse=True)
def artifacts_folder() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


class Tab:
    """A page at laptop width that records console errors and takes both screenshots."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))

    def open(self, url: str) -> Page:
        self.page.goto(url)
        self.page.wait_for_load_state("networkidle")
        return self.page

    def shoot(self, name: str) -> None:
        """Full-page screenshots at 1366×768 and 390×844; back to laptop width after."""
        for width, height in SIZES:
            self.page.set_viewport_size({"width": width, "height": height})
            self.page.wait_for_timeout(250)  # charts re-size on a debounced resize
            self.page.screenshot(path=ARTIFACTS / f"{name}-{width}x{height}.png",
                                 full_page=True)
        self.page.set_viewport_size({"width": SIZES[0][0], "height": SIZES[0][1]})

    def no_horizontal_scroll(self) -> bool:
        return self.page.evaluate(
            "document.documentElement.scrollWidth <= document.documentElement.clientWidth")


@contextmanager
def tab(browser: Browser, *, allowed: tuple[str, ...] = ()) -> Iterator[Tab]:
    context = browser.new_context(viewport={"width": SIZES[0][0], "height": SIZES[0][1]})
    try:
        t = Tab(context.new_page())
        yield t
        unexpected = [e for e in t.errors if e not in allowed]
        assert unexpected == [], f"console errors: {unexpected}"
    finally:
        context.close()


def png_pixels(data_uri: str) -> np.ndarray:
    assert data_uri.startswith("data:image/png;base64,"), data_uri[:40]
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_uri.split(",", 1)[1])))
                      .convert("RGB"))


# --- every page ----------------------------------------------------------------------------


def test_every_page_loads_without_console_errors_at_laptop_and_phone_width(
        ui: SimpleNamespace, browser: Browser) -> None:
    a, r = ui.a["id"], ui.runs
    pages = {"experiments": "/", "experiment": f"/experiments/{a}",
             "gallery": f"/experiments/{a}/gallery", "curves": f"/experiments/{a}/curves",
             "compare": "/compare?dataset=synthetic&order_by=mse",
             "compare-view": "/compare/view?" + "&".join(f"runs={i}" for i in r),
             "run": f"/runs/{r[0]}", "new": "/new"}
    with tab(browser) as t:
        for name, path in pages.items():
            page = t.open(ui.base + path)
            assert page.title().endswith("· aelab"), name
            missing_alt = page.eval_on_selector_all(
                "img", "els => els.filter(e => !(e.getAttribute('alt') || '').trim()).length")
            assert missing_alt == 0, f"{name}: images without alt text"
            t.shoot(f"page-{name}")
            page.set_viewport_size({"width": 390, "height": 844})
            page.wait_for_timeout(250)
            assert t.no_horizontal_scroll(), f"{name} scrolls sideways at phone width"
            page.set_viewport_size({"width": 1366, "height": 768})
            assert t.errors == [], f"{name}: {t.errors}"


def test_experiments_page_shows_live_progress_and_links_each_run_to_its_ray_job(
        ui: SimpleNamespace, browser: Browser) -> None:
    from service.persistence import repository as repo
    from service.persistence.db import transaction

    queued = ui.http.post(f"{API}/experiments", json={
        **TINY, "name": "waiting", "models": ["resnet"], "lr_search": {"method": "fixed"}}
    ).json()
    run_id = queued["runs"][0]["id"]
    try:
        with tab(browser) as t:
            page = t.open(ui.base + "/")
            done = page.locator(f'.run[data-run-id="{ui.runs[0]}"] [data-role=ray]')
            assert done.get_attribute("href") == f"{DASHBOARD}/#/jobs/aelab-job-{ui.runs[0]}"
            row = page.locator(f'.run[data-run-id="{run_id}"]')
            assert row.locator("[data-role=epochs]").inner_text() == "0/2"
            assert row.locator("[data-role=ray]").is_hidden()
            with transaction(context_of(ui.app).sessions) as s:  # what a driver reports
                repo.set_run(s, run_id=run_id, status=repo.Status.running, phase="train",
                             epoch=1, ray_job_id="aelab-job-live")
                repo.refresh_experiment_status(s, experiment_id=queued["id"])
            page.wait_for_function(
                f"""document.querySelector('.run[data-run-id="{run_id}"] [data-role=epochs]')
                    .textContent === '1/2'""", timeout=15_000)
            assert row.locator("[data-role=phase]").inner_text() == "train"
            assert row.locator("[data-role=status]").inner_text() == "running"
            card = page.locator(f'[data-experiment-id="{queued["id"]}"] .exp-head')
            assert card.locator("[data-role=status]").inner_text() == "running"
            assert row.locator("progress").evaluate("p => [p.value, p.max]") == [1, 2]
            assert row.locator("[data-role=ray]").get_attribute("href") == \
                f"{DASHBOARD}/#/jobs/aelab-job-live"
            t.shoot("experiments-live")
            page.set_viewport_size({"width": 390, "height": 844})
            page.wait_for_timeout(250)
            assert t.no_horizontal_scroll()
    finally:
        ui.http.post(f"{API}/experiments/{queued['id']}/cancel")


# --- the study's table -----------------------------------------------------------------------


def test_the_study_table_shows_the_apis_numbers_best_marked_and_sorts(
        ui: SimpleNamespace, browser: Browser) -> None:
    exp = ui.a["id"]
    rows_ = ui.http.get(f"{API}/experiments/{exp}/results").json()["rows"]
    api = {r["run_id"]: r for r in rows_ if r["kind"] == "model"}
    codecs = [r for r in rows_ if r["kind"] == "codec"]  # JPEG/WebP at each run's bytes
    with tab(browser) as t:
        page = t.open(f"{ui.base}/experiments/{exp}")
        assert page.locator("table.study tbody tr.codec").count() == len(codecs) > 0
        assert page.locator("table.study tbody tr.codec td.best").count() == 0  # references
        cells = page.eval_on_selector_all(
            "table.study tbody tr[data-run-id]:not(.codec) td[data-col]",
            """tds => tds.map(td => [td.closest('tr').dataset.runId, td.dataset.col,
                                     td.dataset.value, td.textContent.trim(),
                                     td.classList.contains('best')])""")
        columns = ["mae", "mse", "psnr", "ssim", "psnr_per_image", "classifier_accuracy",
                   "q_psnr", "q_accuracy", "probe_knn_accuracy", "probe_linear_accuracy",
                   "cluster_nmi", "bytes_per_image", "bpp", "training_time_s",
                   "search_time_s", "wall_time_s", "lr"]
        assert [col for run_id, col, *_ in cells] == columns * 2  # two runs, every column
        formats = {"mae": "{:.6f}", "mse": "{:.6f}", "psnr": "{:.2f}", "ssim": "{:.4f}",
                   "classifier_accuracy": "{:.4f}", "lr": "{:.3g}"}
        for run_id, col, value, text, best in cells:
            expected = api[int(run_id)][col]
            assert float(value) == expected, (run_id, col)  # the API's number, exactly
            if col in formats:
                assert text.removesuffix(" ★") == formats[col].format(expected), (col, text)
            if col in ("mae", "mse", "psnr", "ssim", "classifier_accuracy"):
                values = [r[col] for r in api.values()]
                top = min(values) if col in ("mae", "mse") else max(values)
                assert best == (expected == top), (run_id, col)
        original = page.locator("tr.reference td[data-col=original_accuracy]")
        assert float(original.get_attribute("data-value")) == \
            next(iter(api.values()))["original_accuracy"]
        order = sorted(api, key=lambda i: api[i]["mse"])
        page.click("th[data-col=mse] button")
        rows = "els => els.map(e => Number(e.dataset.runId))"
        models = "table.study tbody tr[data-run-id]:not(.codec)"
        assert page.eval_on_selector_all(models, rows) == order
        page.click("th[data-col=mse] button")
        assert page.eval_on_selector_all(models, rows) == order[::-1]
        assert page.locator("table.study tbody tr").first.get_attribute("class") == "reference"
        for fmt in ("json", "csv", "markdown"):
            link = page.locator(f'a[href$="format={fmt}"]')
            assert ui.http.get(link.get_attribute("href")).status_code == 200
        t.shoot("experiment-table")


# --- the gallery -------------------------------------------------------------------------------


def _recompute(ui: SimpleNamespace, run_id: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """The run's inputs and reconstructions recomputed from its saved model.pt:
    (N, 32, 32, 3) uint8 each, and its gallery.json."""
    import torch

    from models.data import load_dataset, normalize, to_float
    from models.recipes import build_model
    from models.samples import to_uint8
    from workers.spec import RunSpec

    run = ui.http.get(f"{API}/runs/{run_id}").json()
    spec = RunSpec.model_validate(run["spec"])
    blob = ui.http.get(f"{API}/runs/{run_id}/artifacts/model.pt").content
    saved = torch.load(io.BytesIO(blob), weights_only=False)
    model = build_model(saved["model"], latent_dim=saved["latent_dim"], pretrained=False)
    model.load_state_dict(saved["state"])
    model.eval()
    torch.set_num_threads(spec.resources.threads)  # as it was evaluated: same reductions
    data = load_dataset(spec.dataset, "/unused", train_limit=spec.data.train_limit,
                        test_limit=spec.data.test_limit, seed=spec.seed, download=False)
    x = to_float(data.test.images[:spec.gallery_samples])
    with torch.no_grad():
        out = model(normalize(x)).float().clamp(0.0, 1.0)
    meta = ui.http.get(f"{API}/runs/{run_id}/artifacts/gallery.json").json()
    as_hwc = lambda t: to_uint8(t).permute(0, 2, 3, 1).numpy()  # noqa: E731
    return as_hwc(x), as_hwc(out), meta


def test_gallery_tiles_are_each_runs_reconstruction_pixel_for_pixel(
        ui: SimpleNamespace, browser: Browser) -> None:
    runs = ui.runs  # across both experiments: one gallery of one dataset
    with tab(browser) as t:
        page = t.open(f"{ui.base}/compare/view?" + "&".join(f"runs={i}" for i in runs))
        inputs = page.eval_on_selector_all("img.input", "els => els.map(e => e.src)")
        tiles = page.eval_on_selector_all("figure.recon-cell", """figs => figs.map(f => [
            Number(f.dataset.runId), Number(f.dataset.index), f.dataset.psnr,
            f.querySelector('img.recon').src, f.querySelector('figcaption').textContent,
            f.querySelector('img.recon').naturalWidth])""")
        assert len(inputs) == 8 and len(tiles) == len(runs) * 8  # runs × samples
        assert [(r, i) for r, i, *_ in tiles] == [(r, i) for r in runs for i in range(8)]
        expected_errors = []
        for run_id in runs:
            x, out, meta = _recompute(ui, run_id)
            assert [png_pixels(src).tolist() for src in inputs] == x.tolist()
            row = [tile for tile in tiles if tile[0] == run_id]
            for (_, index, psnr, src, caption, width), want, value in zip(
                    row, out, meta["psnr_db"], strict=True):
                got = png_pixels(src)
                assert got.shape == (32, 32, 3) and width == 32
                assert np.array_equal(got, want), f"run {run_id} tile {index} differs"
                assert float(psnr) == value and caption == f"{value:.1f}"
                # The heatmap's scale: mean |error| over RGB of the stored pixels.
                diff = np.abs(got.astype(int) - x[index].astype(int)).sum(axis=2)
                expected_errors.append((diff.max() / 3 / 255, run_id, index))
        t.shoot("gallery")

        page.click(".switch [data-view=error]")
        legend = page.locator("[data-role=legend]")
        legend.wait_for(state="visible")
        top, top_run, top_index = max(expected_errors)
        assert float(legend.get_attribute("data-max")) == top
        assert legend.locator("[data-role=max]").inner_text() == f"{top:.3f}"
        heat = page.locator(f'figure.recon-cell[data-run-id="{top_run}"]'
                            f'[data-index="{top_index}"] img.heat')
        assert heat.is_visible()
        assert page.locator("img.recon").first.is_hidden()
        hottest = png_pixels(heat.get_attribute("src")).reshape(-1, 3)
        assert [252, 255, 164] in hottest.tolist()  # the scale's top colour, at its maximum
        t.shoot("gallery-error")

        page.locator(f'figure.recon-cell[data-run-id="{runs[1]}"][data-index="3"] button').click()
        dialog = page.locator("dialog.zoom")
        dialog.wait_for(state="visible")
        big = dialog.locator("img[data-role=recon]").get_attribute("src")
        assert big == next(src for r, i, _, src, *_ in tiles if (r, i) == (runs[1], 3))
        assert dialog.locator("[data-role=title]").inner_text() == \
            f"Pixel Shuffle #{runs[1]} · test image 3"
        t.shoot("gallery-zoom")
        page.keyboard.press("Escape")
        dialog.wait_for(state="hidden")


# --- curves -----------------------------------------------------------------------------------


def _legend(page: Page, chart: str) -> list[str]:
    return page.eval_on_selector_all(
        f"{chart} .u-legend .u-series", "els => els.slice(1).map(e => "
        "e.querySelector('.u-label').textContent.trim())")


def test_curves_have_one_line_per_run_and_each_runs_lr_search(
        ui: SimpleNamespace, browser: Browser) -> None:
    a, b = ui.runs[:2], ui.runs[2]
    with tab(browser) as t:
        page = t.open(f"{ui.base}/experiments/{ui.a['id']}/curves")
        page.wait_for_selector(".epochs-chart canvas")
        assert _legend(page, ".epochs-chart") == [f"Baseline #{a[0]}", f"Pixel Shuffle #{a[1]}"]
        page.select_option("[data-role=metric]", "val_mse")
        page.wait_for_selector(".epochs-chart canvas")
        assert _legend(page, ".epochs-chart") == [f"Baseline #{a[0]}", f"Pixel Shuffle #{a[1]}"]
        charts = page.locator(".lr-chart")
        assert charts.count() == 2
        for run_id, title in zip(a, ("Baseline", "Pixel Shuffle"), strict=True):
            chart = page.locator(f'.lr-chart[data-run-id="{run_id}"]')
            assert chart.locator("canvas").count() == 1
            assert _legend(page, f'.lr-chart[data-run-id="{run_id}"]') == ["loss", "suggested"]
            assert chart.locator("h3").inner_text().startswith(
                f"{title} #{run_id} · range_test · chosen ")
        t.shoot("curves")

        page = t.open(f"{ui.base}/compare/view?" + "&".join(f"runs={i}" for i in ui.runs))
        page.wait_for_selector(".epochs-chart canvas")
        assert _legend(page, ".epochs-chart") == [
            f"Baseline #{a[0]}", f"Pixel Shuffle #{a[1]}", f"Baseline #{b}"]
        fixed = page.locator(f'.lr-chart[data-run-id="{b}"]')
        assert fixed.locator("canvas").count() == 0
        assert fixed.inner_text().endswith("Fixed LR 0.001: nothing was searched.")
        t.shoot("compare-curves")


def test_a_tune_search_plots_its_trials_and_marks_the_chosen_one(
        ui: SimpleNamespace, browser: Browser) -> None:
    """Tune needs Ray: its trials are recorded here as a driver records them."""
    from models.plan import EpochMetrics
    from service.persistence import repository as repo
    from service.persistence.db import transaction
    from workers.store import LrTrial

    exp = ui.http.post(f"{API}/experiments", json={
        **TINY, "name": "tuned", "models": ["baseline"], "epochs": 3}).json()
    run_id = exp["runs"][0]["id"]
    trials = [LrTrial("tune", 1e-4, 0.30, 1, True, False),
              LrTrial("tune", 1e-3, 0.12, 2, False, True),
              LrTrial("tune", 3e-2, 0.25, 2, False, False),
              LrTrial("tune", 2e-1, 0.90, 1, True, False)]
    with transaction(context_of(ui.app).sessions) as s:
        repo.set_run(s, run_id=run_id, status=repo.Status.running, phase="train")
        for k, phase in ((1, "phase1"), (2, "phase2")):  # as a runner on a GPU records them
            repo.record_epoch(s, run_id=run_id, metrics=EpochMetrics(
                k, phase, 32, 1e-3, 0.2 / k, 0.2 / k, 0.2 / k, 0.3 / k, 1.0, 100.0,
                gpu_utilization_percent=40.0 * k, gpu_memory_peak_mib=1000.0 + k))
        repo.record_lr_trials(s, run_id=run_id, trials=trials, chosen_lr=1e-3)
    try:
        with tab(browser) as t:
            page = t.open(f"{ui.base}/runs/{run_id}")
            chart = f'.lr-chart[data-run-id="{run_id}"]'
            page.wait_for_selector(f"{chart} canvas")
            assert _legend(page, chart) == ["trial", "stopped early", "chosen"]
            assert page.locator(f"{chart} h3").inner_text() == \
                f"Baseline #{run_id} · tune · chosen 0.001"
            page.wait_for_selector(".gpu-chart canvas")  # beside the losses' chart
            assert _legend(page, ".loss-chart") == ["training loss", "validation loss"]
            assert _legend(page, ".gpu-chart") == ["utilisation %", "peak memory MiB"]
            assert "No reconstructions are stored yet: a run saves them when it is evaluated." \
                in page.locator("main").inner_text()
            page.wait_for_function("document.querySelector('pre.log').textContent !== 'loading…'")
            assert page.locator("pre.log").inner_text() == "The run has not started yet."
            t.shoot("run-tune")
    finally:
        ui.http.post(f"{API}/experiments/{exp['id']}/cancel")


def test_a_search_draws_one_line_per_run_and_brushing_an_axis_filters_the_table(
        ui: SimpleNamespace, browser: Browser) -> None:
    """Four samples end as their drivers record them; dragging along q_psnr's axis over
    its upper part keeps the two best samples' lines and table rows, dims and hides the
    rest; "Show all runs" brings them back."""
    from service.orchestration.sampling import propose_samples
    from service.persistence.db import transaction
    from tests.service.test_search import finish, sample_rows

    exp = ui.http.post(f"{API}/experiments", json={
        **TINY, "name": "searched", "models": ["baseline"], "search": {
            "algorithm": "random", "metric": "q_psnr", "num_samples": 4, "seed": 0,
            "space": {"latent_dim": {"randint": [16, 512]},
                      "lr": {"loguniform": [1e-4, 1e-2]}}}}).json()
    with transaction(context_of(ui.app).sessions) as s:
        propose_samples(s)  # the first max_concurrent (here all) are made at submission
    rows = sample_rows(SimpleNamespace(app=ui.app), exp["id"])
    assert len(rows) == 4
    scores = dict(zip((r.id for r in rows), (21.0, 27.5, 23.0, 25.0), strict=True))
    for run in rows:
        finish(SimpleNamespace(app=ui.app), run, scores[run.id])
    with tab(browser) as t:
        page = t.open(f"{ui.base}/experiments/{exp['id']}")
        lines = page.locator("#parallel .pc-line")
        assert sorted(int(i) for i in lines.evaluate_all(
            "ls => ls.map(l => l.dataset.runId)")) == sorted(scores)
        table = 'table.study tbody tr[data-run-id]'
        visible = "els => els.filter(e => e.offsetParent !== null).map(e => +e.dataset.runId)"
        assert sorted(page.eval_on_selector_all(table, visible)) == sorted(scores)
        t.shoot("search")
        area = page.locator('#parallel .pc-brush-area[data-axis="q_psnr"]').bounding_box()
        assert area is not None
        x = area["x"] + area["width"] / 2
        page.mouse.move(x, area["y"] + 1)  # from the top (27.5) to mid-axis (24.25)
        page.mouse.down()
        page.mouse.move(x, area["y"] + area["height"] * 0.3, steps=4)
        page.mouse.move(x, area["y"] + area["height"] / 2, steps=4)
        page.mouse.up()
        best = sorted(i for i, q in scores.items() if q > 24)
        assert sorted(page.eval_on_selector_all(table, visible)) == best
        assert sorted(page.eval_on_selector_all(".runs .run[data-run-id]", visible)) == best
        dim = "ls => ls.filter(l => l.classList.contains('pc-dim')).map(l => +l.dataset.runId)"
        assert sorted(lines.evaluate_all(dim)) == sorted(set(scores) - set(best))
        assert page.locator("#pc-count").inner_text() == "2 of 4 runs kept."
        t.shoot("search-brushed")
        page.click("#pc-clear")
        assert sorted(page.eval_on_selector_all(table, visible)) == sorted(scores)
        assert lines.evaluate_all(dim) == []
        page.set_viewport_size({"width": 390, "height": 844})
        page.wait_for_timeout(250)
        assert t.no_horizontal_scroll()


# --- the editor -------------------------------------------------------------------------------

UNPROCESSABLE = "Failed to load resource: the server responded with a status of 422 " \
    "(Unprocessable Entity)"


def test_editor_shows_a_422_field_error_next_to_its_field_and_submits(
        ui: SimpleNamespace, browser: Browser) -> None:
    with tab(browser, allowed=(UNPROCESSABLE,)) as t:
        page = t.open(f"{ui.base}/new")
        validity = page.locator("#validity")
        page.wait_for_function("document.getElementById('validity').textContent === 'Valid ✓'")
        assert page.locator('#estimate dd[data-key="runs"]').inner_text() == "2"

        page.fill("#f-epochs", "0")
        error = page.locator('[id="err:epochs"]')
        error.wait_for(state="visible")
        assert error.inner_text() == "Input should be greater than or equal to 1"
        assert page.locator("#f-epochs").get_attribute("aria-invalid") == "true"
        assert page.evaluate("""document.getElementById('f-epochs').closest('.field')
                                .contains(document.getElementById('err:epochs'))""")
        assert validity.inner_text() == "1 problem: see the marked fields"
        assert page.locator("#submit").is_disabled()
        t.shoot("editor-422")

        page.fill("#f-epochs", "3")
        page.fill("#f-lr_search-min_lr", "0.5")
        page.fill("#f-lr_search-max_lr", "0.1")
        group = page.locator('[id="err:lr_search"]')
        group.wait_for(state="visible")
        assert group.inner_text() == "Value error, min_lr must be below max_lr"
        assert page.locator('[id="err:epochs"]').inner_text() == ""
        page.fill("#f-lr_search-min_lr", "0.00001")
        page.wait_for_function("document.getElementById('validity').textContent === 'Valid ✓'")
        assert page.locator('#estimate dd[data-key="train_epochs"]').inner_text() == "6"

        page.fill("#f-name", "from the editor")
        page.wait_for_function("!document.getElementById('submit').disabled")
        page.click("#submit")
        page.wait_for_url(re.compile(r".*/experiments/\d+$"))
        created = int(page.url.rsplit("/", 1)[1])
        exp = ui.http.get(f"{API}/experiments/{created}").json()
        assert exp["name"] == "from the editor"
        assert [(r["model"], r["epochs_total"]) for r in exp["runs"]] == [
            ("baseline", 3), ("pixel_shuffle", 3)]
        ui.http.post(f"{API}/experiments/{created}/cancel")
    assert any(e == UNPROCESSABLE for e in t.errors)  # the 422s were real answers


def test_editor_keeps_composed_recipes_through_a_load_and_a_submit(
        ui: SimpleNamespace, browser: Browser) -> None:
    recipe = {"name": "ps_feature", "architecture": "pixel_shuffle", "loss": "feature"}
    loaded = {**TINY, "name": "composed in the editor", "models": ["baseline", recipe],
              "datasets": ["synthetic", "stripes"], "lr_search": {"method": "fixed"}}
    with tab(browser, allowed=(UNPROCESSABLE,)) as t:
        page = t.open(f"{ui.base}/new")
        page.wait_for_function("document.getElementById('validity').textContent === 'Valid ✓'")
        page.click("details summary")
        page.fill("#spec-json", json.dumps(loaded))
        page.click("#load-json")
        # The recipe sits in its box; a name no box holds is said, not dropped silently.
        assert json.loads(page.locator("#f-models-recipes").input_value()) == [recipe]
        assert page.locator("#json-error").inner_text() == \
            'Not among the form\'s choices, left out: datasets: "stripes"'
        page.wait_for_function("document.getElementById('validity').textContent === 'Valid ✓'")
        assert page.locator('#estimate dd[data-key="runs"]').inner_text() == "2"

        page.fill("#f-models-recipes", json.dumps([{**recipe, "architecture": "unet"}]))
        error = page.locator('[id="err:models"]')
        error.wait_for(state="visible")
        assert error.inner_text().startswith("architecture: unknown architecture 'unet'")
        page.fill("#f-models-recipes", json.dumps([recipe]))
        page.wait_for_function("!document.getElementById('submit').disabled")
        page.click("#submit")
        page.wait_for_url(re.compile(r".*/experiments/\d+$"))
        created = int(page.url.rsplit("/", 1)[1])
        exp = ui.http.get(f"{API}/experiments/{created}").json()
        assert [r["model"] for r in exp["runs"]] == ["baseline", "ps_feature"]
        run = ui.http.get(f"{API}/runs/{exp['runs'][1]['id']}").json()
        assert run["spec"]["recipe"]["architecture"] == "pixel_shuffle"
        ui.http.post(f"{API}/experiments/{created}/cancel")


# --- protected reads ---------------------------------------------------------------------------


def test_protected_reads_refuse_pages_images_and_exports_without_the_token(
        ui: SimpleNamespace, browser: Browser) -> None:
    from pydantic import SecretStr

    settings = ui.settings.model_copy(update={"protect_reads": True,
                                              "api_token": SecretStr(TOKEN)})
    guarded = serve(settings)  # the same database, now with protected reads and writes
    exp, run = ui.a["id"], ui.runs[0]
    image = f"{API}/runs/{run}/artifacts/gallery-recon.png"
    export = f"{API}/experiments/{exp}/results?format=csv"
    try:
        with tab(browser, allowed=(
                "Failed to load resource: the server responded with a status of 401 "
                "(Unauthorized)",)) as t:
            page = t.open(f"{guarded.base}/experiments/{exp}/gallery")
            assert re.search(r"/login\?next=/experiments/\d+/gallery$", page.url)
            assert page.locator("form[action='/login'] input[type=password]").is_visible()
            assert page.locator(".gallery").count() == 0
            for path in (image, export, f"{API}/runs"):
                assert page.goto(guarded.base + path).status == 401, path
            page = t.open(f"{guarded.base}/login?next=/experiments/{exp}/gallery")
            t.shoot("login")
            page.fill("#token", "wrong")
            page.click("button[type=submit]")
            assert page.locator(".error-box").inner_text() == \
                "That is not this server's API token."
            page.fill("#token", TOKEN)
            page.click("button[type=submit]")
            page.wait_for_url(f"{guarded.base}/experiments/{exp}/gallery")
            assert page.locator("img.recon").count() == 16
            assert page.evaluate("document.cookie") == ""  # HttpOnly: no script reads it
            for path in (image, export):
                status = page.evaluate(f"fetch({path!r}).then(r => r.status)")
                assert status == 200, path
            t.errors.clear()  # the 401s above were the point

            dry_runs: list[str] = []
            page.on("request", lambda r: dry_runs.append(r.url) if "dry_run" in r.url else None)
            page = t.open(f"{guarded.base}/new")
            page.wait_for_timeout(600)  # past the editor's debounce: nothing may be sent
            assert dry_runs == []
            assert page.locator("#token-box").is_visible()
            assert page.locator("#validity").inner_text() == \
                "The API token is needed to check the spec."
            t.shoot("editor-token")
            page.fill("#api-token", TOKEN)
            page.click("#token-form button")
            page.wait_for_function(
                "document.getElementById('validity').textContent === 'Valid ✓'")
            assert len(dry_runs) == 1
            assert page.evaluate("JSON.stringify(sessionStorage) + JSON.stringify(localStorage)"
                                 ) == "{}{}"
    finally:
        guarded.stop()


# --- whole images ----------------------------------------------------------------------------


def test_the_gallery_shows_whole_images_scaled_to_fit_with_their_heatmap(
        tmp_path: Path, browser: Browser) -> None:
    """Images larger than the crop are shown whole at their own aspect ratio (scaled to
    fit 256 px; these 200×120 ones are not enlarged), not as 32-px tiles nor letterboxed
    in black squares, and each error heatmap has its image's size."""
    from service.settings import Settings
    from tests.utils import image_folder

    settings = Settings(home=tmp_path, database_url=f"sqlite:///{tmp_path / 'ui.db'}",
                        start_dispatcher=False)
    image_folder(Path(settings.datasets_path), "wide", size=(120, 200), train=3, test=2)
    server = serve(settings)
    try:
        with httpx.Client(base_url=server.base, timeout=30) as http:
            exp = http.post(f"{API}/experiments", json={
                **TINY, "models": ["baseline"], "datasets": ["wide"], "epochs": 1,
                "batch_size": 16,
                "data": {"crop": 32, "validation": "test"}, "gallery_samples": 4,
                "classifier": {"enabled": False}, "compression": {"codecs": ["jpeg"]},
                "lr_search": {"method": "fixed"}}).json()
            assert "runs" in exp, exp
            assert execute_runs(SimpleNamespace(app=server.app), exp) == [True]
            with tab(browser) as t:  # the editor offers the folder, its crop and sizes
                page = t.open(f"{server.base}/new")
                page.wait_for_function(
                    "document.getElementById('validity').textContent === 'Valid ✓'")
                wide = page.locator('#f-datasets input[value="wide"]')
                label = page.locator("#f-datasets label",
                                     has=page.locator('input[value="wide"]'))
                assert label.inner_text().strip() == \
                    "wide (folder, 6 + 4 images)"
                assert page.locator('#f-datasets input[value="photos"]').count() == 1
                page.uncheck('#f-datasets input[value="synthetic"]')
                wide.check()
                for field, value in (("data-train_limit", ""), ("data-test_limit", ""),
                                     ("batch_size", "8"), ("data-crop", "64"),
                                     ("evaluation-sizes", "32, 64")):
                    page.fill(f"#f-{field}", value)
                page.wait_for_function("!document.getElementById('submit').disabled")
                t.shoot("editor-folder")
                page.click("#submit")
                page.wait_for_url(re.compile(r".*/experiments/\d+$"))
                made = http.get(f"{API}/experiments/{page.url.rsplit('/', 1)[1]}").json()
                run = http.get(f"{API}/runs/{made['runs'][0]['id']}").json()
                assert (run["dataset"], run["spec"]["data"]["crop"],
                        run["spec"]["evaluation"]["sizes"]) == ("wide", 64, [32, 64])
                http.post(f"{API}/experiments/{made['id']}/cancel")
            with tab(browser) as t:
                page = t.open(f"{server.base}/experiments/{exp['id']}/gallery")
                assert page.locator(".gallery.whole").count() == 1
                sizes = page.eval_on_selector_all(
                    "img.input, img.recon",
                    "els => els.map(e => [e.naturalWidth, e.naturalHeight])")
                assert len(sizes) == 8 and {tuple(s) for s in sizes} == {(200, 120)}
                shown = page.eval_on_selector_all(  # laid out at the same aspect ratio
                    "img.input", "els => els.map(e => e.clientWidth / e.clientHeight)")
                assert all(abs(r - 200 / 120) < 0.02 for r in shown), shown
                t.shoot("gallery-whole")
                page.click(".switch [data-view=error]")
                page.locator("[data-role=legend]").wait_for(state="visible")
                heat = page.locator("img.heat").first
                assert heat.is_visible()
                assert png_pixels(heat.get_attribute("src")).shape == (120, 200, 3)
                t.shoot("gallery-whole-error")
    finally:
        server.stop()
