"""``synthetic``: a CIFAR-shaped, labelled dataset generated offline — 10 shape classes
on random colours, sizes and places, 3×32×32, deterministic in its seed (numpy + Pillow)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from models.datasets.base import DatasetEntry, DatasetInfo, RawSplit

if TYPE_CHECKING:
    from PIL import ImageDraw

SIDE = 32
TRAIN_SEED, TEST_SEED = 1, 2


# The class names, in label order: what _draw_shape draws for each label.
SHAPES = ("disc", "square", "triangle", "ring", "plus", "cross", "bar", "frame", "diamond",
          "two ovals")


def _draw_shape(draw: ImageDraw.ImageDraw, label: int, cx: float, cy: float, r: float,
                fill: tuple[int, int, int]) -> None:
    box = (cx - r, cy - r, cx + r, cy + r)
    w = max(2, round(r / 3))
    if label == 0:
        draw.ellipse(box, fill=fill)
    elif label == 1:
        draw.rectangle(box, fill=fill)
    elif label == 2:
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fill)
    elif label == 3:
        draw.ellipse(box, outline=fill, width=w)
    elif label == 4:
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=fill)
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=fill)
    elif label == 5:
        draw.line((cx - r, cy - r, cx + r, cy + r), fill=fill, width=w + 1)
        draw.line((cx - r, cy + r, cx + r, cy - r), fill=fill, width=w + 1)
    elif label == 6:
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=fill)
    elif label == 7:
        draw.rectangle(box, outline=fill, width=w)
    elif label == 8:
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fill)
    else:
        q = r / 2
        draw.ellipse((cx - r, cy - q, cx, cy + q), fill=fill)
        draw.ellipse((cx, cy - q, cx + r, cy + q), fill=fill)


def generate(n: int, seed: int) -> RawSplit:
    """``n`` 3×32×32 images of 10 shape classes on random colours; deterministic in seed."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    images = np.empty((n, SIDE, SIDE, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n)
    for i in range(n):
        bg = rng.integers(0, 256, size=3)
        fg = rng.integers(0, 256, size=3)
        while np.abs(fg - bg).sum() < 200:  # keep the shape visible
            fg = rng.integers(0, 256, size=3)
        r = rng.uniform(6, 12)
        cx, cy = rng.uniform(r, SIDE - r, size=2)
        img = Image.new("RGB", (SIDE, SIDE), tuple(int(v) for v in bg))
        _draw_shape(ImageDraw.Draw(img), int(labels[i]), cx, cy, r, tuple(int(v) for v in fg))
        images[i] = np.asarray(img)
    return RawSplit(images.transpose(0, 3, 1, 2), labels.astype(np.int64))


class Synthetic(DatasetEntry):
    info = DatasetInfo(
        "synthetic", "Synthetic shapes",
        "Generated offline by aelab: 10 shape classes, random colours, sizes and places.",
        num_classes=10, channels=3, native_size=(SIDE, SIDE), train_size=10_000,
        test_size=2_000, needs_files=False, classes=SHAPES)

    def load(self, root: Path, download: bool) -> tuple[RawSplit, RawSplit]:
        return (generate(self.info.train_size, TRAIN_SEED),
                generate(self.info.test_size, TEST_SEED))


SYNTHETIC = Synthetic()
