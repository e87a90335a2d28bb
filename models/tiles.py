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


def crop_origins(images: ImageSet, crop: int, generator: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An epoch's random crops of ``images``, drawn on the CPU ``generator``: (owner, ys,
    xs), each int64 (N',) on the host — crop j is image ``owner[j]``'s ``crop``×``crop``
    square with its top-left corner at (``ys[j]``, ``xs[j]``), :func:`crops_per_image` of
    each image, uniform within its real area (a side shorter than ``crop``: at 0). Draws,
    per image in order, its ys then its xs: the stream :func:`draw_crops` has always drawn.
    """
    owners, ys, xs = [], [], []
    for i in range(len(images)):
        h, w = images.size_of(i)
        n = crops_per_image(h, w, crop)
        ys.append(torch.randint(0, max(h, crop) - crop + 1, (n,), generator=generator))
        xs.append(torch.randint(0, max(w, crop) - crop + 1, (n,), generator=generator))
        owners.append(torch.full((n,), i, dtype=torch.long))
    if not owners:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty, empty
    return torch.cat(owners), torch.cat(ys), torch.cat(xs)


def cut_crops(images: torch.Tensor, sizes: torch.Tensor, owner: torch.Tensor,
              ys: torch.Tensor, xs: torch.Tensor, crop: int) -> torch.Tensor:
    """The crops of :func:`crop_origins` cut from ``images`` (N, C, H, W), any dtype, on
    its device (the index tensors are moved there): (N', C, crop, crop). ``sizes`` (N, 2)
    int64 holds each image's real (H, W); rows and columns past them repeat its last row
    and column, as :func:`padded` does — one gather, no Python loop over images."""
    device = images.device
    owner, ys, xs, sizes = (t.to(device) for t in (owner, ys, xs, sizes))
    steps = torch.arange(crop, device=device)
    real = sizes[owner]  # (N', 2)
    rows = torch.minimum(ys[:, None] + steps, real[:, :1] - 1)  # (N', crop)
    cols = torch.minimum(xs[:, None] + steps, real[:, 1:] - 1)
    channels = torch.arange(images.shape[1], device=device)
    return images[owner[:, None, None, None], channels[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]


def draw_crops(images: ImageSet, crop: int, generator: torch.Generator) -> ImageSet:
    """:func:`crops_per_image` random ``crop``×``crop`` crops of each image (uniform
    positions within its real area; a side shorter than ``crop`` is padded as in
    :func:`padded`), each with its image's label: uint8 (N', C, crop, crop)."""
    owner, ys, xs = crop_origins(images, crop, generator)
    return ImageSet(cut_crops(images.images, images.real_sizes(), owner, ys, xs, crop)
                    .contiguous(), images.labels[owner].contiguous())
