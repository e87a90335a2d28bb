from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from models.classifier import (
    ClassifierConfig,
    accuracy,
    load_classifier,
    save_classifier,
    train_classifier,
)
from models.data import ImageSet, load_dataset, normalize, to_float
from models.lr_finder import lr_range_test, steepest_descent
from models.metrics import evaluate, model_facts, psnr_from_mse
from models.samples import sample_grid
from models.training import TrainConfig, train


def ssim_by_hand(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two (C, H, W) images in [0, 1] as Wang et al. (2004) define it (local
    statistics under an 11×11 Gaussian window, σ 1.5; C1 = 0.01², C2 = 0.03²), at every
    pixel of the image mirrored at its borders (torchmetrics' reflect padding), averaged."""
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    window = np.outer(g, g) / g.sum() ** 2

    def local(img: np.ndarray) -> np.ndarray:
        padded = np.pad(img, ((0, 0), (5, 5), (5, 5)), mode="reflect")
        patches = np.lib.stride_tricks.sliding_window_view(padded, (11, 11), axis=(1, 2))
        return (patches * window).sum(axis=(-2, -1))

    mu_a, mu_b = local(a), local(b)
    var_a = np.maximum(local(a * a) - mu_a**2, 0)
    var_b = np.maximum(local(b * b) - mu_b**2, 0)
    cov = local(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    return float(np.mean((2 * mu_a * mu_b + c1) * (2 * cov + c2)
                         / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))))


class Identity(nn.Module):
    """Undoes ImageNet normalisation: a perfect autoencoder."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        return x * std + mean


class Constant(nn.Module):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x, self.value)


def test_measures_of_a_constant_prediction_by_hand() -> None:
    pixels = np.array([0, 51, 102, 153, 204, 255], dtype=np.uint8)
    images = torch.from_numpy(np.resize(pixels, (2, 3, 32, 32)).astype(np.uint8))
    data = ImageSet(images, torch.zeros(2, dtype=torch.long))
    m = evaluate(Constant(0.5), data, batch_size=1)
    x = images.numpy() / 255.0
    assert m.mse == pytest.approx(((x - 0.5) ** 2).mean(), rel=1e-6)
    assert m.mae == pytest.approx(np.abs(x - 0.5).mean(), rel=1e-6)
    assert m.psnr == pytest.approx(10 * math.log10(1 / m.mse))
    assert m.n_images == 2 and m.classifier_accuracy is None


def test_perfect_reconstruction_scores_perfectly(synthetic_splits) -> None:
    m = evaluate(Identity(), synthetic_splits.test)
    assert m.mse < 1e-10 and m.mae < 1e-5
    assert m.ssim == pytest.approx(1.0, abs=1e-3)
    assert psnr_from_mse(0.0) == math.inf


def test_measures_of_a_trained_model_are_its_reconstructions_errors(tiny_splits) -> None:
    """evaluate() against the same errors computed here, over uneven batches (32 images in
    batches of 5): a per-batch mean, a dropped last batch or a missed clamp would differ."""
    result = train(TrainConfig("baseline", epochs=1, batch_size=16, pretrained=False),
                   tiny_splits)
    test = tiny_splits.test
    x = to_float(test.images)
    with torch.no_grad():
        out = result.model.eval()(normalize(x)).clamp(0, 1).double().numpy()
    err = out - x.double().numpy()
    m = evaluate(result.model, test, batch_size=5)
    assert m.n_images == len(test) == 32
    assert m.mse == pytest.approx((err**2).mean(), rel=1e-6)
    assert m.mae == pytest.approx(np.abs(err).mean(), rel=1e-6)
    assert m.psnr == pytest.approx(10 * math.log10(1 / (err**2).mean()), rel=1e-6)
    whole = evaluate(result.model, test, batch_size=256)  # one batch: the same numbers
    assert (whole.mse, whole.mae) == pytest.approx((m.mse, m.mae), rel=1e-9)
    assert whole.ssim == pytest.approx(m.ssim, rel=1e-6)
    ssim = [ssim_by_hand(o, t) for o, t in zip(out, x.double().numpy(), strict=True)]
    assert m.ssim == pytest.approx(float(np.mean(ssim)), abs=1e-4)  # the images' mean
    facts = model_facts(result.model, 1000)
    assert facts["params"] == 3_080_629 and facts["compression_ratio"] == pytest.approx(3.072)


def test_reference_classifier_learns_and_scores_reconstructions(tmp_path: Path) -> None:
    data = load_dataset("synthetic", "/unused", train_limit=1024, test_limit=256)
    classifier, acc = train_classifier(
        ClassifierConfig(arch="small", frozen_epochs=5, unfrozen_epochs=0, pretrained=False,
                         lr=1e-2, batch_size=64), data)
    assert acc > 0.5  # ten classes: chance is 0.1
    assert acc == accuracy(classifier, data.test)
    # A perfect autoencoder keeps the classifier's accuracy; a constant one destroys it.
    assert evaluate(Identity(), data.test, classifier=classifier).classifier_accuracy == \
        pytest.approx(acc)
    assert evaluate(Constant(0.5), data.test, classifier=classifier).classifier_accuracy < acc
    save_classifier(classifier, ClassifierConfig(), acc, tmp_path / "clf.pt")
    loaded, stored_acc = load_classifier(tmp_path / "clf.pt")
    assert stored_acc == acc and accuracy(loaded, data.test) == acc


def test_study_classifier_is_resnet34_with_fastai_head() -> None:
    from models.classifier import Classifier

    model = Classifier(10)
    params = sum(p.numel() for p in model.parameters())
    assert abs(params - 21.8e6) / 21.8e6 < 0.01  # the study's summary: 21.8 M
    assert model(torch.rand(4, 3, 32, 32)).shape == (4, 10)
    with pytest.raises(ValueError, match="no ImageNet weights"):
        Classifier(10, "small").load_imagenet_body(None)  # type: ignore[arg-type]


def test_steepest_descent_finds_the_steepest_point() -> None:
    lrs = list(np.logspace(-7, 1, 50))
    losses = [1.0 / (1 + math.exp(4 * (math.log10(lr) + 3))) for lr in lrs]  # drop at 1e-3
    assert 3e-4 < steepest_descent(lrs, losses, skip_end=0) < 3e-3


def test_suggestion_reads_the_curve_as_fastais_recorder() -> None:
    """A 20-step sweep: a noisy plunge at step 3 (the start the issue saw chosen), the
    real descent steepest at step 14, then divergence. fastai skips the first 10 and the
    last 5 points and takes the steepest remaining step."""
    lrs = [1e-7 * 10 ** (8 * i / 19) for i in range(20)]
    losses = [0.30, 0.30, 0.29, 0.10, 0.28, 0.28, 0.28, 0.28, 0.27, 0.27,
              0.26, 0.25, 0.23, 0.20, 0.12, 0.11, 0.10, 0.40, 0.90, 2.00]
    assert steepest_descent(lrs, losses) == lrs[14]
    assert steepest_descent(lrs, losses, skip_start=0, skip_end=0) == lrs[2]  # naive read
    # Too short to skip (diverged early): the lowest loss's LR / 10.
    assert steepest_descent(lrs[:12], losses[:12]) == pytest.approx(lrs[3] / 10)


def test_range_test_sweeps_exponentially_stops_at_divergence_and_reads_the_curve(
        tiny_splits) -> None:
    config = TrainConfig("baseline", epochs=1, batch_size=16, pretrained=False, augment=False)
    result = lr_range_test(config, tiny_splits.train, start_lr=1e-6, end_lr=10, num_steps=30)
    n = len(result.lrs)
    assert len(result.losses) == n
    # Step i trains at 1e-6 · (1e7)^(i/29): the 30 steps would end exactly at end_lr.
    assert result.lrs == pytest.approx([1e-6 * 1e7 ** (i / 29) for i in range(n)], rel=1e-9)
    # It stops at the first smoothed loss above 4× the best so far, and only there.
    best = [min(result.losses[: i + 1]) for i in range(n)]
    assert all(loss <= 4 * b for loss, b in zip(result.losses[:-1], best, strict=False))
    assert result.diverged == (result.losses[-1] > 4 * best[-1])
    assert result.diverged == (n < 30)
    assert result.suggestion == steepest_descent(result.lrs, result.losses)


def test_range_test_leaves_model_and_optimizer_untouched(tiny_splits) -> None:
    from models.lr_finder import range_test
    from models.recipes import make_optimizer

    model = nn.Sequential(nn.Flatten(), nn.Linear(3072, 3072), nn.Unflatten(1, (3, 32, 32)))
    opt = make_optimizer([{"params": list(model.parameters())}], 0.01)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    range_test(model, nn.MSELoss(), opt, tiny_splits.train, num_steps=10, batch_size=16)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert opt.state_dict()["state"] == {}


def test_sample_grid_puts_input_left_and_reconstruction_right(synthetic_splits) -> None:
    png = sample_grid(Constant(0.0), synthetic_splits.test, indices=(1, 2), scale=1)
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert img.shape == (2 + 2 * 34, 2 + 2 * 34, 3)
    left = img[2:34, 2:34].transpose(2, 0, 1)
    expected = (to_float(synthetic_splits.test.images[1:2])[0] * 255).round().byte().numpy()
    assert np.array_equal(left, expected)
    assert img[2:34, 36:68].max() == 0  # the constant-zero reconstruction


def test_psnr_per_image_is_the_mean_of_each_images_psnr_not_the_splits() -> None:
    """CompressAI's convention (mean of per-image PSNRs) beside the split-level PSNR: equal
    to per-image PSNRs computed here by hand, and above the split's on unequal errors."""
    from models.metrics import measure_outputs

    rng = np.random.default_rng(0)
    originals = rng.integers(40, 200, size=(6, 3, 32, 32), dtype=np.uint8)
    images = ImageSet(torch.from_numpy(originals), torch.arange(6))
    noise = rng.normal(size=originals.shape) * np.array([1, 2, 4, 8, 16, 32]).reshape(6, 1, 1, 1)
    outputs = np.clip(originals / 255.0 + noise / 255.0, 0, 1)
    m = measure_outputs(torch.from_numpy(outputs).float(), images)
    reference = outputs.astype(np.float32).astype(np.float64)  # the outputs as measured
    per_image_mse = ((reference - originals / 255.0) ** 2).reshape(6, -1).mean(1)
    assert m.psnr_per_image == pytest.approx(np.mean(10 * np.log10(1 / per_image_mse)),
                                             abs=1e-6)
    assert m.psnr == pytest.approx(10 * np.log10(1 / per_image_mse.mean()), abs=1e-6)
    assert m.psnr_per_image - m.psnr > 3.0  # errors 32× apart: far from equal
    assert m.ms_ssim is None  # 32 px: too small for MS-SSIM's 5 scales
    same = measure_outputs(torch.from_numpy(np.repeat(outputs[:1], 6, 0)).float(),
                           ImageSet(torch.from_numpy(np.repeat(originals[:1], 6, 0)),
                                    torch.arange(6)))
    assert same.psnr_per_image == pytest.approx(same.psnr)  # equal errors: the same value


def test_ms_ssim_is_measured_on_images_large_enough_for_its_five_scales() -> None:
    from models.metrics import MS_SSIM_MIN_SIDE, ms_ssim_per_image

    g = torch.Generator().manual_seed(0)
    target = torch.rand(2, 3, MS_SSIM_MIN_SIDE, MS_SSIM_MIN_SIDE, generator=g)
    noisy = (target + 0.1 * torch.randn(target.shape, generator=g)).clamp(0, 1)
    exact, off = ms_ssim_per_image(target, target), ms_ssim_per_image(noisy, target)
    assert exact is not None and off is not None
    assert exact.tolist() == pytest.approx([1.0, 1.0], abs=1e-5)
    assert off.shape == (2,) and bool((off < 0.99).all())
    small = target[..., : MS_SSIM_MIN_SIDE - 1, : MS_SSIM_MIN_SIDE - 1]
    assert ms_ssim_per_image(small, small) is None
