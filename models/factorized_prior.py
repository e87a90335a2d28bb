"""``factorized_prior``: the baseline autoencoder with a learned factorised entropy model
on its latent (Ballé, Laparra & Simoncelli 2017, "End-to-end optimized image
compression", ICLR; the "fully factorized" prior of Ballé et al. 2018, §A.6.1), trained on
rate + λ · distortion, in plain PyTorch.

The design follows CompressAI's ``EntropyBottleneck`` (read, not imported: CompressAI
1.2.8 pins numpy<2 and depends on torch-geometric):

- each of the D latent channels has its own cumulative density c_d(x) = σ(f_d(x)), f_d a
  small monotone network: layers of widths (1, 3, 3, 3, 1) whose matrices pass through a
  softplus (non-negative weights) and whose hidden layers add ``tanh(a) ⊙ tanh(h)``
  (Ballé et al. 2018, eq. A.4–A.7);
- the likelihood of a value y is the mass of the unit interval around it,
  p(y) = c(y + ½) − c(y − ½), computed on the side of the logits where the sigmoid is
  accurate (CompressAI's sign trick), floored at 1e-9;
- training replaces rounding with additive uniform noise U(−½, ½) (the noise is drawn
  from a generator seeded by a counter kept in the state dict, so a checkpoint resumes to
  the same noise); evaluation rounds: ŷ = round(y);
- the loss is ``bpp + λ · 255² · MSE`` (CompressAI's convention for λ), with bpp the
  estimated bits, −Σ log₂ p(ỹ), per 32 × 32 model-space pixel.

Coding (:func:`compress`/:func:`decompress`) really writes a bitstream with
``constriction``'s ANS coder: channel d's symbols are coded with a categorical model whose
probabilities are the learned p_d over the integers in [lo_d, hi_d], the interval holding
all but :data:`TAIL_MASS` of c_d (found by bisection, at most :data:`MAX_TABLE` symbols);
a symbol outside it is clamped to its end (counted by :func:`compress_with_stats`). The
tables are computed in float64 from the weights alone, so a decoder with ``model.pt``
needs no other side information.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from models.architectures import (
    CONV_STRIDE,
    Autoencoder,
    check_crop,
    conv_decoder,
    conv_encoder,
)
from models.data import ImageSet, batch_indices, normalize, to_float

FILTERS = (3, 3, 3)
INIT_SCALE = 10.0
LIKELIHOOD_BOUND = 1e-9
TAIL_MASS = 1e-9
MAX_TABLE = 4096
STREAM_HEADER = struct.Struct("<2sBII")  # magic b"FP", version, n_images, dims
STREAM_MAGIC = b"FP"
STREAM_VERSION = 1


class EntropyBottleneck(nn.Module):
    """A learned, per-channel (factorised) density over a (B, C) latent."""

    def __init__(self, channels: int, filters: tuple[int, ...] = FILTERS,
                 init_scale: float = INIT_SCALE) -> None:
        super().__init__()
        self.channels = channels
        widths = (1, *filters, 1)
        scale = init_scale ** (1 / (len(filters) + 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(filters) + 1):
            init = math.log(math.expm1(1 / scale / widths[i + 1]))
            self.matrices.append(nn.Parameter(
                torch.full((channels, widths[i + 1], widths[i]), init)))
            self.biases.append(nn.Parameter(
                torch.empty(channels, widths[i + 1], 1).uniform_(-0.5, 0.5)))
            if i < len(filters):
                self.factors.append(nn.Parameter(torch.zeros(channels, widths[i + 1], 1)))
        # The training noise's seed and draw counter: part of the state dict.
        self.noise_seed: torch.Tensor
        self.noise_step: torch.Tensor
        self.register_buffer("noise_seed", torch.randint(0, 2**31 - 1, (), dtype=torch.int64))
        self.register_buffer("noise_step", torch.zeros((), dtype=torch.int64))
        # Their host copies, [seed, step]: a training step reads no device value (on CUDA
        # that would wait for the GPU's queue); refreshed whenever a state dict is loaded.
        self._noise = [int(self.noise_seed), 0]

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any,
                              **kwargs: Any) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._noise = [int(self.noise_seed), int(self.noise_step)]

    def logits_cumulative(self, x: torch.Tensor) -> torch.Tensor:
        """f(x) for x of shape (C, 1, N): (C, 1, N) logits of the cumulative density."""
        logits = x
        for i, matrix in enumerate(self.matrices):
            logits = torch.matmul(nn.functional.softplus(matrix.to(x.dtype)), logits)
            logits = logits + self.biases[i].to(x.dtype)
            if i < len(self.factors):
                logits = logits + torch.tanh(self.factors[i].to(x.dtype)) * torch.tanh(logits)
        return logits

    def likelihood(self, y: torch.Tensor) -> torch.Tensor:
        """p(y) = c(y + ½) − c(y − ½) per element of a (B, C) tensor, floored at 1e-9."""
        v = y.t().unsqueeze(1)  # (C, 1, B)
        lower = self.logits_cumulative(v - 0.5)
        upper = self.logits_cumulative(v + 0.5)
        sign = -torch.sign(lower + upper).detach()
        lik = (torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower)).abs()
        return lik.clamp_min(LIKELIHOOD_BOUND).squeeze(1).t()  # (B, C)

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(ỹ, p(ỹ)): ỹ = y + U(−½, ½) in training, round(y) in eval; both (B, C)."""
        if self.training:
            seed, step = self._noise
            g = torch.Generator(device="cpu").manual_seed(seed * 1_000_003 + step)
            self._noise[1] = step + 1
            self.noise_step.fill_(step + 1)  # on CUDA a kernel queued, not a host wait
            noise = torch.rand(y.shape, generator=g, dtype=torch.float32) - 0.5
            if y.is_cuda:  # from pinned memory the copy does not wait for the queue either
                noise = noise.pin_memory().to(y.device, non_blocking=True)
            y_tilde = y + noise.to(y.device, y.dtype)
        else:
            y_tilde = torch.round(y)
        return y_tilde, self.likelihood(y_tilde)

    @torch.no_grad()
    def cdf(self, x: torch.Tensor) -> torch.Tensor:
        """c_d(x_d) in float64 for x of shape (C,)."""
        return torch.sigmoid(self.logits_cumulative(x.double().view(-1, 1, 1))).view(-1)

    @torch.no_grad()
    def coding_tables(self) -> CodingTables:
        """Per channel: the integer range [lo, hi] holding all but TAIL_MASS of the density
        and the probabilities of its integers, float64, from the weights alone."""
        c = self.channels

        def quantile(p: float) -> torch.Tensor:
            lo = torch.full((c,), -1e6, dtype=torch.float64)
            hi = torch.full((c,), 1e6, dtype=torch.float64)
            for _ in range(60):  # bisection: c_d is monotone (softplus weights)
                mid = (lo + hi) / 2
                below = self.cdf(mid) < p
                lo = torch.where(below, mid, lo)
                hi = torch.where(below, hi, mid)
            return hi

        lower = torch.floor(quantile(TAIL_MASS / 2)).long()
        upper = torch.ceil(quantile(1 - TAIL_MASS / 2)).long()
        centre = (lower + upper) // 2
        half = MAX_TABLE // 2
        lower = torch.maximum(lower, centre - half)
        upper = torch.minimum(upper, centre + half - 1)
        width = int((upper - lower).max()) + 1
        grid = lower.double().view(-1, 1, 1) + torch.arange(width, dtype=torch.float64)
        lo_l = self.logits_cumulative(grid - 0.5)  # (C, 1, W), float64
        up_l = self.logits_cumulative(grid + 0.5)
        sign = -torch.sign(lo_l + up_l)
        p = (torch.sigmoid(sign * up_l) - torch.sigmoid(sign * lo_l)).abs().squeeze(1)
        p = p.clamp_min(LIKELIHOOD_BOUND)
        probs = []
        for d in range(c):
            row = p[d, : int(upper[d] - lower[d]) + 1]
            probs.append((row / row.sum()).numpy())
        return CodingTables(lower.numpy(), upper.numpy(), probs)


@dataclass(frozen=True)
class CodingTables:
    lower: np.ndarray  # (C,) int64: the smallest codable symbol of each channel
    upper: np.ndarray  # (C,) int64: the largest
    probs: list[np.ndarray]  # C arrays of upper − lower + 1 probabilities (float64)


class FactorizedPriorAutoencoder(Autoencoder):
    """Baseline conv encoder/decoder + :class:`EntropyBottleneck` on the (B, D) latent."""

    has_entropy_model = True

    def __init__(self, latent_dim: int = 1000, crop: int = 32) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.crop = check_crop(crop, CONV_STRIDE, "factorized_prior")
        self.encoder = conv_encoder(latent_dim, crop)  # (B, D)
        self.decoder = conv_decoder(latent_dim, crop=crop)  # (B, D) → (B, 3, crop, crop)
        self.entropy_bottleneck = EntropyBottleneck(latent_dim)
        self.last_likelihoods: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.encoder(x)
        with torch.autocast(device_type=y.device.type, enabled=False):
            y_tilde, lik = self.entropy_bottleneck(y.float())
        self.last_likelihoods = lik  # (B, D): read by RateDistortionLoss
        return self.decoder(y_tilde).clamp(0.0, 1.0)


def rate_bpp(likelihoods: torch.Tensor, pixels: int) -> torch.Tensor:
    """Estimated bits per pixel: −Σ log₂ p / pixels."""
    return -torch.log2(likelihoods).sum() / pixels


class RateDistortionLoss(nn.Module):
    """``bpp + λ · 255² · MSE`` (CompressAI's RateDistortionLoss), the rate read from the
    bound model's last forward. Call :meth:`bind` with the model first."""

    def __init__(self, lmbda: float, model: FactorizedPriorAutoencoder | None = None) -> None:
        super().__init__()
        if not lmbda > 0:
            raise ValueError(f"lambda must be > 0, got {lmbda}")
        self.lmbda = lmbda
        self._model: list[FactorizedPriorAutoencoder] = []  # a list: not a submodule
        if model is not None:
            self.bind(model)

    def bind(self, model: nn.Module) -> RateDistortionLoss:
        if not getattr(model, "has_entropy_model", False):
            raise TypeError(f"the rate-distortion loss needs a model with a learned entropy "
                            f"model, got {type(model).__name__}")
        self._model[:] = [model]  # type: ignore[list-item]  # has_entropy_model
        return self

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not self._model:
            raise RuntimeError("bind the loss to its model first")
        lik = self._model[0].last_likelihoods
        if lik is None or lik.shape[0] != output.shape[0]:
            raise RuntimeError("the likelihoods of the last forward do not match this batch")
        bpp = rate_bpp(lik, output.shape[0] * output.shape[-2] * output.shape[-1])
        return bpp + self.lmbda * 255**2 * nn.functional.mse_loss(output, target)


# ---------------------------------------------------------------------------------------
# The bitstream


@torch.no_grad()
def latent_symbols(model: FactorizedPriorAutoencoder, images: ImageSet, *,
                   batch_size: int = 256) -> torch.Tensor:
    """round(encoder(x)) of ``images``: (N, D) int64."""
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    try:
        out = [torch.round(model.encoder(normalize(to_float(
                   images.images[idx], model.crop, device))).float()).cpu()
               for idx in batch_indices(len(images), batch_size, shuffle=False,
                                        drop_last=False)]
    finally:
        model.train(was)
    return torch.cat(out).to(torch.int64)


def compress_symbols(bottleneck: EntropyBottleneck, symbols: torch.Tensor,
                     tables: CodingTables | None = None) -> tuple[bytes, int]:
    """(N, D) symbols → (stream, symbols clamped into the tables' ranges)."""
    import constriction

    tables = tables or bottleneck.coding_tables()
    n, d = symbols.shape
    if d != bottleneck.channels:
        raise ValueError(f"symbols have {d} dimensions, the bottleneck {bottleneck.channels}")
    data = symbols.numpy()
    clipped = np.clip(data, tables.lower[None, :], tables.upper[None, :])
    clamped = int((clipped != data).sum())
    coder = constriction.stream.stack.AnsCoder()
    categorical = constriction.stream.model.Categorical
    for j in reversed(range(d)):
        model = categorical(tables.probs[j], perfect=False)
        coder.encode_reverse((clipped[:, j] - tables.lower[j]).astype(np.int32), model)
    words = coder.get_compressed().astype("<u4")
    return STREAM_HEADER.pack(STREAM_MAGIC, STREAM_VERSION, n, d) + words.tobytes(), clamped


def decompress_symbols(bottleneck: EntropyBottleneck, stream: bytes) -> torch.Tensor:
    """A stream of :func:`compress_symbols` → (N, D) int64 symbols."""
    import constriction

    if len(stream) < STREAM_HEADER.size:
        raise ValueError("stream is shorter than its header")
    magic, version, n, d = STREAM_HEADER.unpack_from(stream)
    if magic != STREAM_MAGIC or version != STREAM_VERSION:
        raise ValueError(f"not a factorized-prior stream (magic {magic!r}, v{version})")
    if d != bottleneck.channels:
        raise ValueError(f"stream has {d} dimensions, the bottleneck {bottleneck.channels}")
    tables = bottleneck.coding_tables()
    coder = constriction.stream.stack.AnsCoder(
        np.frombuffer(stream[STREAM_HEADER.size:], dtype="<u4").astype(np.uint32))
    categorical = constriction.stream.model.Categorical
    out = np.empty((n, d), dtype=np.int64)
    for j in range(d):
        out[:, j] = coder.decode(categorical(tables.probs[j], perfect=False), n) + \
            tables.lower[j]
    return torch.from_numpy(out)


def compress_with_stats(model: FactorizedPriorAutoencoder, images: ImageSet
                        ) -> tuple[bytes, int]:
    """(stream of ``images``' latents, symbols clamped to the tables)."""
    return compress_symbols(model.entropy_bottleneck, latent_symbols(model, images))


def compress(model: FactorizedPriorAutoencoder, images: ImageSet) -> bytes:
    """The bitstream of ``images``: header + ANS words."""
    return compress_with_stats(model, images)[0]


@torch.no_grad()
def decompress(model: FactorizedPriorAutoencoder, stream: bytes, *,
               batch_size: int = 256) -> torch.Tensor:
    """Stream → decoded images, clamp(decoder(ŷ), 0, 1): (N, 3, 32, 32) float32 on the CPU."""
    symbols = decompress_symbols(model.entropy_bottleneck, stream)
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    try:
        out = [model.decoder(symbols[idx].float().to(device)).float().clamp(0.0, 1.0).cpu()
               for idx in batch_indices(len(symbols), batch_size, shuffle=False,
                                        drop_last=False)]
    finally:
        model.train(was)
    return torch.cat(out)
