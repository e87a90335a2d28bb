"""A set of uint8 images with their labels (and, when they differ in size, each image's
real size): what the data layer serves, the tiler cuts and the trainer reads."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models.datasets.base import RawSplit


@dataclass(frozen=True)
class ImageSet:
    images: torch.Tensor  # (N, C, H, W) uint8, C in {1, 3}
    labels: torch.Tensor  # (N,) int64; −1: unlabelled
    # (N, 2) int64: each image's real (H, W) at the top left of its padded slot, when the
    # images differ in size; None: every image fills (H, W).
    sizes: torch.Tensor | None = None

    @classmethod
    def of(cls, split: RawSplit) -> ImageSet:
        """A dataset entry's split as contiguous tensors (unlabelled: labels of −1)."""
        images = torch.from_numpy(split.images).contiguous()
        labels = torch.full((len(images),), -1, dtype=torch.long) if split.labels is None \
            else torch.from_numpy(split.labels).long()
        sizes = None
        if split.sizes is not None:
            sizes = torch.from_numpy(split.sizes).long().reshape(-1, 2)
            if bool((sizes == torch.tensor(images.shape[-2:])).all()):
                sizes = None  # they all fill the slot
        return cls(images, labels, sizes)

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def labelled(self) -> bool:
        return len(self) > 0 and bool((self.labels >= 0).all())

    def size_of(self, i: int) -> tuple[int, int]:
        """Image ``i``'s real (H, W)."""
        if self.sizes is None:
            return int(self.images.shape[-2]), int(self.images.shape[-1])
        return int(self.sizes[i, 0]), int(self.sizes[i, 1])

    def image(self, i: int) -> torch.Tensor:
        """Image ``i`` at its real size: uint8 (C, H, W)."""
        h, w = self.size_of(i)
        return self.images[i, :, :h, :w]

    def real_sizes(self) -> torch.Tensor:
        """(N, 2) int64: each image's real (H, W) (the slot's when :attr:`sizes` is None)."""
        if self.sizes is None:
            return torch.tensor(self.images.shape[-2:]).expand(len(self), 2).clone()
        return self.sizes

    def pixels(self) -> torch.Tensor:
        """(N,) int64: each image's real H·W."""
        if self.sizes is None:
            return torch.full((len(self),), self.images.shape[-2] * self.images.shape[-1],
                              dtype=torch.long)
        return self.sizes[:, 0] * self.sizes[:, 1]

    def subset(self, index: torch.Tensor | slice) -> ImageSet:
        sizes = self.sizes[index].contiguous() if self.sizes is not None else None
        return ImageSet(self.images[index].contiguous(), self.labels[index].contiguous(),
                        sizes)

    @property
    def nbytes(self) -> int:
        return self.images.numel() * self.images.element_size() + self.labels.numel() * 8
