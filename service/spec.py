"""The experiment spec: what a user POSTs. It composes the run contract's option models
(``workers.spec``) and adds only what spans runs: the grid and the name. Unknown fields are
refused; every default is the study's unless better practice says otherwise (validation
split held out of train)."""

from __future__ import annotations

import unicodedata
from typing import Self

from pydantic import Field, ValidationInfo, field_validator, model_validator

from workers.spec import (
    MAX_SEED,
    RD_VARIANT,
    DatasetName,
    RunSpec,
    TrainingOptions,
    VariantName,
)


class ExperimentSpec(TrainingOptions):
    name: str = Field(default="", max_length=200,
                      description="free text without control characters (no newlines)")
    models: list[VariantName] = Field(min_length=1, description="variant names (GET /catalog)")
    datasets: list[DatasetName] = Field(min_length=1)
    latent_dim: int | None = Field(default=None, ge=1, le=8192,
                                   description="None: each variant's (1000, or 1024)")
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    lambdas: list[float] | None = Field(
        default=None, min_length=1, max_length=16,
        description=f"λ values of {RD_VARIANT}'s rate + λ·255²·MSE loss: each is one run "
        f"per dataset (the grid is models × datasets × lambdas, for {RD_VARIANT} only)")

    @field_validator("lambdas")
    @classmethod
    def _lambdas(cls, value: list[float] | None, info: ValidationInfo) -> list[float] | None:
        if value is None:
            return value
        if any(not (0 < v <= 100) for v in value):
            raise ValueError("each lambda must be > 0 and ≤ 100")
        if len(set(value)) != len(value):
            raise ValueError("lambdas lists a value twice")
        models = info.data.get("models")
        if models is not None and RD_VARIANT not in models:
            raise ValueError(f"lambdas apply to {RD_VARIANT} only, which models does not "
                             "list")
        return value

    @field_validator("name")
    @classmethod
    def _printable(cls, value: str) -> str:
        # Control characters (NUL, newline, tab, …) would forge lines in exports, and
        # PostgreSQL refuses NUL where SQLite stores it: both databases answer 422.
        bad = sorted({f"U+{ord(c):04X}" for c in value
                      if unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp")})
        if bad:
            raise ValueError(f"must not contain control characters ({', '.join(bad)})")
        return value

    @model_validator(mode="after")
    def _unique(self) -> Self:
        for field in ("models", "datasets"):
            values = getattr(self, field)
            if len(set(values)) != len(values):
                raise ValueError(f"{field} lists a name twice")
        return self

    def run_specs(self) -> list[RunSpec]:
        """One run spec per (model, dataset) — per (model, dataset, λ) for the
        rate-distortion variant when ``lambdas`` is given — in a stable order
        (dataset-major, then models, then lambdas)."""
        shared = TrainingOptions.model_fields.keys()
        options = {k: getattr(self, k) for k in shared}

        def lambdas(model: str) -> list[float | None]:
            return list(self.lambdas) if model == RD_VARIANT and self.lambdas else [None]

        return [RunSpec(model=m, dataset=d, latent_dim=self.latent_dim, seed=self.seed,
                        rd_lambda=lam, **options)
                for d in self.datasets for m in self.models for lam in lambdas(m)]
