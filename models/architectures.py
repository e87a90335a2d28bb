"""The study's autoencoder architectures (seed-experiment §3–4).

Three architectures serve the six variants: the conv autoencoder (baseline, progressive
resizing, feature loss), the pixel-shuffle autoencoder and the ResNet34-encoder one. What
each can do beyond encode/decode is a *capability* of :class:`Autoencoder` (output size,
an ImageNet encoder body, discriminative layer groups, an entropy model), declared for the
API in ``models.catalog.ARCHITECTURES``; ``models.builders`` builds them by name.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn
from torch.nn.utils import parametrizations
from torchvision.models import resnet34

from models.catalog import IMAGE_SIZE
from models.weights import WeightsSource, resnet34_body_state

# ---------------------------------------------------------------------------------------
# Building blocks (`model_layers.py` of the study)


def conv_block(ni: int, nf: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(ni, nf, 3, padding=1, bias=False), nn.BatchNorm2d(nf), nn.ReLU(inplace=True)
    )


def down_block(channels: int, out_side: int) -> nn.Sequential:
    # A fixed output side (not a stride) lets the same encoder take 16 px inputs.
    return nn.Sequential(
        nn.AdaptiveMaxPool2d(out_side), nn.BatchNorm2d(channels), nn.ReLU(inplace=True)
    )


class UpBlock(nn.Module):
    """Nearest upsample → BN(in) → conv3×3 (bias) → BN(out) → ReLU."""

    def __init__(self, ni: int, nf: int, factor: int = 2) -> None:
        super().__init__()
        self.factor = factor
        self.bn_in = nn.BatchNorm2d(ni)
        self.conv = nn.Conv2d(ni, nf, 3, padding=1)
        self.bn_out = nn.BatchNorm2d(nf)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.factor != 1:
            x = nn.functional.interpolate(x, scale_factor=self.factor, mode="nearest")
        return torch.relu(self.bn_out(self.conv(self.bn_in(x))))


def icnr_(weight: torch.Tensor, scale: int = 2) -> None:
    """ICNR init: each group of scale² sub-pixel filters starts identical (no checkerboard)."""
    nf, ni, h, w = weight.shape
    sub = torch.empty(nf // scale**2, ni, h, w)
    nn.init.kaiming_normal_(sub)
    weight.data.copy_(sub.repeat_interleave(scale**2, dim=0))


class PixelShuffleBlock(nn.Module):
    """fastai v1 ``PixelShuffle_ICNR`` as the study used it, blur on.

    ICNR choice: the study wrote ICNR into the conv *after* weight norm, which rebuilds
    the weight from weight_g/weight_v on every forward (fastai #2846), so its effective
    init was plain Kaiming-normal. ``icnr=False`` (default) reproduces that; ``icnr=True``
    applies ICNR before weight norm, which is what the study intended.

    ``upsample=False`` (progressive resizing's small stage) keeps the input's size with the
    same parameters: each output pixel is the mean of the ``scale²`` sub-pixels the block
    would have spread it into (a ``scale``×``scale`` average pool after the shuffle).
    """

    def __init__(self, ni: int, nf: int, scale: int = 2, icnr: bool = False) -> None:
        super().__init__()
        self.scale = scale
        self.upsample = True
        conv = nn.Conv2d(ni, nf * scale**2, 1)
        nn.init.kaiming_normal_(conv.weight)
        if icnr:
            icnr_(conv.weight, scale)
        nn.init.zeros_(conv.bias)
        self.conv = parametrizations.weight_norm(conv)
        self.shuffle = nn.PixelShuffle(scale)
        self.pad = nn.ReplicationPad2d((1, 0, 1, 0))
        self.blur = nn.AvgPool2d(2, stride=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.shuffle(torch.relu(self.conv(x)))  # (B, nf, scale·H, scale·W)
        if not self.upsample:
            x = nn.functional.avg_pool2d(x, self.scale)  # (B, nf, H, W)
        return self.blur(self.pad(x))


class ConcatPool(nn.Module):
    """Adaptive max and average pool to 1×1, concatenated (max first)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([nn.functional.adaptive_max_pool2d(x, 1),
                          nn.functional.adaptive_avg_pool2d(x, 1)], dim=1)


# ---------------------------------------------------------------------------------------
# Autoencoders. Each has .encoder, .decoder and .latent_dim; forward clamps to [0, 1].

CODE_SHAPE = (24, 8, 8)  # the decoder's first Linear is reshaped to this
CODE_VALUES = 24 * 8 * 8  # 1536


class Autoencoder(nn.Module):
    """``encoder`` (ImageNet-normalised (B, 3, H, W) → (B, latent_dim)), ``decoder``
    (→ (B, 3, H, W)), and the capabilities recipes use, each refused by default."""

    latent_dim: int
    encoder: nn.Module
    decoder: nn.Module
    # Codes its own bitstream with a learned entropy model (models.compression).
    has_entropy_model: ClassVar[bool] = False

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Hard clamp as in the study: zero gradient outside [0, 1].
        return self.decoder(self.encoder(x)).clamp(0.0, 1.0)

    crop: int = IMAGE_SIZE  # its input and output side, px

    def set_output_size(self, size: int) -> None:
        """Output ``size`` px (progressive resizing). Default: its crop only."""
        if size != self.crop:
            raise ValueError(f"{type(self).__name__} cannot change its output size: it "
                             f"trains at {self.crop} px only")

    def load_encoder_weights(self, source: WeightsSource) -> None:
        """Load ImageNet weights into the encoder body (encoder_weights: imagenet)."""
        raise ValueError(f"{type(self).__name__} has no ImageNet encoder body")

    def freeze_encoder_body(self, frozen: bool) -> None:
        """Freeze (phase 1 of the pretrained arm) or train the encoder body."""
        if frozen:
            raise ValueError(f"{type(self).__name__} has no encoder body to freeze")

    def layer_groups(self) -> list[list[nn.Module]]:
        """Groups for discriminative learning rates, input side first."""
        raise ValueError(f"{type(self).__name__} has no discriminative layer groups")


CONV_STRIDE = 4  # the conv encoder pools twice by 2: a crop is a multiple of this


def check_crop(crop: int, stride: int, name: str) -> int:
    """``crop`` if the architecture ``name`` takes it (a positive multiple of
    ``stride``); ValueError saying which crops it takes otherwise."""
    if crop % stride or crop < stride:
        raise ValueError(f"{name} takes crops that are multiples of {stride} px, not {crop}")
    return crop


def code_shape(crop: int) -> tuple[int, int, int]:
    """The conv code's shape at ``crop`` px: (24, crop/4, crop/4) — (24, 8, 8) at 32."""
    return (24, crop // CONV_STRIDE, crop // CONV_STRIDE)


def conv_encoder(latent_dim: int, crop: int = IMAGE_SIZE) -> nn.Sequential:
    c, h, w = code_shape(crop)
    return nn.Sequential(
        conv_block(3, 12),  # (B, 12, 32, 32) at crop 32
        down_block(12, crop // 2),  # (B, 12, 16, 16)
        conv_block(12, 24),  # (B, 24, 16, 16)
        down_block(24, crop // 4),  # (B, 24, 8, 8)
        nn.Flatten(),  # (B, 1536)
        nn.Linear(c * h * w, latent_dim),  # (B, latent) — the code, no activation
    )


def conv_decoder(latent_dim: int, up_factors: tuple[int, int] = (2, 2),
                 crop: int = IMAGE_SIZE) -> nn.Sequential:
    c, h, w = code_shape(crop)
    return nn.Sequential(
        nn.Linear(latent_dim, c * h * w),
        nn.Unflatten(1, (c, h, w)),  # (B, 24, 8, 8) at crop 32
        UpBlock(24, 12, up_factors[0]),  # (B, 12, 16, 16)
        UpBlock(12, 3, up_factors[1]),  # (B, 3, 32, 32), ReLU last
    )


class ConvAutoencoder(Autoencoder):
    """Baseline: conv encoder, nearest-upsample decoder. ``up_factors`` (2, 1) gives the
    16 px stage of progressive resizing; :meth:`set_output_size` switches it in place."""

    def __init__(self, latent_dim: int = 1000, up_factors: tuple[int, int] = (2, 2),
                 crop: int = IMAGE_SIZE) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.crop = check_crop(crop, CONV_STRIDE, "conv")
        self.encoder = conv_encoder(latent_dim, crop)
        self.decoder = conv_decoder(latent_dim, up_factors, crop)

    def set_output_size(self, size: int) -> None:
        """crop/2 → factor 1 in the last block, crop → factor 2. No parameter changes."""
        self.decoder[3].factor = 2 if _full_size(size, self.crop) else 1


def _full_size(size: int, crop: int = IMAGE_SIZE) -> bool:
    """Whether ``size`` is the model's crop (else half of it); ValueError otherwise."""
    if size not in (crop // 2, crop):
        raise ValueError(f"output size must be {crop // 2} or {crop}, got {size}")
    return size == crop


class PixelShuffleAutoencoder(Autoencoder):
    def __init__(self, latent_dim: int = 1000, icnr: bool = False,
                 crop: int = IMAGE_SIZE) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.crop = check_crop(crop, CONV_STRIDE, "pixel_shuffle")
        self.encoder = conv_encoder(latent_dim, crop)
        c, h, w = code_shape(crop)
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, c * h * w),
            nn.Unflatten(1, (c, h, w)),  # (B, 24, 8, 8) at crop 32
            PixelShuffleBlock(24, 12, icnr=icnr),  # (B, 12, 16, 16)
            nn.BatchNorm2d(12),  # no ReLU: the next block starts with a conv
            PixelShuffleBlock(12, 3, icnr=icnr),  # (B, 3, 32, 32)
            nn.BatchNorm2d(3),  # last layer is BN; the clamp removes negatives
        )

    def set_output_size(self, size: int) -> None:
        """16 → the last block keeps 16 px (see PixelShuffleBlock), 32 → it upsamples.
        No parameter changes."""
        self.decoder[4].upsample = _full_size(size, self.crop)


RESNET_CONCAT_DIM = 1024  # 512 layer4 channels, max- and avg-pooled
RESNET_STRIDE = 32  # ResNet34's body halves the input five times


class ResNetAutoencoder(Autoencoder):
    """ResNet34 cut before its head, concat pool (1024 = 512 repeated at 32 px), then the
    baseline decoder. A ``latent_dim`` other than 1024 adds a Linear projection."""

    def __init__(self, latent_dim: int = RESNET_CONCAT_DIM, crop: int = IMAGE_SIZE) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.crop = check_crop(crop, RESNET_STRIDE, "resnet")
        resnet = resnet34(weights=None)
        # Children in the study's order: conv1, bn1, relu, maxpool, layer1..layer4.
        body = nn.Sequential(*list(resnet.children())[:-2])  # (B, 512, 1, 1)
        head: list[nn.Module] = [ConcatPool(), nn.Flatten()]  # (B, 1024)
        if latent_dim != RESNET_CONCAT_DIM:
            head.append(nn.Linear(RESNET_CONCAT_DIM, latent_dim))
        self.encoder = nn.Sequential(body, nn.Sequential(*head))
        self.decoder = conv_decoder(latent_dim, crop=crop)

    @property
    def body(self) -> nn.Sequential:
        return self.encoder[0]

    @property
    def head(self) -> nn.Sequential:
        return self.encoder[1]

    def load_encoder_weights(self, source: WeightsSource) -> None:
        self.body.load_state_dict(resnet34_body_state(source))

    def freeze_encoder_body(self, frozen: bool) -> None:
        # Frozen, but left in train mode: its BN running stats adapt, as in the study.
        self.body.requires_grad_(not frozen)

    def layer_groups(self) -> list[list[nn.Module]]:
        """The study's 10 groups: 8 body children, the pool head, the decoder."""
        return [[m] for m in self.body] + [[self.head], [self.decoder]]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
