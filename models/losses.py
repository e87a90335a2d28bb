"""Training losses: pixel MSE and the study's VGG16-bn feature loss (seed-experiment §4.6)."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import vgg16_bn

from models.weights import WeightsSource, load_state_dict

# The ReLU just before each of VGG16-bn's first three max-pools: conv1_2, conv2_2, conv3_3.
FEATURE_LAYERS = (5, 12, 22)
FEATURE_WEIGHTS = (30.0, 20.0, 10.0)
GRAM_FACTOR = 5000.0  # the Gram term of layer i is weighted weight_i² × 5000


def gram_matrix(x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    flat = x.reshape(b, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)  # (B, C, C)


class FeatureLoss(nn.Module):
    """Pixel MSE + Σ wᵢ·MSE(featuresᵢ) + Σ wᵢ²·5000·MSE(Gramᵢ), on raw [0, 1] images.

    VGG is frozen and kept in eval mode whatever mode the caller sets; gradients reach
    the autoencoder through the output's activations.
    """

    def __init__(self, pretrained: bool = True, weights: WeightsSource | None = None) -> None:
        super().__init__()
        vgg = vgg16_bn(weights=None)
        if pretrained:
            vgg.load_state_dict(load_state_dict("vgg16_bn", weights or WeightsSource()))
        self.features = vgg.features[: FEATURE_LAYERS[-1] + 1].eval()
        self.features.requires_grad_(False)

    def train(self, mode: bool = True) -> FeatureLoss:
        super().train(mode)
        self.features.eval()
        return self

    def _activations(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in FEATURE_LAYERS:
                out.append(x)
        return out

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target_acts = [a.clone() for a in self._activations(target)]
        output_acts = self._activations(output)
        loss = nn.functional.mse_loss(output, target)
        for w, a_out, a_tgt in zip(FEATURE_WEIGHTS, output_acts, target_acts, strict=True):
            loss = loss + w * nn.functional.mse_loss(a_out, a_tgt)
            loss = loss + w**2 * GRAM_FACTOR * nn.functional.mse_loss(
                gram_matrix(a_out), gram_matrix(a_tgt)
            )
        return loss


def build_loss(name: str, *, pretrained: bool = True,
               weights: WeightsSource | None = None, rd_lambda: float | None = None
               ) -> nn.Module:
    """``rate_distortion`` returns an unbound loss: bind it to its model
    (``RateDistortionLoss.bind``) before the first call."""
    if name == "mse":
        return nn.MSELoss()
    if name == "feature":
        return FeatureLoss(pretrained=pretrained, weights=weights)
    if name == "rate_distortion":
        from models.catalog import DEFAULT_RD_LAMBDA
        from models.factorized_prior import RateDistortionLoss

        return RateDistortionLoss(rd_lambda if rd_lambda is not None else DEFAULT_RD_LAMBDA)
    raise KeyError(f"unknown loss {name!r}; valid: mse, feature, rate_distortion")
