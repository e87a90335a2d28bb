"""/catalog: the variants and datasets a spec may name, and what this deployment holds."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter

from models.assets import WEIGHTS_URLS
from models.catalog import DATASETS, VARIANTS, DatasetInfo
from models.dataset_files import DatasetCheck, check_dataset
from service.api.deps import ReadAccess
from service.client.schemas import Catalog, DatasetOut, VariantOut, WeightsOut
from service.context import SettingsDep
from workers.preflight import weights_requirement

router = APIRouter(tags=["catalog"], dependencies=[ReadAccess])


def _dataset(d: DatasetInfo, check: DatasetCheck) -> DatasetOut:
    return DatasetOut(name=d.name, title=d.title, description=d.description,
                      num_classes=d.num_classes, train_size=d.train_size,
                      test_size=d.test_size, available=check.status == "available",
                      status=check.status, problems=list(check.problems))


@router.get("/catalog", response_model=Catalog, operation_id="get_catalog")
def catalog(settings: SettingsDep) -> Catalog:
    """Variants, datasets and pretrained weights. ``available``/``present`` describe the
    API host; on a cluster the workers may hold files it lacks (a run's preflight is the
    guarantee)."""
    root = Path(settings.data_path)
    weights = {}
    for name in WEIGHTS_URLS:
        need = weights_requirement(name, settings.weights_path)  # type: ignore[arg-type]
        weights[name] = WeightsOut(name=name, file=need.files[0], folder=need.folder,
                                   present=need.present, problem=need.problem)
    return Catalog(
        variants=[VariantOut(name=v.name, title=v.title, description=v.description,
                             latent_dim=v.latent_dim, params=v.params,
                             needs_pretrained_weights=v.needs_pretrained_weights,
                             pretrained_weights=[w for w in v.pretrained_weights],
                             pretrained_weights_present=all(
                                 weights[w].present for w in v.pretrained_weights),
                             seed_lr=v.seed_lr) for v in VARIANTS.values()],
        datasets=[_dataset(d, check_dataset(d.name, root)) for d in DATASETS.values()],
        weights=list(weights.values()),
        classifier_pretrained_weights_present=weights["resnet34"].present,
    )
