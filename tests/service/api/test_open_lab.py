"""An open lab as a new user meets it: composed recipes, plugin datasets and the filters
over stored runs, through the API (TestClient, no Ray, nothing trained)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from models import plugins
from models.datasets import DATASETS, DatasetCheck
from service.api.routes import catalog as catalog_route
from service.context import context_of
from service.persistence.db import transaction
from service.persistence.tables import Run
from service.results import table
from tests.utils import API

SMALL = {"datasets": ["synthetic"], "epochs": 2, "pretrained": False, "batch_size": 16,
         "classifier": {"enabled": False}, "lr_search": {"method": "fixed"},
         "data": {"train_limit": 64, "test_limit": 16}}


def _post(client: TestClient, models: list[Any], dry_run: bool = True, **fields: Any
          ) -> Any:
    return client.post(f"{API}/experiments", params={"dry_run": dry_run} if dry_run else {},
                       json={**SMALL, "models": models, **fields})


def _locs(r: Any) -> list[tuple[Any, ...]]:
    assert r.status_code == 422, r.text
    return [tuple(e["loc"]) for e in r.json()["detail"]]


def test_a_recipes_lr_has_lr_search_lrs_bounds_and_dataset_keys(client: TestClient) -> None:
    bad = {"name": "x", "architecture": "conv",
           "lr": {"mnist": -1, "cifar10": 0, "synthetic": 1e9, "imagenet": 1e-3}}
    for dry in (True, False):
        r = _post(client, ["baseline", bad], dry_run=dry)
        assert _locs(r) == [("body", "models", 1, "lr", k) for k in bad["lr"]]
        msgs = [e["msg"] for e in r.json()["detail"]]
        assert msgs[:3] == ["Input should be greater than 0", "Input should be greater than 0",
                            "Input should be less than or equal to 10"]
        assert "unknown dataset 'imagenet'; valid: mnist, cifar10, synthetic" in msgs[3]
        # lr_search.lr refuses the same values
        for v in (-1, 0, 1e9):
            r = _post(client, ["baseline"], dry_run=dry,
                      lr_search={"method": "fixed", "lr": v})
            assert _locs(r) == [("body", "lr_search", "lr")]
    assert client.get(f"{API}/experiments").json()["items"] == []
    ok = {"name": "x", "architecture": "conv", "lr": {"synthetic": 10, "mnist": 1e-4}}
    assert _post(client, [ok]).status_code == 200


def test_plugin_is_the_servers_to_set_yet_stored_specs_stay_readable(
        client: TestClient) -> None:
    given = {"name": "x", "architecture": "conv",
             "plugin": {"distribution": "tiny-ae", "version": "0.1.0"}}
    for dry in (True, False):
        r = _post(client, ["baseline", given], dry_run=dry)
        assert _locs(r) == [("body", "models", 1, "plugin")]
        assert "set by the server" in r.json()["detail"][0]["msg"]
    # null is what a dry run's spec echoes: sending it back is fine
    echoed = _post(client, [{"name": "x", "architecture": "conv"}]).json()["spec"]
    assert echoed["models"][0]["plugin"] is None
    created = client.post(f"{API}/experiments", json=echoed)
    assert created.status_code == 201, created.text
    # A spec stored with a plugin (by the server, or before this rule) still reads back.
    assert table.parse_spec({**echoed, "models": [given]}).models[0].plugin is not None
    run = client.get(f"{API}/runs/{created.json()['runs'][0]['id']}").json()
    assert run["spec"]["recipe"]["plugin"] is None


def test_one_composed_name_means_one_recipe_across_experiments(client: TestClient) -> None:
    ps_feature = {"name": "ps_feature", "architecture": "pixel_shuffle", "loss": "feature"}
    assert _post(client, [ps_feature], dry_run=False).status_code == 201
    other = {"name": "ps_feature", "architecture": "conv"}
    for dry in (True, False):
        r = _post(client, ["baseline", other], dry_run=dry)
        assert _locs(r) == [("body", "models", 1, "name")]
        msg = r.json()["detail"][0]["msg"]
        assert "'ps_feature' names another recipe in stored runs (architecture=" \
            "pixel_shuffle, loss=feature, progressive=False" in msg, msg
    assert len(client.get(f"{API}/experiments").json()["items"]) == 1
    # The same recipe, its defaults spelt out or not, is welcome under its name.
    same = {**ps_feature, "latent_dim": 1000, "progressive": False}
    assert _post(client, [same]).status_code == 200
    assert _post(client, [ps_feature], dry_run=False).status_code == 201
    assert _post(client, [{**ps_feature, "latent_dim": 64}]).status_code == 422


def _store_as_if_on(client: TestClient, experiment_id: int, dataset: str) -> None:
    """Rewrite an experiment's runs as runs on ``dataset``: a plugin dataset's runs after
    the plugin is uninstalled (nothing here knows the name but the stored runs)."""
    with transaction(context_of(client.app).sessions) as s:
        s.execute(update(Run).where(Run.experiment_id == experiment_id)
                  .values(dataset=dataset))


def test_filters_accept_datasets_of_stored_runs_after_their_plugin_is_gone(
        client: TestClient) -> None:
    created = _post(client, ["baseline"], dry_run=False).json()
    _post(client, ["baseline"], dry_run=False)
    _store_as_if_on(client, created["id"], "stripes")
    runs = client.get(f"{API}/runs", params={"dataset": "stripes"})
    assert runs.status_code == 200, runs.text
    assert [i["id"] for i in runs.json()["items"]] == [created["runs"][0]["id"]]
    listed = client.get(f"{API}/experiments", params={"dataset": "stripes"})
    assert listed.status_code == 200, listed.text
    assert [e["id"] for e in listed.json()["items"]] == [created["id"]]
    r = client.get(f"{API}/runs", params={"dataset": ["stripes", "nowhere"]})
    assert _locs(r) == [("query", "dataset", 1)]
    assert "unknown dataset 'nowhere'" in r.json()["detail"][0]["msg"]
    assert _locs(client.get(f"{API}/experiments", params={"dataset": "nowhere"})) == [
        ("query", "dataset")]
    assert client.get(f"{API}/runs", params={"dataset": "mnist"}).json()["items"] == []


def test_the_experiment_filter_repeats_like_every_other(client: TestClient) -> None:
    ids = [_post(client, ["baseline"], dry_run=False).json() for _ in range(3)]
    runs = {e["id"]: e["runs"][0]["id"] for e in ids}
    first, second, third = runs
    got = client.get(f"{API}/runs", params={"experiment": [first, third]}).json()["items"]
    assert [i["id"] for i in got] == [runs[third], runs[first]]
    got = client.get(f"{API}/runs", params={"experiment": second}).json()["items"]
    assert [i["id"] for i in got] == [runs[second]]
    r = client.get(f"{API}/runs", params={"experiment": [first, 0]})
    assert _locs(r) == [("query", "experiment", 1)]


def _described(*entries: tuple[str, str, str, dict, str | None]
               ) -> dict[str, list[plugins.Described]]:
    """What the plugin probe reports for ``(group, name, distribution, facts, error)``."""
    out: dict[str, list[plugins.Described]] = {g: [] for g in plugins.GROUPS}
    for group, name, dist, facts, error in entries:
        entry = plugins.PluginEntry(group, name, f"{dist.replace('-', '_')}:{name}", dist,
                                    "0.1.0")
        out[group].append(plugins.Described(entry, facts, error))
    return out


TINY_FACTS = {"title": "Tiny AE", "default_latent_dim": 16, "description": "Two convs."}
STRIPES_FACTS = {"name": "stripes", "title": "Stripes", "description": "Stripes.",
                 "num_classes": 2, "channels": 3, "native_size": [32, 32], "train_size": 600,
                 "test_size": 100, "needs_files": False}


def test_the_catalog_says_why_any_entry_is_unavailable_in_one_shape(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    V, D = plugins.VARIANTS_GROUP, plugins.DATASETS_GROUP
    found = _described((V, "tiny_ae", "tiny-ae", TINY_FACTS, None),
                       (V, "tiny_ae", "other-ae", TINY_FACTS, None),
                       (D, "stripes", "tiny-ae", STRIPES_FACTS, None),
                       (D, "stripes", "other-ae", STRIPES_FACTS, None),
                       (D, "dots", "dots-data", {}, "ModuleNotFoundError: No module named "
                                                    "'dots_data'"))
    monkeypatch.setattr(plugins, "described", lambda: found)
    monkeypatch.setattr(plugins, "cached", lambda: found)
    catalog = client.get(f"{API}/catalog").json()
    for kind in ("variants", "architectures", "datasets"):
        clashing = sorted((e["source"]["distribution"], e["available"], e["error"])
                          for e in catalog[kind] if e["name"] in ("tiny_ae", "stripes"))
        name = "stripes" if kind == "datasets" else "tiny_ae"
        assert clashing == [
            ("other-ae", False, f"{name!r} is also given by tiny-ae 0.1.0"),
            ("tiny-ae", False, f"{name!r} is also given by other-ae 0.1.0")], (kind, clashing)
    datasets = {d["name"]: d for d in catalog["datasets"]}
    assert datasets["dots"]["available"] is False
    assert datasets["dots"]["error"] == "ModuleNotFoundError: No module named 'dots_data'"
    assert datasets["dots"]["status"] == "broken"
    assert datasets["synthetic"]["available"] is True and datasets["synthetic"]["error"] is None
    for d in catalog["datasets"]:  # built-ins without their files alike
        assert (d["error"] is None) == d["available"], d
        assert d["available"] or "\n" not in d["error"]
    missing = catalog_route._dataset(DATASETS["mnist"], DatasetCheck.found(
        ["/data/mnist/train-images-idx3-ubyte.gz", "/data/mnist/t10k.gz"], []))
    assert (missing.available, missing.status, missing.error) == (
        False, "missing", "/data/mnist/train-images-idx3-ubyte.gz is missing; "
                          "/data/mnist/t10k.gz is missing")
    r = _post(client, ["baseline"], datasets=["stripes"])
    assert _locs(r) == [("body", "datasets", 0)]
    assert "is also given by" in r.json()["detail"][0]["msg"]
