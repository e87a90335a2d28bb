"""What one run needs, derived from the experiment spec (a plain dict: JSON in, no DB)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from models.catalog import get_variant


@dataclass(frozen=True)
class RunRequest:
    run_id: int
    experiment_id: int
    model: str
    dataset: str
    spec: dict[str, Any]
    data_root: str
    weights_dir: str

    @property
    def name(self) -> str:
        return f"e{self.experiment_id}-r{self.run_id}-{self.model}-{self.dataset}"

    @property
    def default_lr(self) -> float:
        """The study's hand-picked phase-2 LR, the `fixed` method's default."""
        fixed = self.spec["lr_search"].get("lr")
        return fixed or get_variant(self.model).seed_lr.get(self.dataset, 1e-3)

    def train_config(self, lr: float | None = None, epochs: int | None = None) -> Any:
        from models.training import TrainConfig

        s = self.spec
        return TrainConfig(
            self.model, epochs=epochs or s["epochs"], batch_size=s["batch_size"],
            lr=lr or self.default_lr, schedule=s["schedule"], latent_dim=s.get("latent_dim"),
            augment=s["data"]["augment"], pretrained=s["pretrained"],
            weights_dir=self.weights_dir, seed=s["seed"],
        )

    def load_data(self) -> Any:
        from models.data import load_dataset

        d = self.spec["data"]
        return load_dataset(self.dataset, self.data_root, train_limit=d.get("train_limit"),
                            test_limit=d.get("test_limit"), validation=d["validation"],
                            seed=self.spec["seed"])

    def classifier_key(self) -> str:
        """Runs share a classifier when dataset, data limits and budget agree."""
        c = self.spec["classifier"]
        d = self.spec["data"]
        basis = {"dataset": self.dataset, "classifier": c, "train_limit": d.get("train_limit"),
                 "test_limit": d.get("test_limit"), "seed": self.spec["seed"]}
        digest = hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()[:16]
        return f"{self.dataset}-{c['arch']}-{digest}"
