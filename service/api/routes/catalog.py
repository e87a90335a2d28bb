"""/catalog: the variants and datasets a spec may name."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter

from models.catalog import DATASETS, VARIANTS
from models.dataset_files import is_available
from service.api.deps import ReadAccess, SettingsDep
from service.api.schemas import Catalog, DatasetOut, VariantOut

router = APIRouter(tags=["catalog"], dependencies=[ReadAccess])


@router.get("/catalog", response_model=Catalog)
def catalog(settings: SettingsDep) -> Catalog:
    root = Path(settings.data_path)
    return Catalog(
        variants=[VariantOut(name=v.name, title=v.title, description=v.description,
                             latent_dim=v.latent_dim, params=v.params,
                             needs_pretrained_weights=v.needs_pretrained_weights,
                             seed_lr=v.seed_lr) for v in VARIANTS.values()],
        datasets=[DatasetOut(name=d.name, title=d.title, description=d.description,
                             num_classes=d.num_classes, train_size=d.train_size,
                             test_size=d.test_size, available=is_available(d.name, root))
                  for d in DATASETS.values()],
    )
