"""The web UI's model and dataset filters in an open lab: composed recipes, plugin
variants and datasets, and the names only stored runs still carry (TestClient; plugins
described as the probe would, nothing installed or trained)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from models import plugins
from models.datasets import DatasetInfo
from service.app import create_app
from service.context import context_of
from service.persistence.db import transaction
from service.persistence.tables import Run
from service.settings import Settings
from service.web.spec_form import spec_sections
from tests.utils import API, spec

STRIPES = DatasetInfo("stripes", "Stripes", "Horizontal or vertical stripes.", num_classes=2,
                      channels=3, native_size=(32, 32), train_size=600, test_size=100,
                      needs_files=False)


def described(*entries: tuple[str, str, str, dict]) -> dict[str, list[plugins.Described]]:
    """What the plugin probe reports for ``(group, name, distribution, facts)``."""
    out: dict[str, list[plugins.Described]] = {g: [] for g in plugins.GROUPS}
    for group, name, dist, facts in entries:
        entry = plugins.PluginEntry(group, name, f"{dist.replace('-', '_')}:{name}", dist,
                                    "0.1.0")
        out[group].append(plugins.Described(entry, facts))
    return out


TINY = (plugins.VARIANTS_GROUP, "tiny_ae", "tiny-ae",
        {"title": "Tiny AE", "default_latent_dim": 16, "description": "Two convs."})
STRIPES_ENTRY = (plugins.DATASETS_GROUP, "stripes", "tiny-ae",
                 {k: v for k, v in asdict(STRIPES).items() if k != "source"})


@pytest.fixture()
def web(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(home=tmp_path / "home", database_url=f"sqlite:///{tmp_path / 'w.db'}",
                        start_dispatcher=False, max_runs_per_experiment=12, max_epochs=50)
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture()
def installed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """tiny-ae's variant and dataset, as described by the probe."""
    found = described(TINY, STRIPES_ENTRY)
    monkeypatch.setattr(plugins, "described", lambda: found)
    monkeypatch.setattr(plugins, "cached", lambda: found)
    yield


def _options(html: str, name: str) -> list[str]:
    select = re.search(rf'<select name="{name}">(.*?)</select>', html, re.S)
    assert select is not None
    return re.findall(r'<option value="([^"]*)"', select.group(1))


def _selected(html: str, name: str) -> str | None:
    select = re.search(rf'<select name="{name}">(.*?)</select>', html, re.S)
    found = re.search(r'<option value="([^"]*)" selected', select.group(1))  # type: ignore[union-attr]
    return found.group(1) if found else None


def test_filters_take_composed_plugin_and_stored_names_and_say_unknown_ones(
        web: TestClient, installed: None) -> None:
    composed = {"name": "ps_feature", "architecture": "pixel_shuffle", "loss": "feature"}
    a = web.post(f"{API}/experiments", json=spec("baseline", composed, epochs=2)).json()
    b = web.post(f"{API}/experiments", json=spec("tiny_ae", datasets=["stripes"],
                                                 epochs=2)).json()
    c = web.post(f"{API}/experiments", json=spec("baseline", epochs=2)).json()
    with transaction(context_of(web.app).sessions) as s:  # a plugin since uninstalled
        s.execute(update(Run).where(Run.experiment_id == c["id"]).values(dataset="dots"))

    def shown(html: str) -> list[int]:
        return [int(x) for x in re.findall(r'data-experiment-id="(\d+)"', html)]

    def compared(html: str) -> list[int]:
        return [int(x) for x in re.findall(r'<tr data-run-id="(\d+)"', html)]

    for query, experiments in (("model=ps_feature", [a]), ("model=tiny_ae", [b]),
                               ("dataset=stripes", [b]), ("dataset=dots", [c])):
        page = web.get(f"/?{query}")
        assert page.status_code == 200 and shown(page.text) == [e["id"] for e in experiments]
        field, value = query.split("=")
        assert _selected(page.text, field) == value
        assert 'data-role="filter-problem"' not in page.text
        runs = web.get(f"/compare?{query}")
        assert runs.status_code == 200 and _selected(runs.text, field) == value
        assert sorted(compared(runs.text)) == sorted(
            r["id"] for e in experiments for r in e["runs"]
            if field == "dataset" or r["model"] == value)

    for path in ("/", "/compare"):
        html = web.get(path).text
        assert _options(html, "model") == ["", "baseline", "pixel_shuffle",
                                           "progressive_resizing", "pretrained_resnet",
                                           "resnet", "feature_loss", "factorized_prior",
                                           "tiny_ae", "ps_feature"]
        assert _options(html, "dataset") == ["", "mnist", "cifar10", "synthetic", "photos",
                                             "kodak", "stripes", "dots"]
        assert "Stripes</option>" in html
        for query, words in (("model=nonesuch", "Unknown model 'nonesuch': neither a "
                              "variant (GET /catalog) nor a composed recipe of a stored run."),
                             ("dataset=nowhere", "Unknown dataset 'nowhere': neither a "
                              "dataset here (GET /catalog) nor the dataset of a stored run.")):
            page = web.get(f"{path}?{query}")
            assert page.status_code == 422
            problems = re.findall(r'data-role="filter-problem">([^<]*)<', page.text)
            assert [p.replace("&#39;", "'") for p in problems] == [words]
            field, value = query.split("=")
            assert _selected(page.text, field) == value  # shown, not silently "any"
            assert shown(page.text) == [] and compared(page.text) == []


def test_the_editor_keeps_composed_recipes_beside_the_model_boxes(web: TestClient) -> None:
    by_path = {f.path: f for s in spec_sections() for f in s.fields}
    assert by_path["models"].kind == "choices" and by_path["models"].composable
    assert [p for p, f in by_path.items() if f.composable] == ["models"]
    html = web.get("/new").text
    boxes = re.findall(r'<textarea id="([^"]+)" data-recipes-for="([^"]+)"', html)
    assert boxes == [("f-models-recipes", "models")]
    # editor.js reads the box into models after the ticked names, and fill() puts every
    # entry the boxes cannot hold there (or reports it): nothing is dropped silently.
    js = web.get("/static/editor.js").text
    assert "data-recipes-for" in js and "Not among the form's choices, left out" in js
