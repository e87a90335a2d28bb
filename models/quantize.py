"""Uniform scalar quantisation of a run's latent code, and decoding from the quantised code.

A float32 latent of D values costs 4·D bytes: that is not a compressed image. To measure
what an image really costs, each run's latent is quantised to ``bits`` bits per value
(4, 6, 8 or 16; 8 by default) with **one scale and one offset per run**, fitted on the
*training* latents only:

    symbol = clamp(round((z − offset) / scale), 0, 2^bits − 1)        (integer)
    ẑ      = offset + symbol · scale                                     (float32)

``offset`` and ``offset + (2^bits − 1)·scale`` are robust quantiles (0.01 % and 99.99 %) of
the training latents, so a few outliers do not stretch the grid; values outside are
clamped to the end levels. Both are stored as float32 (8 bytes of side information per
run, stated in :attr:`LatentQuantizer.side_info_bytes`), so a quantiser read back from
JSON reproduces every symbol and every ẑ exactly.

The symbols are then entropy-coded (:mod:`models.entropy`) and decoded images are
``clamp(decoder(ẑ), 0, 1)``: the model's own decoder on the dequantised code, in eval mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from models.architectures import Autoencoder
from models.catalog import IMAGE_SIZE
from models.data import ImageSet, batch_indices, normalize, to_float, uint8_images

SUPPORTED_BITS: tuple[int, ...] = (4, 6, 8, 16)
DEFAULT_BITS = 8
FIT_QUANTILE = 1e-4  # the grid spans the 0.01 % … 99.99 % quantiles of the training latents
FIT_MAX_VALUES = 4_000_000  # at most this many training latent values enter the quantiles


def _check_bits(bits: object) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in SUPPORTED_BITS:
        raise ValueError(f"bits must be one of {SUPPORTED_BITS}, got {bits!r}")
    return bits


def check_symbols(symbols: torch.Tensor, bits: int) -> None:
    """Raise ValueError unless ``symbols`` is an integer tensor with values in
    [0, 2^bits − 1]."""
    if symbols.dtype.is_floating_point or symbols.dtype == torch.bool:
        raise ValueError(f"symbols must be an integer tensor, got {symbols.dtype}")
    top = 2**bits - 1
    if symbols.numel() and (int(symbols.min()) < 0 or int(symbols.max()) > top):
        raise ValueError(f"symbols must lie in [0, {top}] for {bits} bits, got "
                         f"[{int(symbols.min())}, {int(symbols.max())}]")


def _f32(x: float) -> float:
    """``x`` rounded to the nearest float32 (what the side information stores)."""
    return float(np.float32(x))


@dataclass(frozen=True)
class LatentQuantizer:
    """A uniform quantiser of ``2^bits`` levels: level k ↔ ``offset + k·scale``."""

    bits: int
    offset: float
    scale: float

    def __post_init__(self) -> None:
        _check_bits(self.bits)
        if not (np.isfinite(self.scale) and self.scale > 0 and np.isfinite(self.offset)):
            raise ValueError(f"scale must be finite and > 0 and offset finite, got "
                             f"scale={self.scale}, offset={self.offset}")

    @property
    def levels(self) -> int:
        return 2**self.bits

    @property
    def side_info_bytes(self) -> int:
        """Bytes a decoder needs besides the stream: offset and scale as float32."""
        return 8

    @classmethod
    def fit(cls, latents: torch.Tensor, bits: int = DEFAULT_BITS) -> LatentQuantizer:
        """Fit offset and scale on ``latents`` ((N, D) training latents, N·D > 0).

        Raises ValueError for an unsupported ``bits``, a tensor that is not 2-D and
        non-empty, or NaN/inf values."""
        _check_bits(bits)
        if latents.dim() != 2 or latents.numel() == 0:
            raise ValueError(f"latents must be a non-empty (N, D) tensor, got "
                             f"{tuple(latents.shape)}")
        values = latents.detach().float().flatten().cpu().numpy()
        if not np.isfinite(values).all():
            raise ValueError("latents contain NaN or infinite values")
        if values.size > FIT_MAX_VALUES:  # an evenly spaced, deterministic subsample
            values = values[:: -(-values.size // FIT_MAX_VALUES)]
        lo, hi = np.quantile(values.astype(np.float64), [FIT_QUANTILE, 1 - FIT_QUANTILE])
        offset = _f32(lo)
        if hi <= lo:  # constant latents: every value is level 0
            return cls(bits, offset, 1.0)
        scale = _f32((hi - offset) / (2**bits - 1))
        return cls(bits, offset, scale if scale > 0 else 1.0)

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """Float latents (any shape) → int64 symbols in [0, 2^bits − 1] (same shape),
        computed in float64 so that 16-bit steps are not blurred by float32 rounding."""
        s = torch.round((z.detach().double() - self.offset) / self.scale)
        return s.clamp_(0, self.levels - 1).to(torch.int64)

    def dequantize(self, symbols: torch.Tensor) -> torch.Tensor:
        """Symbols → float32 ẑ = offset + symbol·scale. ValueError outside the levels."""
        check_symbols(symbols, self.bits)
        return (symbols.to(torch.float64) * self.scale + self.offset).to(torch.float32)

    def as_dict(self) -> dict[str, Any]:
        return {"bits": self.bits, "offset": self.offset, "scale": self.scale,
                "side_info_bytes": self.side_info_bytes,
                "definition": "symbol = clamp(round((z - offset) / scale), 0, 2^bits - 1); "
                              "z_hat = offset + symbol * scale (float32)"}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LatentQuantizer:
        return cls(int(d["bits"]), float(d["offset"]), float(d["scale"]))


@torch.no_grad()
def encode_latents(model: Autoencoder, images: ImageSet | torch.Tensor, *,
                   batch_size: int = 256, device: torch.device | str | None = None
                   ) -> torch.Tensor:
    """The encoder's float latents of ``images`` (uint8 (N, C, H, W), served to the model
    as 3×32×32 and ImageNet-normalised): (N, D) float32 on the CPU. Runs in eval mode and
    restores the model's mode."""
    x = uint8_images(images)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        size = getattr(model, "crop", IMAGE_SIZE)
        out = [model.encoder(normalize(to_float(x[idx], size, device))).float().cpu()
               for idx in batch_indices(len(x), batch_size, shuffle=False, drop_last=False)]
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, model.latent_dim)


@torch.no_grad()
def decode_latents(model: Autoencoder, z: torch.Tensor, *, batch_size: int = 256,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """``clamp(decoder(z), 0, 1)`` in eval mode: (N, D) → (N, 3, crop, crop) float32 on the
    CPU (crop: the model's, 32 for the study's).

    Raises ValueError when ``z`` is not (N, latent_dim) or the decoder does not output
    3×crop×crop (e.g. a progressive-resizing model left at half its crop)."""
    d = model.latent_dim
    k = getattr(model, "crop", IMAGE_SIZE)
    if z.dim() != 2 or z.shape[1] != d:
        raise ValueError(f"latents must be (N, {d}), got {tuple(z.shape)}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        out = []
        for idx in batch_indices(len(z), batch_size, shuffle=False, drop_last=False):
            y = model.decoder(z[idx].to(device)).float().clamp(0.0, 1.0).cpu()
            if y.shape[1:] != (3, k, k):
                raise ValueError(f"decoder output is {tuple(y.shape[1:])}, not (3, {k}, {k})")
            out.append(y)
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, 3, k, k)


def quantize_images(model: Autoencoder, q: LatentQuantizer, images: ImageSet | torch.Tensor,
                    **kw: Any) -> torch.Tensor:
    """uint8 images → (N, D) int64 symbols of their latents."""
    return q.quantize(encode_latents(model, images, **kw))


def decode_symbols(model: Autoencoder, q: LatentQuantizer, symbols: torch.Tensor,
                   **kw: Any) -> torch.Tensor:
    """Symbols → decoded images (N, 3, 32, 32) in [0, 1]: the decoder on ẑ."""
    return decode_latents(model, q.dequantize(symbols), **kw)

