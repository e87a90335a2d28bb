"""Builders and doubles shared by tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from service.client.schemas import API_PREFIX as API
from service.context import context_of

REPO = Path(__file__).resolve().parents[1]  # the repository's root

# --- experiment specs ---------------------------------------------------------------------

# Secrets in the environment the session's Ray head starts from (tests/conftest.py): none
# may reach a process of that cluster (tests/service/orchestration/test_ray_secrets.py).
RAY_HEAD_SECRETS = {
    "AELAB_API_TOKEN": "canary-api-token-5d1e",
    "AELAB_DATABASE_URL": "postgresql+psycopg://aelab:canary-db-password-77c3@db/aelab",
    "DATABASE_URL": "postgresql+psycopg://aelab:canary-db-password-77c3@db/aelab",
    "PGPASSWORD": "canary-db-password-77c3",
}
CPU = {"gpus_per_run": 0, "cpus_per_run": 1}  # a run's resources where no GPU is declared
# The reference classifier at its smallest: a small CNN, one epoch, no ImageNet weights.
SMALL_CLASSIFIER = {"arch": "small", "frozen_epochs": 1, "unfrozen_epochs": 0,
                    "pretrained": False}


def spec(*models: str, **fields: Any) -> dict[str, Any]:
    """An experiment spec to POST: ``models`` (default: baseline) on the generated
    ``synthetic`` set, ``fields`` on top; the API's defaults for the rest."""
    return {"models": list(models or ("baseline",)), "datasets": ["synthetic"], **fields}


def tiny_spec(*models: str, **fields: Any) -> dict[str, Any]:
    """A spec whose runs train in seconds on a CPU, offline: 2 epochs of 256 ``synthetic``
    images in batches of 32, tested on 64, at a fixed LR, without pretrained weights or a
    reference classifier; ``fields`` replace any of these whole."""
    return spec(*models, **{"epochs": 2, "batch_size": 32, "pretrained": False,
                            "data": {"train_limit": 256, "test_limit": 64},
                            "lr_search": {"method": "fixed"},
                            "classifier": {"enabled": False}, **fields})


# --- waiting and running ------------------------------------------------------------------


def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str,
             interval_s: float = 1.0, explain: Callable[[], str] | None = None) -> Any:
    """``predicate()`` once it is truthy; on timeout an AssertionError naming ``what``,
    followed by ``explain()`` (what the test saw, for the reader of a failed CI run)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    detail = ""
    if explain is not None:
        try:
            detail = "\n" + explain()
        except Exception as exc:  # the explanation must not hide the timeout
            detail = f"\n(explaining failed: {exc!r})"
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}{detail}")


def experiment(client: TestClient, exp_id: int) -> dict[str, Any]:
    return client.get(f"{API}/experiments/{exp_id}").json()


def execute_runs(client: TestClient, experiment: dict[str, Any],
                 lr: dict[str, float] | None = None, data_root: str = "/unused"
                 ) -> list[bool]:
    """Run an experiment's runs one by one in this process, through the one pipeline and
    the database run store (no Ray): the outcomes in run order. ``lr`` overrides the
    fixed LR per model; ``data_root`` is where real datasets are (MNIST: installed there
    from the offline copy)."""
    from service.orchestration.run_store import DbRunStore
    from service.persistence import repository as repo
    from workers.context import RunEnv
    from workers.pipeline import LocalSteps, run_pipeline
    from workers.spec import RunSpec

    app = client.app
    outcomes = []
    for run in experiment["runs"]:
        with context_of(app).sessions() as s:
            spec = RunSpec.model_validate(repo.get_run(s, run_id=run["id"]).spec)
        if lr and run["model"] in lr:
            spec = spec.model_copy(update={
                "lr_search": spec.lr_search.model_copy(update={"lr": lr[run["model"]]})})
        with context_of(app).sessions.begin() as s:
            repo.set_run(s, run_id=run["id"], status=repo.Status.running)
        store = DbRunStore(context_of(app).sessions, context_of(app).artifacts, run["id"])
        settings = context_of(app).settings
        env = RunEnv(data_root=data_root, weights_dir="/unused", allow_download=False,
                     datasets_dir=settings.datasets_path,
                     dataset_urls=tuple(sorted(settings.dataset_urls.items())))
        outcomes.append(run_pipeline(spec, store, LocalSteps(env)))
    return outcomes


# --- image folders ------------------------------------------------------------------------


def image_folder(base: Path, name: str, *, size: tuple[int, int] = (64, 96),
                 classes: tuple[str, ...] = ("circles", "squares"), train: int = 6,
                 test: int = 2, seed: int = 0) -> Path:
    """A folder dataset ``base/name/{train,test}/`` of RGB PNGs of ``size`` (H, W):
    ``train`` and ``test`` images per class in class folders (ImageFolder layout), or
    flat with ``classes=()``. Smooth gradients with a shape per class, so an autoencoder
    and a classifier have something to learn; deterministic in ``seed``."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    h, w = size
    folder = base / name
    for split, n in (("train", train), ("test", test)):
        for c, cls in enumerate(classes or ("",)):
            out = folder / split / cls if cls else folder / split
            out.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                yy, xx = np.mgrid[0:h, 0:w]
                base_rgb = rng.integers(0, 200, size=3)
                img = (base_rgb[None, None] + 0.5 * (yy[..., None] + xx[..., None])
                       ).clip(0, 255).astype(np.uint8)
                im = Image.fromarray(img)
                r = rng.integers(6, min(h, w) // 3)
                cx, cy = rng.integers(r, w - r), rng.integers(r, h - r)
                box = (cx - r, cy - r, cx + r, cy + r)
                draw = ImageDraw.Draw(im)
                (draw.rectangle if c else draw.ellipse)(box, fill=(250, 250, 250))
                im.save(out / f"{split}{c}_{seed}_{i:03d}.png")
    return folder
