"""The study's measures, on clamped [0, 1] reconstructions vs un-normalised targets."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torchmetrics.functional.image import structural_similarity_index_measure

from models.catalog import compression_ratio, compression_ratio_bytes
from models.data import ImageSet, batch_indices, normalize, to_float


@dataclass
class Measures:
    mse: float  # mean over every value: images × 3 channels × 32 × 32
    mae: float
    psnr: float  # 10·log10(1 / MSE) of the whole split, in dB
    ssim: float  # mean per-image SSIM (Gaussian window 11, σ 1.5)
    n_images: int
    classifier_accuracy: float | None = None  # reference classifier on reconstructions

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def psnr_from_mse(mse: float) -> float:
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


@torch.no_grad()
def evaluate(model: nn.Module, images: ImageSet, *, device: torch.device | str = "cpu",
             batch_size: int = 256, classifier: nn.Module | None = None) -> Measures:
    """Measures of ``model`` over ``images`` (the test split in a study run).

    Classifier accuracy follows the study: reconstruction → clamp → ImageNet
    normalisation → reference classifier → top-1 vs the true labels.
    """
    device = torch.device(device)
    model.eval()
    if classifier is not None:
        classifier.eval()
    se = ae = ssim_sum = 0.0
    correct = 0
    for idx in batch_indices(len(images), batch_size, shuffle=False, drop_last=False):
        target = to_float(images.images[idx], device=device)
        out = model(normalize(target)).float().clamp(0.0, 1.0)
        diff = (out - target).double()
        se += diff.pow(2).sum().item()
        ae += diff.abs().sum().item()
        ssim = structural_similarity_index_measure(out, target, data_range=1.0,
                                                   reduction="none")
        ssim_sum += float(ssim.sum())
        if classifier is not None:
            logits = classifier(normalize(out))
            correct += int((logits.argmax(1).cpu() == images.labels[idx]).sum())
    n = len(images)
    values = n * target.shape[1] * target.shape[2] * target.shape[3]
    mse = se / values
    return Measures(mse=mse, mae=ae / values, psnr=psnr_from_mse(mse), ssim=ssim_sum / n,
                    n_images=n, classifier_accuracy=correct / n if classifier else None)


def model_facts(model: nn.Module, latent_dim: int) -> dict[str, float | int]:
    """Size facts for the results table: parameters and compression ratios."""
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "latent_dim": latent_dim,
        "compression_ratio": compression_ratio(latent_dim),
        "compression_ratio_bytes": compression_ratio_bytes(latent_dim),
    }
