"""The experiment spec: what a user POSTs. Unknown fields are refused; every default is
the study's unless better practice says otherwise (validation split held out of train)."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.catalog import DATASETS, VARIANTS

VariantName = Literal[tuple(VARIANTS)]  # type: ignore[valid-type]
DatasetName = Literal[tuple(DATASETS)]  # type: ignore[valid-type]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LrSearch(_Strict):
    method: Literal["tune", "range_test", "fixed"] = Field(
        default="tune", description="tune: Ray Tune + ASHA over [min_lr, max_lr]; range_test: "
        "the study's LR range test; fixed: use lr (default: the study's hand-picked one)")
    num_samples: int = Field(default=8, ge=1, le=64, description="Tune trials per run")
    min_lr: float = Field(default=1e-5, gt=0, lt=10)
    max_lr: float = Field(default=1e-1, gt=0, le=10)
    budget_epochs: int = Field(default=2, ge=1, le=20, description="epochs per Tune trial")
    range_test_steps: int = Field(default=100, ge=10, le=1000)
    lr: float | None = Field(default=None, gt=0, le=10, description="for method=fixed")

    @model_validator(mode="after")
    def _range(self) -> Self:
        if self.min_lr >= self.max_lr:
            raise ValueError("min_lr must be below max_lr")
        return self


class DataOptions(_Strict):
    train_limit: int | None = Field(default=None, ge=16, description="cap on training images")
    test_limit: int | None = Field(default=None, ge=1, description="first N test images")
    validation: Literal["holdout", "test"] = Field(
        default="holdout", description="holdout: 10% of train; test: the study's way")
    augment: bool = True


class Resources(_Strict):
    gpus_per_run: float = Field(default=1.0, ge=0, le=8, description="fractional allowed")
    cpus_per_run: float = Field(default=1.0, gt=0, le=64)


class ClassifierBudget(_Strict):
    enabled: bool = True
    arch: Literal["resnet34", "small"] = "resnet34"
    frozen_epochs: int = Field(default=11, ge=0, le=100)
    unfrozen_epochs: int = Field(default=10, ge=0, le=100)
    pretrained: bool = True


class ExperimentSpec(_Strict):
    name: str = Field(default="", max_length=200)
    models: list[VariantName] = Field(min_length=1, description="variant names (GET /catalog)")
    datasets: list[DatasetName] = Field(min_length=1)
    epochs: int = Field(default=15, ge=1)
    batch_size: int = Field(default=128, ge=1, le=4096)
    latent_dim: int | None = Field(default=None, ge=1, le=8192)
    schedule: Literal["seed", "one_cycle"] = "seed"
    lr_search: LrSearch = Field(default_factory=LrSearch)
    data: DataOptions = Field(default_factory=DataOptions)
    resources: Resources = Field(default_factory=Resources)
    classifier: ClassifierBudget = Field(default_factory=ClassifierBudget)
    pretrained: bool = Field(default=True, description="ImageNet weights where a variant "
                             "uses them; false: random init (offline-friendly)")
    seed: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _unique(self) -> Self:
        for field in ("models", "datasets"):
            values = getattr(self, field)
            if len(set(values)) != len(values):
                raise ValueError(f"{field} lists a name twice")
        return self

    def grid(self) -> list[tuple[str, str]]:
        """(model, dataset) of every run, in a stable order."""
        return [(m, d) for d in self.datasets for m in self.models]
