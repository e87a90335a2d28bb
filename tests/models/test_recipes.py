"""Variants are recipes over axes: the presets keep their recipes, a spec composes new
ones inline (refused by field when they cannot work), every run spec carries its recipe,
and capabilities — never class or name checks — decide what an architecture can do."""

from __future__ import annotations

import io
import json

import pytest
import torch
from fastapi.testclient import TestClient
from pydantic import ValidationError

from models.architectures import Autoencoder
from models.builders import get_architecture
from models.catalog import ARCHITECTURES, PRESETS, Recipe, resolve
from models.plan import epoch_plan
from models.recipes import build_model
from service.spec import ExperimentSpec
from tests.utils import API
from workers.context import RunEnv, plan
from workers.pipeline import LocalSteps, run_pipeline
from workers.spec import RunSpec
from workers.store import GALLERY_META, MemoryStore

# The issue's exact form.
THREE = ["baseline",
         {"name": "ps_feature", "architecture": "pixel_shuffle", "loss": "feature"},
         {"name": "ps_progressive", "architecture": "pixel_shuffle", "progressive": True}]
SMALL = {"datasets": ["synthetic"], "epochs": 3, "pretrained": False, "batch_size": 16,
         "classifier": {"enabled": False}, "data": {"train_limit": 64, "test_limit": 16}}


def test_the_issues_three_model_spec_composes_runs_whose_plans_follow_their_axes() -> None:
    runs = ExperimentSpec.model_validate({**SMALL, "models": THREE}).run_specs()
    assert [r.model for r in runs] == ["baseline", "ps_feature", "ps_progressive"]
    assert runs[0].recipe == PRESETS["baseline"].recipe
    assert runs[1].recipe == Recipe(name="ps_feature", architecture="pixel_shuffle",
                                    loss="feature", latent_dim=1000)
    assert runs[2].recipe == Recipe(name="ps_progressive", architecture="pixel_shuffle",
                                    progressive=True, latent_dim=1000)
    assert [epoch_plan(plan(r)) for r in runs] == [
        [("phase1", 32), ("phase1", 32), ("phase2", 32)],
        [("phase1", 32), ("phase1", 32), ("phase2", 32)],
        [("phase1", 16), ("phase1", 16), ("phase2", 32)]]
    # What a driver does with the stored spec: the recipe comes back whole.
    stored = json.loads(json.dumps(runs[2].model_dump(mode="json")))
    assert RunSpec.model_validate(stored) == runs[2]
    assert stored["recipe"]["progressive"] is True
    assert runs[1].fixed_lr == 1e-3 and runs[1].pretrained is False  # no study LR: default


def test_a_run_spec_stored_before_recipes_gets_its_presets_recipe() -> None:
    old = {"model": "pretrained_resnet", "dataset": "synthetic", "epochs": 3}
    spec = RunSpec.model_validate(old)
    assert spec.recipe == PRESETS["pretrained_resnet"].recipe
    assert spec.recipe.encoder_weights == "imagenet" and spec.effective_latent_dim == 1024
    assert spec.fixed_lr == 1e-3  # synthetic: none of the study's LRs
    with pytest.raises(ValidationError, match="recipe"):
        RunSpec.model_validate({**old, "model": "ps_feature"})  # not a preset, no recipe
    with pytest.raises(ValidationError, match="is not its recipe's name"):
        RunSpec.model_validate({**old, "recipe": PRESETS["baseline"].recipe.model_dump()})


@pytest.mark.parametrize("recipe,field,words", [
    ({"name": "baseline", "architecture": "conv"}, "name", "name of a catalog variant"),
    ({"name": "x", "architecture": "unet"}, "architecture",
     "unknown architecture 'unet'; valid: conv, pixel_shuffle, resnet, factorized_prior"),
    ({"name": "x", "architecture": "conv", "loss": "l1"}, "loss",
     "Input should be 'mse', 'feature' or 'rate_distortion'"),
    ({"name": "x", "architecture": "conv", "encoder_weights": "coco"}, "encoder_weights",
     "Input should be 'none' or 'imagenet'"),
    ({"name": "x", "architecture": "resnet", "progressive": True}, "progressive",
     "architecture resnet cannot change its output size (those that can: conv, "
     "pixel_shuffle)"),
    ({"name": "x", "architecture": "conv", "encoder_weights": "imagenet"}, "encoder_weights",
     "architecture conv has no ImageNet encoder body (those with one: resnet)"),
    ({"name": "x", "architecture": "pixel_shuffle", "loss": "rate_distortion"}, "loss",
     "which architecture pixel_shuffle has not (those with one: factorized_prior)"),
    ({"name": "x", "architecture": "factorized_prior"}, "loss",
     "train it with loss rate_distortion"),
    ({"name": "X y", "architecture": "conv"}, "name", "String should match pattern"),
    ({"name": "x", "architecture": "conv", "colour": "red"}, "colour",
     "Extra inputs are not permitted"),
])
def test_a_recipe_that_cannot_work_is_refused_naming_its_field(
        recipe: dict, field: str, words: str) -> None:
    with pytest.raises(ValidationError) as refused:
        ExperimentSpec.model_validate({**SMALL, "models": ["baseline", recipe]})
    errors = [e for e in refused.value.errors() if e["loc"][:2] == ("models", 1)]
    assert [e["loc"] for e in errors] == [("models", 1, field)], refused.value.errors()
    assert words in errors[0]["msg"]


def test_names_and_refs_are_checked_over_the_whole_list() -> None:
    for models, loc, words in [
            (["vae"], ("models", 0), "unknown variant 'vae'; valid: baseline, pixel_shuffle"),
            ([3], ("models", 0), "a variant's name (GET /catalog) or an inline recipe"),
            ([{"name": "a", "architecture": "conv"}, {"name": "a", "architecture": "conv"}],
             ("models", 1), "models lists 'a' twice (first at 0)"),
            (["baseline", "pixel_shuffle", "baseline"], ("models", 2),
             "models lists 'baseline' twice (first at 0)"),
            ([{"name": "a", "architecture": "conv", "progressive": "yes"}],
             ("models", 0, "progressive"), "Input should be a valid boolean")]:
        with pytest.raises(ValidationError) as refused:
            ExperimentSpec.model_validate({**SMALL, "models": models})
        assert [(e["loc"], words in e["msg"]) for e in refused.value.errors()] == \
            [(loc, True)], refused.value.errors()


def test_lambdas_and_expectations_follow_composed_recipes() -> None:
    small_fp = {"name": "fp_small", "architecture": "factorized_prior",
                "loss": "rate_distortion", "latent_dim": 64}
    spec = ExperimentSpec.model_validate({
        **SMALL, "models": ["baseline", small_fp], "lambdas": [0.01, 0.1],
        "expect": {"fp_small/synthetic": {"bpp": "< 8"}}})
    assert [(r.model, r.rd_lambda, r.effective_latent_dim) for r in spec.run_specs()] == [
        ("baseline", None, 1000), ("fp_small", 0.01, 64), ("fp_small", 0.1, 64)]
    assert spec.grid_text() == ("2 models × 1 datasets × 1 latent sizes × 1 seeds, "
                                "fp_small × 2 lambdas")
    assert [str(b) for b in spec.bounds("fp_small", "synthetic")] == ["bpp < 8"]


def test_the_api_refuses_a_composed_recipe_by_field_and_filters_by_its_name(
        client: TestClient) -> None:
    bad = {**SMALL, "models": ["baseline", {"name": "rn", "architecture": "resnet",
                                            "progressive": True}]}
    for params in ({"dry_run": True}, {}):
        r = client.post(f"{API}/experiments", params=params, json=bad)
        assert r.status_code == 422
        assert [e["loc"] for e in r.json()["detail"]] == [["body", "models", 1, "progressive"]]
    assert client.get(f"{API}/experiments").json()["items"] == []

    created = client.post(f"{API}/experiments", json={**SMALL, "models": THREE}).json()
    assert [(r["model"], r["dataset"]) for r in created["runs"]] == [
        ("baseline", "synthetic"), ("ps_feature", "synthetic"), ("ps_progressive", "synthetic")]
    run = client.get(f"{API}/runs/{created['runs'][1]['id']}").json()
    assert run["spec"]["recipe"] == {"name": "ps_feature", "architecture": "pixel_shuffle",
                                     "loss": "feature", "progressive": False,
                                     "encoder_weights": "none", "latent_dim": 1000, "lr": {},
                                     "plugin": None}
    # A composed recipe is known by its stored runs; a name nothing carries is refused.
    items = client.get(f"{API}/runs", params={"model": "ps_feature"}).json()["items"]
    assert [i["id"] for i in items] == [created["runs"][1]["id"]]
    listed = client.get(f"{API}/experiments", params={"model": "ps_progressive"}).json()
    assert [e["id"] for e in listed["items"]] == [created["id"]]
    r = client.get(f"{API}/runs", params={"model": ["ps_feature", "ps_missing"]})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "model", 1]


def _overrides(cls: type, method: str) -> bool:
    return getattr(cls, method) is not getattr(Autoencoder, method)


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_each_architectures_declared_capabilities_are_its_classs(name: str) -> None:
    info = ARCHITECTURES[name]
    model = get_architecture(name, latent_dim=8)
    cls = type(model)
    assert info.resizable == _overrides(cls, "set_output_size")
    assert (info.pretrained_body is not None) == _overrides(cls, "load_encoder_weights") \
        == _overrides(cls, "freeze_encoder_body")
    assert info.layer_groups == _overrides(cls, "layer_groups")
    assert info.entropy_model == cls.has_entropy_model
    if not info.resizable:
        with pytest.raises(ValueError, match="cannot change its output size"):
            model.set_output_size(16)


def test_pixel_shuffle_trains_at_16_px_with_the_same_parameters() -> None:
    torch.manual_seed(0)
    model = build_model(Recipe(name="p", architecture="pixel_shuffle", progressive=True),
                        pretrained=False).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        full = model.decoder(model.encoder(x))
        model.set_output_size(16)
        half = model.decoder(model.encoder(x))
        # The small stage's last block is the full one's sub-pixels averaged 2×2, before
        # the same blur: check it on that block alone.
        block = model.decoder[4]
        y = model.decoder[:4](model.encoder(x))
        block.upsample = True
        shuffled = block.shuffle(torch.relu(block.conv(y)))
        expected = block.blur(block.pad(torch.nn.functional.avg_pool2d(shuffled, 2)))
    assert full.shape == (2, 3, 32, 32) and half.shape == (2, 3, 16, 16)
    assert torch.allclose(model.decoder[5](expected), half, atol=1e-6)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.slow
@pytest.mark.parametrize("recipe,method,plan_", [
    (Recipe(name="ps_small", architecture="pixel_shuffle", progressive=True, latent_dim=64),
     "range_test", [(1, "phase1", 16), (2, "phase2", 32)]),
    (Recipe(name="fp_small", architecture="factorized_prior", loss="rate_distortion",
            latent_dim=64, lr={"synthetic": 2e-3}), "fixed",
     [(1, "phase1", 32), (2, "phase2", 32)]),
])
def test_a_composed_recipe_runs_the_pipeline(recipe: Recipe, method: str,
                                             plan_: list[tuple[int, str, int]]) -> None:
    """In-process (no Ray): the plan, the LR, the measured bytes and the gallery of
    composed runs — pixel shuffle at 16 then 32 px with the range test, and a small
    factorised prior on its own LR with the fixed method (the feature loss and Tune: on Ray,
    tests/models/test_plugins.py)."""
    recipe = resolve(recipe)
    spec = RunSpec(model=recipe.name, recipe=recipe, dataset="synthetic", epochs=2,
                   batch_size=16, pretrained=False, gallery_samples=4,
                   lr_search={"method": method, "range_test_steps": 12},
                   data={"train_limit": 32, "test_limit": 8}, classifier={"enabled": False},
                   compression={"codecs": []}, resources={"gpus_per_run": 0, "cpus_per_run": 1})
    store = MemoryStore()
    env = RunEnv(data_root="/unused", weights_dir="/unused", allow_download=False)
    assert run_pipeline(spec, store, LocalSteps(env)), store.error
    assert [(e.epoch, e.phase, e.size) for e in store.epochs] == plan_
    assert store.measures is not None
    assert store.measures.latent_dim == recipe.latent_dim
    assert store.measures.bytes_per_image == len(store.artifacts["latents-test.bin"]) / 8
    assert json.loads(store.artifacts[GALLERY_META])["count"] == 4
    if method == "fixed":
        assert store.lr == 2e-3  # the recipe's own LR for the dataset
        assert json.loads(store.artifacts["compression.json"])["coder"] == "factorized_prior"
    else:
        assert len(store.trials) == 12 and sum(t.chosen for t in store.trials) == 1
    saved = torch.load(io.BytesIO(store.artifacts["model.pt"]), weights_only=False)
    assert Recipe.model_validate(saved["recipe"]) == recipe
