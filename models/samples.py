"""Sample figures and the reconstruction gallery of a run.

Two products, both on the *fixed sample set* of a dataset: the first images of its test
split (``load_dataset`` takes ``test_limit`` images from the front, so every run of a
dataset sees the same ones, whatever its limit):

- :func:`sample_grid`: the legacy 4-pair figure (input left, reconstruction right);
- :func:`reconstruct_gallery`: what galleries are composed from without re-running
  anything: the inputs and the model's reconstructions as lossless uint8 PNG strips, and
  each tile's PSNR.

Gallery tiles are in *model space*: 3×32×32 images as :func:`models.data.to_float` feeds
them to the model (MNIST's grey copied to three channels and resized 28→32 bilinearly),
values clamped to [0, 1] and stored as ``round(x · 255)``. A strip holds tile ``i`` at
``x = 32·i`` (height 32, RGB), so any reader crops tiles by arithmetic.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.utils import make_grid

from models.data import ImageSet, normalize, to_float

# The same test images for every model of a dataset, so figures compare side by side.
SAMPLE_INDICES = (1, 2, 3, 4)
FIT = 256  # px: the box whole images (data evaluated whole) are scaled to fit in galleries
GALLERY_FORMAT = 1  # the layout version written into gallery.json


def fit(image: torch.Tensor, box: int = FIT) -> torch.Tensor:
    """(3, H, W) float → (3, box, box): scaled to fit (aspect kept, bilinear with
    antialiasing; never enlarged) at the top left, black beyond."""
    h, w = image.shape[1:]
    scale = min(1.0, box / max(h, w))
    hh, ww = max(1, round(h * scale)), max(1, round(w * scale))
    small = image if (hh, ww) == (h, w) else torch.nn.functional.interpolate(
        image[None], size=(hh, ww), mode="bilinear", antialias=True,
        align_corners=False)[0].clamp(0.0, 1.0)
    out = image.new_zeros(3, box, box)
    out[:, :hh, :ww] = small
    return out


@torch.no_grad()
def whole_samples(model: nn.Module, images: ImageSet, indices: Sequence[int], crop: int, *,
                  device: torch.device | str = "cpu"
                  ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Images ``indices`` whole, (3, H, W) in [0, 1], and ``model``'s reconstructions of
    them coded as ``crop`` tiles (``models.tiles``), on the CPU."""
    from models.metrics import reconstruct_tiles
    from models.tiles import from_tiles, to_tiles

    chosen = images.subset(torch.tensor(list(indices)))
    tiles, tiling = to_tiles(chosen, crop)
    out = from_tiles(reconstruct_tiles(model, tiles, device=torch.device(device)), tiling)
    return [to_float(chosen.image(i)[None], None)[0] for i in range(len(chosen))], out


@torch.no_grad()
def sample_grid(model: nn.Module, images: ImageSet, *, indices: Sequence[int] = SAMPLE_INDICES,
                device: torch.device | str = "cpu", scale: int = 4,
                whole_crop: int | None = None, size: int = 32) -> bytes:
    """PNG bytes of a len(indices) × 2 grid (input, reconstruction), upscaled ``scale``×
    (with ``whole_crop``: whole images coded as tiles, each scaled to fit :data:`FIT`)."""
    indices = [i for i in indices if i < len(images)]
    if not indices:
        raise ValueError("no sample index falls inside the image set")
    model.eval()
    if whole_crop is not None:
        xs, outs = whole_samples(model, images, indices, whole_crop, device=device)
        x = torch.stack([fit(i) for i in xs])
        out = torch.stack([fit(o) for o in outs])
        scale = 1
    else:
        x = to_float(images.images[torch.tensor(indices)], size, device)
        out = model(normalize(x)).float().clamp(0.0, 1.0)
    pairs = torch.stack([x, out], dim=1).flatten(0, 1)  # input, output, input, output…
    grid = make_grid(pairs.cpu(), nrow=2, padding=2, pad_value=1.0)
    array = (grid.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    img = Image.fromarray(array)
    img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] → uint8 as stored in gallery tiles: ``round(x · 255)``."""
    return (x.clamp(0.0, 1.0) * 255).round().to(torch.uint8)


def strip_png(x: torch.Tensor) -> bytes:
    """(N, 3, H, W) float images in [0, 1] → one lossless RGB PNG, H × (N·W), tile ``i``
    at ``x = i·W``."""
    n, c, h, w = x.shape
    if c != 3:
        raise ValueError(f"gallery tiles are RGB, got {c} channels")
    strip = to_uint8(x).cpu().permute(2, 0, 3, 1).reshape(h, n * w, 3)  # (H, N·W, 3)
    buffer = io.BytesIO()
    Image.fromarray(strip.numpy()).save(buffer, format="PNG")
    return buffer.getvalue()


def read_strip(png: bytes, tile: int = 32) -> torch.Tensor:
    """A strip written by :func:`strip_png` → (N, 3, tile, tile) uint8."""
    array = torch.from_numpy(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).copy())
    h, width, _ = array.shape
    if h != tile or width % tile:
        raise ValueError(f"a gallery strip is {tile} px high and a multiple of {tile} wide, "
                         f"got {width}×{h}")
    return array.reshape(h, width // tile, tile, 3).permute(1, 3, 0, 2).contiguous()


def tile_psnr(inputs: torch.Tensor, outputs: torch.Tensor) -> list[float | None]:
    """Per-tile PSNR in dB, ``10·log10(1 / MSE)`` with the MSE over the tile's 3×H×W
    values of the float tensors (clamped output vs input, before the uint8 rounding that
    storage applies), in double precision; None where the MSE is 0 (an exact copy)."""
    mse = (outputs.double() - inputs.double()).pow(2).flatten(1).mean(1)
    return [None if m == 0 else 10.0 * math.log10(1.0 / m) for m in mse.tolist()]


@dataclass(frozen=True)
class GalleryArtifacts:
    """A run's reconstructions of its dataset's fixed sample set, ready to store."""

    inputs_png: bytes  # the first ``count`` test images in model space
    reconstructions_png: bytes  # the model's output for exactly those images
    meta: dict[str, object]  # count, layout, per-tile PSNR and MSE


@torch.no_grad()
def reconstruct_samples(model: nn.Module, images: ImageSet, count: int, *,
                        device: torch.device | str = "cpu", size: int = 32
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``count`` images (model space, (N, 3, size, size) in [0, 1]) and the
    model's clamped reconstructions of them, computed as one batch in eval mode."""
    if count < 1:
        raise ValueError("count must be at least 1")
    n = min(count, len(images))
    if n == 0:
        raise ValueError("the image set is empty")
    model.eval()
    x = to_float(images.images[:n], size, device)
    out = model(normalize(x)).float().clamp(0.0, 1.0)
    return x, out


def reconstruct_gallery(model: nn.Module, images: ImageSet, count: int, *,
                        dataset: str, device: torch.device | str = "cpu",
                        whole_crop: int | None = None, size: int = 32) -> GalleryArtifacts:
    """The gallery artifacts of ``model`` on the first ``count`` of ``images`` (the test
    split): input and reconstruction strips (lossless PNG) and per-tile PSNR/MSE. With
    ``whole_crop`` each image is coded whole as tiles, its PSNR and MSE taken over its
    real pixels, and its tile in the strips is the image scaled to fit :data:`FIT` px
    (``sizes`` gives each image's real (H, W), ``fitted`` the scaled one's)."""
    extra: dict[str, object] = {}
    if whole_crop is not None:
        n = min(count, len(images))
        xs, outs = whole_samples(model, images, range(n), whole_crop, device=device)
        mse = [float((o.double() - i.double()).pow(2).mean()) for i, o in zip(xs, outs,
                                                                              strict=True)]
        psnr = [None if m == 0 else 10.0 * math.log10(1.0 / m) for m in mse]
        x = torch.stack([fit(i) for i in xs])
        out = torch.stack([fit(o) for o in outs])
        scale = [min(1.0, FIT / max(i.shape[1:])) for i in xs]
        extra = {"sizes": [list(i.shape[1:]) for i in xs],
                 "fitted": [[max(1, round(i.shape[1] * f)), max(1, round(i.shape[2] * f))]
                            for i, f in zip(xs, scale, strict=True)],
                 "crop": whole_crop, "whole": True}
    else:
        x, out = reconstruct_samples(model, images, count, device=device, size=size)
        mse = (out.double() - x.double()).pow(2).flatten(1).mean(1).tolist()
        psnr = tile_psnr(x, out)
    meta: dict[str, object] = {
        "format": GALLERY_FORMAT,
        "dataset": dataset,
        "split": "test",
        "indices": list(range(x.shape[0])),
        "count": x.shape[0],
        "tile": {"channels": 3, "height": x.shape[2], "width": x.shape[3]},
        "layout": "one row; tile i at x = i·width; uint8 = round(clamp(x, 0, 1)·255)",
        "psnr_db": psnr,
        "mse": mse,
        "psnr_definition": "10·log10(1/MSE), MSE over the tile's 3×H×W float values "
                           "(clamped output vs input) before uint8 rounding"
                           + (" — of the whole image at its real size, before scaling"
                              if whole_crop is not None else ""),
        **extra,
    }
    return GalleryArtifacts(strip_png(x), strip_png(out), meta)
