"""A tiny autoencoder and a tiny dataset, as aelab plugins.

``build(latent_dim)`` returns a module with ``encode(x)`` → (B, latent_dim) and
``decode(z)`` → (B, 3, 32, 32) for images x of shape (B, 3, 32, 32) in [0, 1].
``STRIPES`` is a ``models.datasets.DatasetEntry``. torch is imported only inside
``build`` (numpy here), so the plugin probe describes both without loading torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from models.datasets.base import DatasetEntry, DatasetInfo, RawSplit

if TYPE_CHECKING:
    from torch import nn


def build(latent_dim: int) -> nn.Module:
    """Two strided convs down to 8×8, a linear code, two transposed convs up."""
    from torch import nn  # here, not at the top: the API describes plugins without torch

    class TinyAE(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.enc = nn.Sequential(
                nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),  # (B, 8, 16, 16)
                nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),  # (B, 8, 8, 8)
                nn.Flatten(), nn.Linear(8 * 8 * 8, latent_dim))  # (B, latent)
            self.dec = nn.Sequential(
                nn.Linear(latent_dim, 8 * 8 * 8), nn.ReLU(), nn.Unflatten(1, (8, 8, 8)),
                nn.ConvTranspose2d(8, 8, 4, stride=2, padding=1), nn.ReLU(),  # (B, 8, 16, 16)
                nn.ConvTranspose2d(8, 3, 4, stride=2, padding=1), nn.Sigmoid())  # (B, 3, 32, 32)

        def encode(self, x):  # (B, 3, 32, 32) in [0, 1] → (B, latent)
            return self.enc(x)

        def decode(self, z):  # (B, latent) → (B, 3, 32, 32)
            return self.dec(z)

    return TinyAE()


build.title = "Tiny AE"  # type: ignore[attr-defined]
build.default_latent_dim = 16  # type: ignore[attr-defined]


def stripes(n: int, seed: int) -> RawSplit:
    """``n`` 3×32×32 images of horizontal (label 0) or vertical (label 1) stripes."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=n)
    period = rng.integers(2, 9, size=n)
    phase = np.arange(32)[None, :] % (2 * period[:, None]) < period[:, None]  # (n, 32)
    colour = rng.integers(0, 256, size=(n, 3, 1, 1))
    rows = np.where(labels[:, None, None] == 0, phase[:, :, None], phase[:, None, :])
    images = (rows[:, None] * colour).astype(np.uint8)  # (n, 3, 32, 32)
    return RawSplit(images, labels.astype(np.int64))


class Stripes(DatasetEntry):
    info = DatasetInfo("stripes", "Stripes", "Horizontal or vertical stripes, 3×32×32.",
                       num_classes=2, channels=3, native_size=(32, 32), train_size=600,
                       test_size=100, needs_files=False)

    def load(self, root: Path, download: bool) -> tuple[RawSplit, RawSplit]:
        return stripes(self.info.train_size, 1), stripes(self.info.test_size, 2)


STRIPES = Stripes()
