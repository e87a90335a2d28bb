"""The study's measures, on clamped [0, 1] reconstructions vs un-normalised targets."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn
from torchmetrics.functional.image import (
    multiscale_structural_similarity_index_measure,
    structural_similarity_index_measure,
)

from models.catalog import MS_SSIM_MIN_SIDE, compression_ratio, compression_ratio_bytes
from models.data import ImageSet, batch_indices, normalize, to_float

if TYPE_CHECKING:
    from models.architectures import Autoencoder


@dataclass
class Measures:
    mse: float  # mean over every value: images × 3 channels × 32 × 32
    mae: float
    psnr: float  # 10·log10(1 / MSE) of the whole split, in dB
    ssim: float  # mean per-image SSIM (Gaussian window 11, σ 1.5)
    n_images: int
    classifier_accuracy: float | None = None  # reference classifier on reconstructions
    psnr_per_image: float | None = None  # mean over images of each one's PSNR (CompressAI)
    ms_ssim: float | None = None  # mean per-image MS-SSIM; None below MS_SSIM_MIN_SIDE

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def psnr_from_mse(mse: float) -> float:
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)




def psnr_per_image(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Each image's PSNR in dB, (B,), of ``out`` against ``target`` (B, C, H, W) in
    [0, 1]: 10·log10(1 / MSE) over that image's values (``inf`` where it is exact); the
    mean of these is CompressAI's ``eval_model`` convention (``compute_psnr`` per image)."""
    mse = (out.double() - target.double()).pow(2).flatten(1).mean(1)
    return torch.where(mse == 0, torch.full_like(mse, math.inf), -10.0 * torch.log10(mse))


def ms_ssim_per_image(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
    """Each image's MS-SSIM (5 scales, Gaussian window 11, σ 1.5; torchmetrics), (B,), of
    ``out`` against ``target`` (B, C, H, W) in [0, 1]; None when a side is under
    :data:`MS_SSIM_MIN_SIDE` px (the coarsest scale would be smaller than the window)."""
    if min(target.shape[-2:]) < MS_SSIM_MIN_SIDE:
        return None
    return multiscale_structural_similarity_index_measure(
        out, target, data_range=1.0, reduction="none").reshape(-1)


@torch.no_grad()
def evaluate(model: nn.Module, images: ImageSet, *, device: torch.device | str = "cpu",
             batch_size: int = 256, classifier: nn.Module | None = None,
             whole_crop: int | None = None, size: int = 32) -> Measures:
    """Measures of ``model`` over ``images`` (the test split in a study run).

    Classifier accuracy follows the study: reconstruction → clamp → ImageNet
    normalisation → reference classifier → top-1 vs the true labels. With ``whole_crop``
    every image is coded whole as tiles of that side (``models.tiles``) and measured over
    its real pixels (:func:`measure_whole`); otherwise images are served at ``size`` px
    (the model's crop).
    """
    model.eval()
    if whole_crop is not None:
        from models.tiles import from_tiles, to_tiles

        tiles, tiling = to_tiles(images, whole_crop)
        out = reconstruct_tiles(model, tiles, device=torch.device(device),
                                batch_size=batch_size)
        return measure_whole(from_tiles(out, tiling), images, device=device,
                             classifier=classifier)
    return _measure(lambda idx, target: model(normalize(target)), images,
                    device=torch.device(device), batch_size=batch_size, classifier=classifier,
                    size=size)


@torch.no_grad()
def evaluate_sizes(model: Autoencoder, images: ImageSet, sizes: Sequence[int], *,
                   crop: int, whole: bool, device: torch.device | str = "cpu",
                   batch_size: int = 256, classifier: nn.Module | None = None
                   ) -> dict[int, Measures]:
    """``model``, trained at ``crop`` px, measured at each of ``sizes`` (px): its output
    set to the size (``Autoencoder.set_output_size``, which raises ValueError for a size
    it cannot take: check ``models.catalog.size_problem`` first) and :func:`evaluate`d
    there: every image served resized to the size, or with ``whole`` each whole image as
    tiles of the size, measured over its real pixels. The reference ``classifier`` is
    applied only where it sees what it was trained on (whole images, or the crop);
    elsewhere ``classifier_accuracy`` is None. The model's output is ``crop`` again
    afterwards, whatever happened."""
    out = {}
    try:
        for size in sizes:
            model.set_output_size(size)
            out[size] = evaluate(model, images, device=device, batch_size=batch_size,
                                 classifier=classifier if whole or size == crop else None,
                                 whole_crop=size if whole else None, size=size)
    finally:
        model.set_output_size(crop)
    return out


@torch.no_grad()
def measure_outputs(outputs: torch.Tensor, images: ImageSet, *,
                    device: torch.device | str = "cpu", batch_size: int = 256,
                    classifier: nn.Module | None = None, size: int = 32) -> Measures:
    """The measures of :func:`evaluate` for reconstructions computed elsewhere:
    ``outputs`` (N, 3, 32, 32) float in [0, 1] (decoded from a stream, or a codec's output
    upscaled like the model's input) against ``images`` (their uint8 originals, served by
    :func:`models.data.to_float`). ValueError when the counts or shapes differ."""
    if outputs.shape[0] != len(images) or outputs.shape[1:] != (3, size, size):
        raise ValueError(f"outputs {tuple(outputs.shape)} do not match {len(images)} "
                         f"images of 3×{size}×{size}")
    device = torch.device(device)
    return _measure(lambda idx, _target: outputs[idx].to(device), images, device=device,
                    batch_size=batch_size, classifier=classifier, size=size)


@torch.no_grad()
def reconstruct_tiles(model: nn.Module, tiles: ImageSet, *, device: torch.device,
                      batch_size: int = 256) -> torch.Tensor:
    """``model``'s reconstructions of uint8 tiles: (T, 3, crop, crop) float on the CPU."""
    model.eval()
    out = []
    for idx in batch_indices(len(tiles), batch_size, shuffle=False, drop_last=False):
        x = to_float(tiles.images[idx], None, device)
        out.append(model(normalize(x)).float().clamp(0.0, 1.0).cpu())
    return torch.cat(out)


@torch.no_grad()
def measure_whole(outputs: list[torch.Tensor], images: ImageSet, *,
                  device: torch.device | str = "cpu",
                  classifier: nn.Module | None = None) -> Measures:
    """The measures of :func:`evaluate` over whole images of any size: ``outputs[i]``
    (3, H_i, W_i) float in [0, 1] against image ``i`` at its real size. MSE and MAE are
    means over every real value (Σ 3·H_i·W_i), PSNR of that MSE, SSIM the mean per-image
    SSIM, PSNR per image and MS-SSIM (None when any image is under 176 px a side) the means
    over images, classifier accuracy the reference classifier's on each whole
    reconstruction. ValueError when counts or sizes differ."""
    if len(outputs) != len(images):
        raise ValueError(f"{len(outputs)} outputs for {len(images)} images")
    device = torch.device(device)
    if classifier is not None:
        classifier.eval()
    se = ae = ssim_sum = psnr_sum = 0.0
    ms_ssim_sum: float | None = 0.0
    values = correct = 0
    for i, out in enumerate(outputs):
        target = to_float(images.image(i)[None], None, device)  # (1, 3, H, W)
        if tuple(out.shape) != tuple(target.shape[1:]):
            raise ValueError(f"output {i} is {tuple(out.shape)}, its image "
                             f"{tuple(target.shape[1:])}")
        out = out[None].to(device).float().clamp(0.0, 1.0)
        diff = (out - target).double()
        se += diff.pow(2).sum().item()
        ae += diff.abs().sum().item()
        values += diff.numel()
        ssim_sum += float(structural_similarity_index_measure(out, target, data_range=1.0))
        psnr_sum += float(psnr_per_image(out, target).sum())
        ms_ssim = ms_ssim_per_image(out, target)
        ms_ssim_sum = None if ms_ssim is None or ms_ssim_sum is None \
            else ms_ssim_sum + float(ms_ssim.sum())
        if classifier is not None:
            correct += int(classifier(normalize(out)).argmax(1).item() == images.labels[i])
    n = len(images)
    mse = se / values
    return Measures(mse=mse, mae=ae / values, psnr=psnr_from_mse(mse), ssim=ssim_sum / n,
                    n_images=n, classifier_accuracy=correct / n if classifier else None,
                    psnr_per_image=psnr_sum / n,
                    ms_ssim=None if ms_ssim_sum is None else ms_ssim_sum / n)


def _measure(reconstruct: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
             images: ImageSet, *, device: torch.device, batch_size: int,
             classifier: nn.Module | None, size: int = 32) -> Measures:
    """MSE, MAE, PSNR (of the split and per image), SSIM, MS-SSIM and classifier accuracy
    of ``reconstruct(idx, target)`` (a batch of (B, 3, size, size) reconstructions, clamped
    here to [0, 1]) against ``target``
    (the un-normalised originals of ``images[idx]``), accumulated over ``images``."""
    if classifier is not None:
        classifier.eval()
    se = ae = ssim_sum = psnr_sum = 0.0
    ms_ssim_sum: float | None = 0.0
    correct = 0
    for idx in batch_indices(len(images), batch_size, shuffle=False, drop_last=False):
        target = to_float(images.images[idx], size, device)
        out = reconstruct(idx, target).float().clamp(0.0, 1.0)
        diff = (out - target).double()
        se += diff.pow(2).sum().item()
        ae += diff.abs().sum().item()
        ssim = structural_similarity_index_measure(out, target, data_range=1.0,
                                                   reduction="none")
        ssim_sum += float(ssim.sum())
        psnr_sum += float(psnr_per_image(out, target).sum())
        ms_ssim = ms_ssim_per_image(out, target)
        ms_ssim_sum = None if ms_ssim is None or ms_ssim_sum is None \
            else ms_ssim_sum + float(ms_ssim.sum())
        if classifier is not None:
            logits = classifier(normalize(out))
            correct += int((logits.argmax(1).cpu() == images.labels[idx]).sum())
    n = len(images)
    values = n * target.shape[1] * target.shape[2] * target.shape[3]
    mse = se / values
    return Measures(mse=mse, mae=ae / values, psnr=psnr_from_mse(mse), ssim=ssim_sum / n,
                    n_images=n, classifier_accuracy=correct / n if classifier else None,
                    psnr_per_image=psnr_sum / n,
                    ms_ssim=None if ms_ssim_sum is None else ms_ssim_sum / n)


def model_facts(model: nn.Module, latent_dim: int) -> dict[str, float | int]:
    """Size facts for the results table: parameters and the *nominal* compression ratios
    (values and float32 bytes of the code against 3×32×32 model-space inputs; not what an
    image costs: see the measured ``bytes_per_image``)."""
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "latent_dim": latent_dim,
        "compression_ratio": compression_ratio(latent_dim),
        "compression_ratio_bytes": compression_ratio_bytes(latent_dim),
    }
