"""Datasets held in memory as uint8 tensors, turned into float batches on the device.

Every dataset is served as 3×32×32 in [0, 1]: MNIST's grey channel is copied to three and
28→32 is resized bilinearly (align_corners=True, as the study's fastai did) per batch, on
the device. No per-sample PIL transforms run in the training loop.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import torch

from models.catalog import IMAGE_SIZE
from models.datasets import (  # noqa: F401  (DatasetUnavailable, is_available re-exported)
    DatasetUnavailable,
    RawSplit,
    Validation,
    dataset_entry,
    is_available,
    split_sizes,
)
from models.datasets.mnist import install_offline_mnist, mnist_offline_source  # noqa: F401
from models.datasets.synthetic import generate
from models.images import ImageSet
from models.tiles import draw_crops

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DataSplits:
    name: str
    train: ImageSet
    val: ImageSet  # the test split itself when validation == "test" (the study's way)
    test: ImageSet
    num_classes: int
    # The model's input side (data.crop). ``whole``: the images are larger than the crop
    # (or differ in size): ``train`` and ``val`` are random crops of the images in
    # ``train_images`` and the held-out ones, ``test`` holds whole images, evaluated as
    # tiles (models.tiles). Otherwise (MNIST, CIFAR-10, synthetic at 32) every image is
    # served resized to the crop, as the study did.
    crop: int = IMAGE_SIZE
    whole: bool = False
    train_images: ImageSet | None = None  # the whole training images, when ``whole``

    def epoch_train(self, generator: torch.Generator) -> ImageSet:
        """An epoch's training images: fresh random crops from ``generator`` when
        ``whole``, else :attr:`train` itself (``generator`` untouched)."""
        if self.train_images is None:
            return self.train
        return draw_crops(self.train_images, self.crop, generator)




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


def to_float(batch: torch.Tensor, size: int | None = IMAGE_SIZE,
             device: torch.device | str | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """uint8 (B, C, H, W) → float (B, 3, size, size) in [0, 1] on ``device`` (``size``
    None: (B, 3, H, W)), augmented (see :func:`augment`) when a ``generator`` is given."""
    x = batch.to(device, non_blocking=True).float().div_(255.0)
    if size is not None and (x.shape[-1] != size or x.shape[-2] != size):
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
# Loading through the dataset registry


@lru_cache(maxsize=8)
def synthetic(n: int, seed: int) -> ImageSet:
    """``n`` images of the ``synthetic`` dataset's generator (deterministic in seed)."""
    return ImageSet.of(generate(n, seed))


def ensure_downloaded(name: str, root: Path) -> None:
    """Download ``name`` into ``root`` (raises DatasetUnavailable)."""
    dataset_entry(name).download(root)


@lru_cache(maxsize=4)
def _load_full(name: str, root: Path, download: bool) -> tuple[ImageSet, ImageSet]:
    """Whole train and test splits, loaded once per process (shared by every trial)."""
    train, test = dataset_entry(name).read(root, download)
    return ImageSet.of(train), ImageSet.of(test)


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
    crop: int = IMAGE_SIZE,
) -> DataSplits:
    """Train/validation/test splits of ``name`` (any entry of ``models.datasets``).

    ``validation="holdout"`` (default) holds out ``val_fraction`` of the training images;
    ``"test"`` validates on the test split, as the study did. ``train_limit`` caps the
    training images (the held-out part is taken in proportion: ``split_sizes``);
    ``test_limit`` takes the first test images, so sample figures use the same images
    whatever the limit. Images larger than ``crop`` (``DatasetInfo.whole_at``) train and
    validate on random crops of their images (the validation crops drawn once from
    ``seed``) and are tested whole.
    """
    entry = dataset_entry(name)  # KeyError listing the valid names
    full_train, full_test = _load_full(name, Path(root).expanduser().resolve(), download)
    test = full_test.subset(slice(0, test_limit)) if test_limit else full_test
    order = torch.randperm(len(full_train), generator=torch.Generator().manual_seed(seed))
    n_train, n_val = split_sizes(len(full_train), train_limit, validation, val_fraction)
    if validation == "test":
        train = full_train.subset(order[:n_train]) if train_limit else full_train
        val = test
    else:
        val = full_train.subset(order[:n_val])
        train = full_train.subset(order[n_val : n_val + n_train])
    classes = entry.info.num_classes or 0
    if not entry.info.whole_at(crop):
        return DataSplits(name, train, val, test, classes, crop)
    drawn = torch.Generator().manual_seed(seed)
    val_crops = draw_crops(val, crop, drawn)  # of the test images when validation="test"
    return DataSplits(name, draw_crops(train, crop, drawn), val_crops, test, classes, crop,
                      whole=True, train_images=train)
