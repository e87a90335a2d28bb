"""Entropy coding of quantised latents with ``constriction`` (ANS), and honest rate units.

The entropy model is **factorised per latent dimension**: dimension d's symbols are coded
with a discretised Gaussian of mean μ_d and standard deviation σ_d (constriction's
``QuantizedGaussian`` over the levels [0, 2^bits − 1]; it is "leaky", so every level has
a non-zero probability and *any* symbol can be coded). μ_d and σ_d are the sample mean and
standard deviation of dimension d's quantised **training** latents (σ_d floored at
:data:`MIN_STD` levels) — the test set never enters the model. They are stored as float32:
the **side information** is ``2 · D · 4`` bytes per run (plus the quantiser's 8 bytes),
reported apart from the stream (:attr:`LatentEntropyModel.side_info_bytes`), because a
receiver needs it once, not per image.

A stream is ``HEADER`` (12 bytes: magic ``b"AQ"``, format version, bits, N images, D
dimensions) followed by constriction's compressed uint32 words, little-endian; its whole
length, header included, is what :attr:`CodedLatents.bytes_per_image` divides by N.

Rates are quoted per **native** pixel: bpp = 8 · bytes / (H · W) of the dataset's own image
(784 for MNIST's 28 × 28, 1,024 for CIFAR-10's 32 × 32), beside the raw uint8 size of that
image (784 B grey, 3,072 B RGB) — never the 3×32×32 model space the network sees.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from models.datasets import dataset_entry
from models.quantize import check_symbols

HEADER = struct.Struct("<2sBBII")  # magic, version, bits, n_images, dims
MAGIC = b"AQ"
FORMAT_VERSION = 1
MIN_STD = 0.5  # levels: a dimension constant in training still codes any symbol cheaply


@dataclass(frozen=True)
class NativeFormat:
    """A dataset's images as stored before aelab serves them as 3×32×32."""

    channels: int
    hw: tuple[int, int]

    @property
    def pixels(self) -> int:
        return self.hw[0] * self.hw[1]

    @property
    def raw_bytes(self) -> int:
        """uint8 bytes of one native image: H · W · channels."""
        return self.pixels * self.channels


def native_format(dataset: str) -> NativeFormat:
    """The native layout of ``dataset``'s entry (KeyError naming the valid ones if
    unknown; ValueError for a dataset whose images differ in size)."""
    info = dataset_entry(dataset).info
    if info.native_size is None:
        raise ValueError(f"dataset {dataset!r} has images of differing sizes: a rate per "
                         "native pixel needs each image's own size")
    return NativeFormat(info.channels, info.native_size)


def bits_per_pixel(bytes_per_image: float, hw: tuple[int, int]) -> float:
    """bpp = 8 · bytes / (H · W) of the native image. ValueError for an empty image."""
    h, w = hw
    if h <= 0 or w <= 0:
        raise ValueError(f"image size must be positive, got {hw}")
    return 8.0 * bytes_per_image / (h * w)


def read_header(stream: bytes) -> tuple[int, int, int, int]:
    """(version, bits, n_images, dims) of a stream. ValueError when it is not one."""
    if len(stream) < HEADER.size:
        raise ValueError(f"stream is shorter ({len(stream)} B) than its {HEADER.size}-byte "
                         "header")
    magic, version, bits, n, d = HEADER.unpack_from(stream)
    if magic != MAGIC:
        raise ValueError(f"bad magic {magic!r}: not an aelab latent stream")
    if version != FORMAT_VERSION:
        raise ValueError(f"unsupported stream version {version}")
    return version, bits, n, d


@dataclass(frozen=True)
class CodedLatents:
    """One entropy-coded set of images: the stream and its sizes."""

    stream: bytes
    n_images: int
    side_info_bytes: int  # per run, not per image: the model tables and the quantiser

    @property
    def stream_bytes(self) -> int:
        return len(self.stream)

    @property
    def bytes_per_image(self) -> float:
        """Stream bytes (header included) / images."""
        return len(self.stream) / self.n_images

    def bits_per_pixel(self, hw: tuple[int, int]) -> float:
        return bits_per_pixel(self.bytes_per_image, hw)


@dataclass(frozen=True)
class LatentEntropyModel:
    """Per-dimension discretised Gaussians over the levels of a ``bits``-bit quantiser."""

    bits: int
    loc: np.ndarray  # (D,) float32, in levels
    scale: np.ndarray  # (D,) float32, in levels, ≥ MIN_STD

    @property
    def dims(self) -> int:
        return int(self.loc.shape[0])

    @property
    def side_info_bytes(self) -> int:
        """The model a decoder needs: D means and D standard deviations, float32."""
        return int(self.loc.nbytes + self.scale.nbytes)

    @classmethod
    def fit(cls, train_symbols: torch.Tensor, bits: int) -> LatentEntropyModel:
        """Fit on (N, D) quantised **training** symbols (N ≥ 1)."""
        check_symbols(train_symbols, bits)
        if train_symbols.dim() != 2 or train_symbols.shape[0] < 1:
            raise ValueError(f"symbols must be (N, D) with N ≥ 1, got "
                             f"{tuple(train_symbols.shape)}")
        s = train_symbols.double()
        loc = s.mean(0).numpy().astype(np.float32)
        std = s.std(0, unbiased=False).clamp_min(MIN_STD).numpy().astype(np.float32)
        return cls(bits, loc, std)

    def _models(self) -> list[Any]:
        import constriction

        top = 2**self.bits - 1
        gaussian = constriction.stream.model.QuantizedGaussian
        return [gaussian(0, top, float(m), float(s)) for m, s in zip(self.loc, self.scale,
                                                                      strict=True)]

    def encode(self, symbols: torch.Tensor) -> bytes:
        """(N, D) symbols → a stream (header + ANS words). ValueError for symbols outside
        the levels or another number of dimensions."""
        import constriction

        check_symbols(symbols, self.bits)
        if symbols.dim() != 2 or symbols.shape[1] != self.dims:
            raise ValueError(f"symbols have {tuple(symbols.shape)} dimensions; this model "
                             f"codes (N, {self.dims})")
        n = symbols.shape[0]
        data = symbols.to(torch.int32).numpy()
        coder = constriction.stream.stack.AnsCoder()
        # ANS is a stack: encode the last dimension first, so decoding runs d = 0, 1, …
        for d, model in reversed(list(enumerate(self._models()))):
            coder.encode_reverse(np.ascontiguousarray(data[:, d]), model)
        words = coder.get_compressed().astype("<u4")
        return HEADER.pack(MAGIC, FORMAT_VERSION, self.bits, n, self.dims) + words.tobytes()

    def decode(self, stream: bytes) -> torch.Tensor:
        """A stream of :meth:`encode` → the (N, D) int64 symbols, exactly."""
        import constriction

        _, bits, n, d = read_header(stream)
        if bits != self.bits or d != self.dims:
            raise ValueError(f"stream holds {bits}-bit symbols of {d} dimensions; this "
                             f"model is {self.bits}-bit, {self.dims} dimensions")
        payload = stream[HEADER.size:]
        if len(payload) % 4:
            raise ValueError("stream payload is not a whole number of 32-bit words")
        coder = constriction.stream.stack.AnsCoder(np.frombuffer(payload, dtype="<u4")
                                                   .astype(np.uint32))
        out = np.empty((n, d), dtype=np.int64)
        for j, model in enumerate(self._models()):
            out[:, j] = coder.decode(model, n)
        return torch.from_numpy(out)

    def compress(self, symbols: torch.Tensor) -> CodedLatents:
        return CodedLatents(self.encode(symbols), int(symbols.shape[0]), self.side_info_bytes)

    def as_dict(self) -> dict[str, Any]:
        return {"family": "per-dimension discretised Gaussian (constriction "
                          "QuantizedGaussian, leaky), fitted on training symbols",
                "bits": self.bits, "loc": [float(v) for v in self.loc],
                "scale": [float(v) for v in self.scale],
                "side_info_bytes": self.side_info_bytes}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LatentEntropyModel:
        return cls(int(d["bits"]), np.asarray(d["loc"], dtype=np.float32),
                   np.asarray(d["scale"], dtype=np.float32))
