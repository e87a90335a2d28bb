"""Images of any size at a model's crop: random crops to train on, and whole images as
tiles to evaluate.

A model takes ``crop``×``crop`` inputs (``data.crop``). An image larger than that trains
on random crops (:func:`draw_crops`); at evaluation it is cut into a grid of ``crop`` tiles
(:func:`to_tiles`), padded at its right and bottom edges by repeating its last row and
column, coded tile by tile, and put back together (:func:`from_tiles`) cut to its real
size, so the padding is never measured or counted as pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from models.images import ImageSet


@dataclass(frozen=True)
class Tiling:
    """Where each image's tiles are: image ``i``'s ``grid[i]`` = (rows, cols) tiles are
    ``tiles[start[i] : start[i] + rows·cols]`` in row-major order."""

    crop: int
    grid: list[tuple[int, int]]
    sizes: list[tuple[int, int]]  # each image's real (H, W)

    @property
    def start(self) -> list[int]:
        out, at = [], 0
        for rows, cols in self.grid:
            out.append(at)
            at += rows * cols
        return out

    @property
    def count(self) -> int:
        return sum(r * c for r, c in self.grid)


def padded(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(C, h, w) → (C, height, width), its last row and column repeated (h ≤ height)."""
    rows = torch.arange(height).clamp_(max=image.shape[1] - 1)
    cols = torch.arange(width).clamp_(max=image.shape[2] - 1)
    return image[:, rows][:, :, cols]


def to_tiles(images: ImageSet, crop: int) -> tuple[ImageSet, Tiling]:
    """Every image of ``images`` as ``crop`` tiles: uint8 (T, C, crop, crop) with each
    tile's image label, and the :class:`Tiling` that puts them back."""
    tiles, labels, grid, sizes = [], [], [], []
    for i in range(len(images)):
        h, w = images.size_of(i)
        rows, cols = math.ceil(h / crop), math.ceil(w / crop)
        x = padded(images.image(i), rows * crop, cols * crop)  # (C, rows·crop, cols·crop)
        c = x.shape[0]
        tiles.append(x.reshape(c, rows, crop, cols, crop).permute(1, 3, 0, 2, 4)
                     .reshape(rows * cols, c, crop, crop))
        labels.append(images.labels[i].expand(rows * cols))
        grid.append((rows, cols))
        sizes.append((h, w))
    return (ImageSet(torch.cat(tiles).contiguous(), torch.cat(labels).contiguous()),
            Tiling(crop, grid, sizes))


def from_tiles(tiles: torch.Tensor, tiling: Tiling) -> list[torch.Tensor]:
    """(T, C, crop, crop) tiles (any dtype) → each image, (C, H, W) at its real size."""
    if tiles.shape[0] != tiling.count:
        raise ValueError(f"{tiles.shape[0]} tiles for a tiling of {tiling.count}")
    out = []
    k = tiling.crop
    for start, (rows, cols), (h, w) in zip(tiling.start, tiling.grid, tiling.sizes,
                                           strict=True):
        t = tiles[start : start + rows * cols]
        c = t.shape[1]
        whole = t.reshape(rows, cols, c, k, k).permute(2, 0, 3, 1, 4).reshape(
            c, rows * k, cols * k)
        out.append(whole[:, :h, :w])
    return out


def crops_per_image(h: int, w: int, crop: int) -> int:
    """How many crops an epoch draws from an (h, w) image: as many as its area holds
    whole (at least one)."""
    return max(1, (h // crop) * (w // crop))


def draw_crops(images: ImageSet, crop: int, generator: torch.Generator) -> ImageSet:
    """:func:`crops_per_image` random ``crop``×``crop`` crops of each image (uniform
    positions within its real area; a side shorter than ``crop`` is padded as in
    :func:`padded`), each with its image's label: uint8 (N', C, crop, crop)."""
    out, labels = [], []
    for i in range(len(images)):
        h, w = images.size_of(i)
        x = images.image(i)
        if h < crop or w < crop:
            x = padded(x, max(h, crop), max(w, crop))
        hh, ww = x.shape[1], x.shape[2]
        n = crops_per_image(h, w, crop)
        ys = torch.randint(0, hh - crop + 1, (n,), generator=generator).tolist()
        xs = torch.randint(0, ww - crop + 1, (n,), generator=generator).tolist()
        out += [x[:, y : y + crop, z : z + crop] for y, z in zip(ys, xs, strict=True)]
        labels.append(images.labels[i].expand(n))
    return ImageSet(torch.stack(out).contiguous(), torch.cat(labels).contiguous())
