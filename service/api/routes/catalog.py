"""/catalog: the variants, architectures, losses and datasets a spec may name, where each
comes from (built-in, or a plugin's distribution and version), and what this deployment
holds. Plugins are described by the plugin probe (``models.plugins``): this process
imports none of them, and a plugin that fails to load is listed with its error."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from fastapi import APIRouter

from models.assets import WEIGHTS_URLS
from models.catalog import (
    ARCHITECTURES,
    LOSSES,
    PRESETS,
    ArchitectureInfo,
    Variant,
    plugin_variant_entries,
)
from models.datasets import (
    BUILT_IN,
    DatasetCheck,
    DatasetInfo,
    plugin_dataset_entries,
    plugin_datasets,
)
from models.datasets.folder import folder_entry, folder_names
from models.registry import Source
from service.api.deps import ReadAccess
from service.client.schemas import (
    ArchitectureOut,
    Catalog,
    DatasetOut,
    LossOut,
    RecipeOut,
    SourceOut,
    VariantOut,
    WeightsOut,
)
from service.context import SettingsDep
from workers.preflight import weights_requirement

router = APIRouter(tags=["catalog"], dependencies=[ReadAccess])


def _source(source: Source) -> SourceOut:
    return SourceOut(**asdict(source))


def _variant(v: Variant, weights: dict[str, WeightsOut]) -> VariantOut:
    r = v.recipe
    return VariantOut(
        name=v.name, title=v.title, description=v.description,
        recipe=RecipeOut(architecture=r.architecture, loss=r.loss, progressive=r.progressive,
                         encoder_weights=r.encoder_weights, latent_dim=r.latent_dim),
        latent_dim=v.latent_dim, params=v.params,
        needs_pretrained_weights=v.needs_pretrained_weights,
        pretrained_weights=list(v.pretrained_weights),
        pretrained_weights_present=all(weights[w].present for w in v.pretrained_weights),
        seed_lr=v.seed_lr, source=_source(v.source), available=True)


def _architecture(a: ArchitectureInfo) -> ArchitectureOut:
    return ArchitectureOut(
        name=a.name, title=a.title, description=a.description,
        default_latent_dim=a.default_latent_dim, params=a.params, resizable=a.resizable,
        pretrained_body=a.pretrained_body, layer_groups=a.layer_groups,
        entropy_model=a.entropy_model, source=_source(a.source), available=True,
        crop_stride=a.crop_stride)


def _dataset(d: DatasetInfo, check: DatasetCheck | None) -> DatasetOut:
    status = check.status if check else ("unchecked" if d.needs_files else "available")
    problems = list(check.problems) if check else (
        ["a plugin's files are checked on the node that trains (its code is not loaded "
         "here)"] if d.needs_files else [])
    available = status == "available"
    return DatasetOut(name=d.name, title=d.title, description=d.description,
                      num_classes=d.num_classes, channels=d.channels,
                      native_size=list(d.native_size) if d.native_size else None,
                      train_size=d.train_size, test_size=d.test_size,
                      min_size=list(d.size_range[0]) if d.size_range else None,
                      max_size=list(d.size_range[1]) if d.size_range else None,
                      classes=list(d.classes), split=d.split,
                      available=available, status=status, problems=problems,
                      source=_source(d.source),
                      error=None if available else "; ".join(problems) or status)


@router.get("/catalog", response_model=Catalog, operation_id="get_catalog")
def catalog(settings: SettingsDep) -> Catalog:
    """Variants (the presets, then plugins'), architectures, losses, datasets (built-in,
    plugins', then the folders under the datasets root and at registered URLs, each
    image decoded once) and pretrained weights. ``available``/``present`` describe the
    API host; on a cluster the workers may hold files it lacks (a run's preflight is the
    guarantee)."""
    root = Path(settings.data_path)
    weights = {}
    for name in WEIGHTS_URLS:
        need = weights_requirement(name, settings.weights_path)  # type: ignore[arg-type]
        weights[name] = WeightsOut(name=name, file=need.files[0], folder=need.folder,
                                   present=need.present, problem=need.problem)
    variants = [_variant(v, weights) for v in PRESETS.values()]
    architectures = [_architecture(a) for a in ARCHITECTURES.values()]
    for p in plugin_variant_entries():
        name = p.described.entry.name
        if p.variant is not None and p.architecture is not None:
            variants.append(_variant(p.variant, weights))
            architectures.append(_architecture(p.architecture))
            continue
        source = _source(p.described.entry.source)
        variants.append(VariantOut(
            name=name, title=name, description="", recipe=None, latent_dim=None, params=None,
            needs_pretrained_weights=False, pretrained_weights=[],
            pretrained_weights_present=True, seed_lr={}, source=source, available=False,
            error=p.problem))
        architectures.append(ArchitectureOut(
            name=name, title=name, description="", default_latent_dim=None, params=None,
            resizable=False, pretrained_body=None, layer_groups=False, entropy_model=False,
            source=source, available=False, error=p.problem))
    datasets = [_dataset(e.info, e.check(root)) for e in BUILT_IN.values()]
    shadowed = set(BUILT_IN) | set(plugin_datasets())
    for name in folder_names():
        if name not in shadowed and (folder := folder_entry(name)) is not None:
            datasets.append(_dataset(folder.info, folder.check(root)))
    for info, problem, described in plugin_dataset_entries():
        if info is not None:
            datasets.append(_dataset(info, None))
        else:
            name = described.entry.name
            datasets.append(DatasetOut(
                name=name, title=name, description="", num_classes=None, channels=None,
                native_size=None, train_size=None, test_size=None, available=False,
                min_size=None, max_size=None, classes=[], split="",
                status="broken", problems=[problem or ""],
                source=_source(described.entry.source), error=problem))
    return Catalog(
        variants=variants, architectures=architectures,
        losses=[LossOut(name=x.name, title=x.title, description=x.description,
                        weights=list(x.weights), needs_entropy_model=x.needs_entropy_model)
                for x in LOSSES.values()],
        datasets=datasets, weights=list(weights.values()),
        classifier_pretrained_weights_present=weights["resnet34"].present,
    )
