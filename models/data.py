"""Datasets held in memory as uint8 tensors, turned into float batches on the device.

Every dataset is served as 3×32×32 in [0, 1]: MNIST's grey channel is copied to three and
28→32 is resized bilinearly (align_corners=True, as the study's fastai did) per batch, on
the device. No per-sample PIL transforms run in the training loop.
"""

from __future__ import annotations

import logging
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
from models.tiles import crop_origins, cut_crops, draw_crops

log = logging.getLogger("aelab.data")

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
             generator: torch.Generator | None = None, *,
             draws: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 (B, C, H, W) → float (B, 3, size, size) in [0, 1] on ``device`` (``size``
    None: (B, 3, H, W)), augmented (see :func:`augment`) when a ``generator`` is given, or
    with ``draws`` ((B, 7) uniforms that :func:`augment` would have drawn, on any device).
    No copy when ``batch`` is already on ``device``. ValueError when both are given."""
    if generator is not None and draws is not None:
        raise ValueError("give a generator or the draws made from it, not both")
    x = batch.to(device, non_blocking=True).float().div_(255.0)
    if size is not None and (x.shape[-1] != size or x.shape[-2] != size):
        x = torch.nn.functional.interpolate(
            x, size=(size, size), mode="bilinear", align_corners=True
        ).clamp_(0.0, 1.0)
    # Augmented before the grey → RGB copy: a third of the work.
    if generator is not None:
        x = augment(x, generator)
    elif draws is not None:
        x = augment_drawn(x, draws)
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
    Input and target share it: call it once and derive both from the result. Draws
    ``torch.rand(B, 7)`` on the CPU ``generator`` (see :func:`augment_drawn`).
    """
    return augment_drawn(x, torch.rand(x.shape[0], 7, generator=generator).to(x.device),
                         p_lighting, flips)


def augment_drawn(x: torch.Tensor, r: torch.Tensor, p_lighting: float = 0.75,
                  flips: Literal["dihedral", "horizontal"] = "dihedral",
                  select: Literal["index", "where"] | None = None) -> torch.Tensor:
    """:func:`augment` with its uniforms given: ``r`` (B, 7) in [0, 1), moved to ``x``'s
    device if elsewhere. ``x`` (B, C, S, S) float (square: a transpose keeps its shape).
    ``select``: how flipped images are chosen — ``"index"`` gathers them (fastest on the
    CPU), ``"where"`` flips all and selects (no host sync: on accelerators); None: by
    ``x``'s device. Both give identical values."""
    b = x.shape[0]
    r = r.to(x.device, non_blocking=True)
    if select is None:
        select = "index" if x.device.type == "cpu" else "where"
    x = x.clone() if select == "index" else x  # "where" makes new tensors itself

    def apply(mask: torch.Tensor, fn) -> torch.Tensor:  # type: ignore[no-untyped-def]
        if select == "where":
            return torch.where(mask.view(b, 1, 1, 1), fn(x), x)
        idx = mask.nonzero().squeeze(1)  # a host sync on an accelerator
        if len(idx):
            x[idx] = fn(x[idx])
        return x

    x = apply(r[:, 1] < 0.5, lambda t: t.flip(-1))
    if flips == "dihedral":
        # Transpose, h-flip, v-flip: the 2×2×2 choices are the 8 dihedral maps.
        x = apply(r[:, 0] < 0.5, lambda t: t.transpose(-1, -2))
        x = apply(r[:, 2] < 0.5, lambda t: t.flip(-2))

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
# A run's images where its batches are made

DEVICE_DATA_FRACTION = 0.25  # a run's splits go to a CUDA device when they take at most
# this share of its free memory (torch.cuda.mem_get_info): four runs may share a GPU.


@dataclass(frozen=True)
class EpochDraws:
    """One epoch's images and every random number its batches use, drawn at its start."""

    images: torch.Tensor  # uint8 (N, C, h, w): the epoch's training images (fresh crops
    # when the run trains on crops of whole images), where ResidentSplits keeps them
    order: torch.Tensor  # int64 (steps, batch): each batch's image indices, same device
    draws: torch.Tensor | None  # float32 (steps, batch, 7): augment's uniforms per batch,
    # on the run's device; None: not augmented

    def __len__(self) -> int:
        return self.order.shape[0]


class ResidentSplits:
    """A run's training and validation images placed once where its batches are made.

    On the CPU they are the host's own tensors (no copy). On CUDA they are copied to the
    device once, as uint8, when they take at most ``fraction`` of its free memory; then
    every batch is sliced, resized and augmented there and nothing crosses the bus per
    batch. Otherwise they stay on the host (logged) and each batch is gathered into
    pinned memory and copied asynchronously. Training on crops of whole images keeps the
    whole images resident and cuts each epoch's crops where they are.
    """

    def __init__(self, data: DataSplits, device: torch.device | str,
                 fraction: float = DEVICE_DATA_FRACTION) -> None:
        self.device = torch.device(device)
        self.whole = data.train_images  # the host ImageSet its crops' positions come from
        self.crop = data.crop
        train = (self.whole or data.train).images
        nbytes = train.numel() * train.element_size() + data.val.images.numel()
        self.on_device = self.device.type != "cuda" or \
            _fits(nbytes, self.device, fraction)
        where = self.device if self.on_device else torch.device("cpu")
        self.train = train.to(where)
        self.val = data.val.images.to(where)
        self.train_sizes = self.whole.real_sizes().to(where) if self.whole else None
        if self.device.type == "cuda":
            if self.on_device:
                log.info("%s: training and validation images on %s as uint8 (%.0f MiB)",
                         data.name, self.device, nbytes / 2**20)
            else:
                log.warning("%s: training and validation images (%.0f MiB) exceed %.0f %% "
                            "of %s's free memory: they stay on the host and each batch is "
                            "copied", data.name, nbytes / 2**20, fraction * 100, self.device)

    def epoch(self, batch_size: int, generator: torch.Generator, *,
              augment: bool) -> EpochDraws:
        """The epoch's images and draws, made on the CPU ``generator`` in the order the
        per-batch loop drew them (crop positions when cropped, ``randperm(N)``, then
        ``rand(batch, 7)`` per whole batch — ``rand(steps·batch, 7)`` in one call is the
        same stream) and moved to the device once. A last partial batch draws nothing."""
        if self.whole is not None:
            assert self.train_sizes is not None
            owner, ys, xs = crop_origins(self.whole, self.crop, generator)
            images = cut_crops(self.train, self.train_sizes, owner, ys, xs, self.crop)
        else:
            images = self.train
        n = images.shape[0]
        steps = n // batch_size
        order = torch.randperm(n, generator=generator)[: steps * batch_size]
        order = order.view(steps, batch_size).to(images.device)
        draws = None
        if augment:
            draws = torch.rand(steps * batch_size, 7, generator=generator)
            draws = draws.view(steps, batch_size, 7).to(self.device)
        return EpochDraws(images, order, draws)

    def batch(self, images: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """uint8 images ``idx`` of ``images`` (held by this object) on the device."""
        if self.on_device:
            return images.index_select(0, idx)
        pinned = torch.empty((len(idx), *images.shape[1:]), dtype=images.dtype,
                             pin_memory=True)
        torch.index_select(images, 0, idx, out=pinned)
        return pinned.to(self.device, non_blocking=True)


def _fits(nbytes: int, device: torch.device, fraction: float) -> bool:
    free, _total = torch.cuda.mem_get_info(device)
    return nbytes <= fraction * free


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
