"""Plugins by entry point: a small distribution (tests/models/plugins/tiny_ae: the ``tiny_ae``
architecture and the ``stripes`` dataset) pip-installed for this module, and a broken one
(tests/models/plugins/broken_ae). The catalog says where each comes from and lists the broken one
as unavailable while the service answers; the API never imports them (nor torch); a node
without a run's plugin fails it in seconds, naming it; and the plugin trains, codes and
draws like a built-in — in-process, and through the service on Ray beside the issue's
three-model spec."""

from __future__ import annotations

import importlib
import io
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from models import plugins
from models.catalog import Recipe, resolve
from models.data import load_dataset, normalize, to_float
from models.plan import epoch_plan
from models.recipes import build_model
from models.samples import read_strip, to_uint8
from service.app import create_app
from service.settings import Settings
from tests.utils import API, experiment, wait_for
from workers.context import RunEnv, plan
from workers.pipeline import LocalSteps, run_pipeline
from workers.spec import RunSpec
from workers.store import GALLERY_RECONSTRUCTIONS, MemoryStore

HERE = Path(__file__).parent / "plugins"
DISTRIBUTIONS = ("tiny-ae", "broken-ae")
BROKEN = "ModuleNotFoundError: No module named 'aelab_no_such_module'"
TINY_SOURCE = {"kind": "plugin", "distribution": "tiny-ae", "version": "0.1.0",
               "entry_point": "tiny_ae = tiny_ae:build"}


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "-q", *args], check=True, timeout=300)


@pytest.fixture(scope="module", autouse=True)
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Both distributions installed into this environment (from copies: a build leaves
    nothing in tests/), uninstalled afterwards whatever happens."""
    folder = tmp_path_factory.mktemp("plugins")
    for name in ("tiny_ae", "broken_ae"):
        shutil.copytree(HERE / name, folder / name)
    _pip("uninstall", "-y", *DISTRIBUTIONS)  # leftovers of an interrupted session
    try:
        # Offline and against this environment's setuptools and torch.
        _pip("install", "--no-build-isolation", "--no-deps", "--no-index",
             str(folder / "tiny_ae"), str(folder / "broken_ae"))
        plugins.forget()
        yield
    finally:
        _pip("uninstall", "-y", *DISTRIBUTIONS)
        plugins.forget()
        sys.modules.pop("tiny_ae", None)
        importlib.invalidate_caches()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings(home=tmp_path_factory.mktemp("home"), start_dispatcher=False)
    with TestClient(create_app(settings)) as client:
        yield client


def _by_name(items: list[dict]) -> dict[str, dict]:
    return {i["name"]: i for i in items}


def test_the_catalog_says_where_each_entry_comes_from(api: TestClient) -> None:
    catalog = api.get(f"{API}/catalog").json()
    variants = _by_name(catalog["variants"])
    assert list(variants) == ["baseline", "pixel_shuffle", "progressive_resizing",
                              "pretrained_resnet", "resnet", "feature_loss",
                              "factorized_prior", "broken_ae", "tiny_ae"]
    tiny = variants["tiny_ae"]
    assert (tiny["title"], tiny["latent_dim"], tiny["params"], tiny["available"]) == \
        ("Tiny AE", 16, None, True)
    assert tiny["source"] == TINY_SOURCE
    assert tiny["recipe"] == {"architecture": "tiny_ae", "loss": "mse", "progressive": False,
                              "encoder_weights": "none", "latent_dim": 16}
    assert variants["baseline"]["source"] == {"kind": "built-in", "distribution": None,
                                              "version": None, "entry_point": None}
    broken = variants["broken_ae"]
    assert (broken["available"], broken["error"], broken["recipe"]) == (False, BROKEN, None)
    assert broken["source"]["distribution"] == "broken-ae"
    assert broken["source"]["version"] == "0.2.0"
    arch = _by_name(catalog["architectures"])["tiny_ae"]
    assert [arch[k] for k in ("resizable", "pretrained_body", "layer_groups",
                              "entropy_model", "default_latent_dim")] == \
        [False, None, False, False, 16]
    stripes = _by_name(catalog["datasets"])["stripes"]
    assert stripes["source"] == {**TINY_SOURCE, "entry_point": "stripes = tiny_ae:STRIPES"}
    assert [stripes[k] for k in ("num_classes", "channels", "native_size", "train_size",
                                 "test_size", "status")] == [2, 3, [32, 32], 600, 100,
                                                             "available"]
    # The broken plugin does not stop the service, and a spec naming it is refused.
    assert api.get("/healthz").status_code == 200
    r = api.post(f"{API}/experiments", params={"dry_run": True},
                 json={"models": ["broken_ae"], "datasets": ["synthetic"]})
    assert r.status_code == 422
    assert [(e["loc"], e["msg"]) for e in r.json()["detail"]] == [
        (["body", "models", 0], f"variant 'broken_ae' is unavailable: {BROKEN}")]
    r = api.post(f"{API}/experiments", params={"dry_run": True},
                 json={"models": ["vae"], "datasets": ["synthetic"]})
    assert r.json()["detail"][0]["msg"].endswith("feature_loss, factorized_prior, tiny_ae")


def test_a_spec_sizes_a_plugin_dataset_by_its_facts(api: TestClient) -> None:
    spec = {"models": ["tiny_ae", {"name": "tiny_feature", "architecture": "tiny_ae",
                                   "loss": "feature"}],
            "datasets": ["stripes"], "pretrained": False, "batch_size": 16,
            "lr_search": {"method": "fixed"}, "classifier": {"enabled": False}}
    r = api.post(f"{API}/experiments", params={"dry_run": True},
                 json={**spec, "data": {"train_limit": 541}})
    assert r.status_code == 422
    assert r.json()["detail"][0]["msg"] == ("train_limit 541 exceeds the 540 training images "
                                            "of stripes (600 less the 10% validation "
                                            "hold-out)")
    dry = api.post(f"{API}/experiments", params={"dry_run": True}, json=spec).json()
    assert [(r["model"], r["latent_dim"]) for r in dry["runs"]] == [("tiny_ae", 16),
                                                                   ("tiny_feature", 16)]
    assert dry["estimate"]["images_processed"] == 2 * 15 * 540  # fixed: no search epochs
    assert [(n["kind"], n["name"], n["present"]) for n in dry["needs"]] == [
        ("plugin", "tiny_ae", True), ("plugin", "stripes", True)]
    r = api.post(f"{API}/experiments", params={"dry_run": True}, json={
        **spec, "models": [{"name": "t", "architecture": "tiny_ae", "progressive": True}]})
    assert [e["loc"] for e in r.json()["detail"]] == [["body", "models", 0, "progressive"]]


def test_the_api_describes_plugins_without_importing_torch(tmp_path: Path) -> None:
    code = f"""
import sys
from fastapi.testclient import TestClient
from service.app import create_app
from service.settings import Settings
with TestClient(create_app(Settings(home={str(tmp_path)!r}, start_dispatcher=False))) as c:
    names = [v["name"] for v in c.get('/api/v1/catalog').json()["variants"]]
    created = c.post('/api/v1/experiments', json={{'models': ['tiny_ae'],
                                                   'datasets': ['stripes']}})
assert 'tiny_ae' in names and created.status_code == 201, created.text
assert 'torch' not in sys.modules and 'tiny_ae' not in sys.modules, 'the API imported them'
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def _spec(recipe: Recipe, dataset: str = "synthetic", **kw: object) -> RunSpec:
    base = {"epochs": 2, "batch_size": 16, "pretrained": False,
            "data": {"train_limit": 32, "test_limit": 8}, "classifier": {"enabled": False},
            "compression": {"codecs": []},  # the model's own bytes; no JPEG/WebP rows
            "lr_search": {"method": "fixed"},
            "resources": {"gpus_per_run": 0, "cpus_per_run": 1}}
    return RunSpec(model=recipe.name, recipe=recipe, dataset=dataset, **{**base, **kw})


ENV = RunEnv(data_root="/unused", weights_dir="/unused", allow_download=False)


@pytest.mark.parametrize("recipe,words", [
    (Recipe(name="absent_ae", architecture="absent_ae", latent_dim=8,
            plugin={"distribution": "absent-ae", "version": "1.0"}),
     "architecture plugin 'absent_ae' (aelab.variants entry point) is not installed on this "
     "node (the run was planned with absent-ae 1.0): install it into the Python environment "
     "of every node that trains (README: Plugins)"),
    (Recipe(name="tiny_ae", architecture="tiny_ae", latent_dim=16,
            plugin={"distribution": "tiny-ae", "version": "0.0.9"}),
     "architecture plugin 'tiny_ae' (aelab.variants entry point) is tiny-ae 0.1.0 on this "
     "node, but the run was planned with tiny-ae 0.0.9"),
    (Recipe(name="broken_ae", architecture="broken_ae", latent_dim=16,
            plugin={"distribution": "broken-ae", "version": "0.2.0"}),
     f"fails to load: {BROKEN}"),
])
def test_a_node_without_the_runs_plugin_fails_it_in_seconds_naming_it(
        recipe: Recipe, words: str) -> None:
    store = MemoryStore()
    started = time.perf_counter()
    assert not run_pipeline(_spec(recipe), store, LocalSteps(ENV))
    assert time.perf_counter() - started < 10
    assert store.error is not None and store.error.startswith("PreflightFailed: ")
    assert words in store.error and "\n" not in store.error
    assert store.epochs == [] and store.measures is None


@pytest.mark.slow
def test_a_plugin_architecture_trains_codes_and_draws_on_a_plugin_dataset() -> None:
    recipe = resolve("tiny_ae")
    spec = _spec(recipe, "stripes", classifier={"arch": "small", "pretrained": False,
                                                "frozen_epochs": 1, "unfrozen_epochs": 0},
                 lr_search={"method": "range_test", "range_test_steps": 12})
    store = MemoryStore()
    assert run_pipeline(spec, store, LocalSteps(ENV)), store.error
    assert [(e.epoch, e.phase, e.size) for e in store.epochs] == [(1, "phase1", 32),
                                                                 (2, "phase2", 32)]
    m = store.measures
    assert m is not None and (m.latent_dim, m.params) == (16, 19_139)
    assert m.bytes_per_image == len(store.artifacts["latents-test.bin"]) / 8
    assert m.classifier_accuracy is not None and m.raw_bytes_per_image == 3 * 32 * 32
    # The gallery's tiles are the saved model's reconstructions, rebuilt from model.pt.
    saved = torch.load(io.BytesIO(store.artifacts["model.pt"]), weights_only=False)
    model = build_model(Recipe.model_validate(saved["recipe"]), pretrained=False)
    model.load_state_dict(saved["state"])
    x = to_float(load_dataset("stripes", "/unused", train_limit=32, test_limit=8)
                 .test.images)
    with torch.no_grad():
        out = model.eval()(normalize(x)).clamp(0, 1)
    assert torch.equal(read_strip(store.artifacts[GALLERY_RECONSTRUCTIONS]), to_uint8(out))


# --- through the service on Ray ---------------------------------------------------------

THREE = ["baseline",
         {"name": "ps_feature", "architecture": "pixel_shuffle", "loss": "feature"},
         {"name": "ps_progressive", "architecture": "pixel_shuffle", "progressive": True}]


def _finished(client: TestClient, exp_id: int) -> dict | None:
    exp = experiment(client, exp_id)
    return exp if exp["status"] in ("succeeded", "failed", "cancelled") else None


def _explain(client: TestClient, exp_id: int) -> str:
    """Each run's status and phase, and the tail of an unfinished one's log."""
    out = []
    for run in experiment(client, exp_id)["runs"]:
        out.append(f"run {run['id']} {run['model']}: {run['status']} ({run.get('phase')}) "
                   f"{run.get('error') or ''}")
        if run["status"] not in ("succeeded", "failed", "cancelled"):
            log = client.get(f"{API}/runs/{run['id']}/logs").json().get("text") or ""
            out += ["    " + line for line in log.splitlines()[-10:]]
    return "\n".join(out)


@pytest.mark.ray
@pytest.mark.slow
def test_the_three_model_spec_and_a_plugin_run_on_ray(ray_head, tmp_path: Path) -> None:
    from service.orchestration.ray_executor import RayExecutor

    settings = Settings(home=tmp_path / "home", ray_address=ray_head.dashboard_url,
                        dispatch_interval_s=0.5, reconcile_interval_s=5, max_in_flight=4,
                        allow_download=False)
    spec = {"models": [*THREE, "tiny_ae"], "datasets": ["synthetic"], "epochs": 3,
            "batch_size": 16, "pretrained": False, "gallery_samples": 4,
            "data": {"train_limit": 32, "test_limit": 16}, "classifier": {"enabled": False},
            "compression": {"codecs": []},  # the models' own bytes; no JPEG/WebP rows
            "resources": {"gpus_per_run": 0.5, "cpus_per_run": 1},
            "lr_search": {"method": "tune", "num_samples": 2, "budget_epochs": 1,
                          "min_lr": 1e-4, "max_lr": 1e-2}}
    with TestClient(create_app(settings, executor_factory=RayExecutor.from_settings)) as c:
        created = c.post(f"{API}/experiments", json=spec)
        assert created.status_code == 201, created.text
        exp_id = created.json()["id"]
        done = wait_for(lambda: _finished(c, exp_id), 900, "the four runs", 2,
                        explain=lambda: _explain(c, exp_id))
        assert [(r["model"], r["status"], r["error"]) for r in done["runs"]] == [
            (m, "succeeded", None) for m in ("baseline", "ps_feature", "ps_progressive",
                                             "tiny_ae")]
        runs = {r["model"]: c.get(f"{API}/runs/{r['id']}").json() for r in done["runs"]}
        for name, run in runs.items():
            got = [(e["epoch"], e["phase"], e["size"]) for e in run["epochs"]]
            assert got == [(i + 1, p, s) for i, (p, s) in enumerate(
                epoch_plan(plan(RunSpec.model_validate(run["spec"]))))], name
            assert len(run["lr_trials"]) == 2 and sum(t["chosen"] for t in run["lr_trials"]) == 1
            stream = next(a for a in run["artifacts"] if a["name"] == "latents-test.bin")
            assert run["measures"]["bytes_per_image"] == stream["size"] / 16, name
            assert {"gallery-inputs.png", "gallery-recon.png", "gallery.json"} <= \
                {a["name"] for a in run["artifacts"]}
        # What its axes say: 16 px then 32 px for the progressive one, the recipes stored.
        assert [(e["phase"], e["size"]) for e in runs["ps_progressive"]["epochs"]] == [
            ("phase1", 16), ("phase1", 16), ("phase2", 32)]
        assert [e["size"] for e in runs["ps_feature"]["epochs"]] == [32, 32, 32]
        assert runs["ps_feature"]["spec"]["recipe"]["loss"] == "feature"
        assert runs["tiny_ae"]["spec"]["recipe"]["plugin"] == {"distribution": "tiny-ae",
                                                               "version": "0.1.0"}
        assert (runs["tiny_ae"]["measures"]["latent_dim"],
                runs["tiny_ae"]["measures"]["params"]) == (16, 19_139)
        # Results, gallery and compare label composed and plugin runs by their names.
        md = c.get(f"{API}/experiments/{exp_id}/results", params={"format": "markdown"}).text
        assert [line.split(" | ")[0] for line in md.splitlines()
                if line.startswith(("| ps_", "| tiny", "| Baseline"))] == [
            "| Baseline", "| ps_feature", "| ps_progressive", "| tiny_ae"]
        gallery = c.get(f"/experiments/{exp_id}/gallery").text
        for name, run in runs.items():
            tiles = re.findall(rf'<img class="recon"[^>]+alt="[^"]+ #{run["id"]}: ', gallery)
            assert len(tiles) == 4, name
        assert ">ps_feature</a>" in gallery and ">tiny_ae</a>" in gallery
        ids = "&".join(f"runs={r['id']}" for r in runs.values())
        compare = c.get(f"/compare/view?{ids}").text
        assert all(f"{name} #{run['id']}" in compare for name, run in runs.items()
                   if name != "baseline")
