"""Standard image codecs (JPEG, WebP; AVIF where Pillow has it) as baselines at the same
bytes as a model.

- Codecs encode the **native** image (MNIST: 28×28 grey, mode ``L``; CIFAR-10 and
  synthetic: 32×32 RGB). Sizes are **whole files**, headers included, as Pillow writes them.
- Distortion is measured in **one space for every row**: the decoded native image served
  exactly as the model's input is (:func:`models.data.to_float`: grey copied to three
  channels, 28→32 bilinear with align_corners=True), against the original served the same
  way — so a codec row and a model row of the results table compare like for like.
- :func:`match_size` picks a quality **per image** so that the *mean* file size matches a
  target bytes per image: it finds (binary search over the integer quality) the highest
  quality q whose mean size over the set is ≤ the target, then raises single images to q+1,
  in index order, whenever that brings the mean closer to the target. A target below the
  mean at the codec's lowest quality is reported as ``below_range`` (every image at that
  quality), above the mean at its highest as ``above_range``.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from PIL import Image, features

from models.data import ImageSet, to_float, uint8_images


@dataclass(frozen=True)
class CodecSpec:
    name: str
    title: str
    pil_format: str
    min_quality: int
    max_quality: int
    options: dict[str, object] = field(default_factory=dict)

    def available(self) -> bool:
        if self.name == "jpeg":
            return True
        return bool(features.check(self.name))


CODECS: dict[str, CodecSpec] = {
    c.name: c for c in (
        # Pillow's JPEG: libjpeg quality 1–100, 4:2:0 chroma subsampling for RGB by default.
        CodecSpec("jpeg", "JPEG", "JPEG", 1, 100),
        CodecSpec("webp", "WebP", "WEBP", 0, 100, {"method": 4}),
        # libavif through Pillow: ~10× slower than WebP per image, so opt-in (spec
        # ``compression.codecs``); speed 8 trades a little size for time.
        CodecSpec("avif", "AVIF", "AVIF", 0, 100, {"speed": 8}),
    )
}

MatchStatus = Literal["matched", "below_range", "above_range"]


def available_codecs() -> list[str]:
    """The codecs this Pillow build can write (JPEG always; WebP and AVIF when built in)."""
    return [name for name, spec in CODECS.items() if spec.available()]


def _spec(codec: str) -> CodecSpec:
    try:
        return CODECS[codec]
    except KeyError:
        raise KeyError(f"unknown codec {codec!r}; valid: {', '.join(CODECS)}") from None


def encode(image: torch.Tensor, codec: str, quality: int) -> bytes:
    """One uint8 (C, H, W) image (C = 1 grey or 3 RGB) → the codec's whole file."""
    spec = _spec(codec)
    if not spec.min_quality <= quality <= spec.max_quality:
        raise ValueError(f"{codec} quality must be in [{spec.min_quality}, "
                         f"{spec.max_quality}], got {quality}")
    if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"image must be uint8 (1|3, H, W), got {image.dtype} "
                         f"{tuple(image.shape)}")
    array = image.permute(1, 2, 0).numpy()
    pil = Image.fromarray(array[:, :, 0], "L") if image.shape[0] == 1 else \
        Image.fromarray(array, "RGB")
    buffer = io.BytesIO()
    pil.save(buffer, format=spec.pil_format, quality=int(quality), **spec.options)
    return buffer.getvalue()


def decode(data: bytes, channels: int = 3) -> torch.Tensor:
    """A codec file → uint8 (channels, H, W); ``channels`` 1 (grey) or 3 (RGB)."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    pil = Image.open(io.BytesIO(data))
    array = np.asarray(pil.convert("L" if channels == 1 else "RGB"))
    if channels == 1:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def decode_batch(files: list[bytes], channels: int) -> torch.Tensor:
    """Files → uint8 (N, channels, H, W)."""
    return torch.stack([decode(f, channels) for f in files])


def to_model_space(images: torch.Tensor, size: int = 32) -> torch.Tensor:
    """Native uint8 (N, C, H, W) → (N, 3, size, size) float in [0, 1], exactly as the
    model's input is served at crop ``size`` (:func:`models.data.to_float`)."""
    return to_float(images, size)


def whole_images(images: ImageSet | torch.Tensor) -> tuple[list[torch.Tensor], float]:
    """Each image at its real size, uint8 (C, H, W), and their mean H·W."""
    if isinstance(images, ImageSet) and images.sizes is not None:
        return ([images.image(i) for i in range(len(images))],
                float(images.pixels().float().mean()))
    x = uint8_images(images)
    return list(x), float(x.shape[2] * x.shape[3])


class _SizeCache:
    """Files of every image at each quality tried (each encoded once)."""

    def __init__(self, images: list[torch.Tensor], codec: str) -> None:
        self.images, self.codec = images, codec
        self.files: dict[int, list[bytes]] = {}

    def at(self, quality: int) -> list[bytes]:
        if quality not in self.files:
            self.files[quality] = [encode(img, self.codec, quality) for img in self.images]
        return self.files[quality]

    def mean(self, quality: int) -> float:
        files = self.at(quality)
        return sum(len(f) for f in files) / len(files)


@dataclass
class MatchResult:
    """A codec at a target mean size over a set of images."""

    codec: str
    target_bytes: float
    status: MatchStatus
    qualities: list[int]  # per image
    files: list[bytes]  # per image, whole files
    min_mean_bytes: float  # the mean at the lowest quality: the smallest reachable
    max_mean_bytes: float  # the mean at the highest quality
    pixels: float  # native H × W (the mean, when images differ in size)

    @property
    def sizes(self) -> list[int]:
        return [len(f) for f in self.files]

    @property
    def mean_bytes(self) -> float:
        return sum(self.sizes) / len(self.files)

    @property
    def bpp(self) -> float:
        return 8.0 * self.mean_bytes / self.pixels

    @property
    def relative_error(self) -> float:
        return abs(self.mean_bytes - self.target_bytes) / self.target_bytes


def match_size(images: ImageSet | torch.Tensor, codec: str, target_bytes: float
               ) -> MatchResult:
    """Per-image qualities whose mean whole-file size is closest to ``target_bytes``
    (see the module's docstring for the search and the statuses).

    Raises ValueError for non-uint8 images or a target ≤ 0, KeyError for an unknown codec.
    """
    x, pixels = whole_images(images)
    if not target_bytes > 0:
        raise ValueError(f"target bytes per image must be > 0, got {target_bytes}")
    spec = _spec(codec)
    cache = _SizeCache(x, codec)
    n = len(x)
    lo_q, hi_q = spec.min_quality, spec.max_quality
    lo_mean, hi_mean = cache.mean(lo_q), cache.mean(hi_q)

    def result(status: MatchStatus, qualities: list[int]) -> MatchResult:
        files = [cache.at(q)[i] for i, q in enumerate(qualities)]
        return MatchResult(codec, float(target_bytes), status, qualities, files, lo_mean,
                           hi_mean, pixels)

    if target_bytes < lo_mean:
        return result("below_range", [lo_q] * n)
    if target_bytes >= hi_mean:
        return result("above_range" if target_bytes > hi_mean else "matched", [hi_q] * n)
    # Invariant: mean(lo) ≤ target < mean(hi).
    a, b = lo_q, hi_q
    while b - a > 1:
        mid = (a + b) // 2
        if cache.mean(mid) <= target_bytes:
            a = mid
        else:
            b = mid
    qualities = [a] * n
    low, high = cache.at(a), cache.at(b)
    total = float(sum(len(f) for f in low))
    goal = target_bytes * n
    for i in range(n):
        delta = len(high[i]) - len(low[i])
        if abs(total + delta - goal) < abs(total - goal):
            qualities[i] = b
            total += delta
    return result("matched", qualities)


@dataclass(frozen=True)
class CurvePoint:
    """A codec at one quality for every image of a set."""

    codec: str
    quality: int
    bytes_per_image: float
    bpp: float
    files: list[bytes]


def curve_points(images: ImageSet | torch.Tensor, codec: str, qualities: list[int]
                 ) -> list[CurvePoint]:
    """The codec at each of ``qualities`` (one quality for all images): mean whole-file
    bytes per image and bpp over native pixels."""
    x, pixels = whole_images(images)
    out = []
    for q in qualities:
        files = [encode(img, codec, q) for img in x]
        mean = sum(len(f) for f in files) / len(files)
        out.append(CurvePoint(codec, q, mean, 8.0 * mean / pixels, files))
    return out


DEFAULT_CURVE_QUALITIES = (5, 15, 30, 50, 75, 95)
DEFAULT_CODECS = ("jpeg", "webp")


def psnr(mse: float) -> float:
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)
