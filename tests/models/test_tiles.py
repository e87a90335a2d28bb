"""Any size: random crops to train on, whole images coded as tiles, measured over their
real pixels."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from models.data import IMAGENET_MEAN, IMAGENET_STD, ImageSet, load_dataset
from models.datasets.folder import use_root
from models.metrics import evaluate
from models.tiles import draw_crops, from_tiles, to_tiles
from tests.utils import image_folder


class Identity(nn.Module):
    """An 'autoencoder' that returns its (un-normalised) input exactly: the uint8 values
    are recovered by rounding, as to_float made them (v / 255)."""

    def __init__(self) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.zeros(1))  # a device to be on

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return (x * std + mean).mul(255).round().div(255)


def mixed() -> ImageSet:
    g = torch.Generator().manual_seed(0)
    images = torch.zeros(3, 3, 70, 96, dtype=torch.uint8)
    sizes = torch.tensor([[64, 96], [70, 50], [20, 33]])
    for i, (h, w) in enumerate(sizes.tolist()):
        images[i, :, :h, :w] = torch.randint(0, 256, (3, h, w), generator=g,
                                             dtype=torch.uint8)
    return ImageSet(images, torch.tensor([0, 1, 0]), sizes)


def test_tiles_put_back_together_are_each_image_exactly() -> None:
    images = mixed()
    tiles, tiling = to_tiles(images, 32)
    assert tiling.grid == [(2, 3), (3, 2), (1, 2)] and tiles.images.shape == (14, 3, 32, 32)
    assert tiles.labels.tolist() == [0] * 6 + [1] * 6 + [0] * 2
    back = from_tiles(tiles.images, tiling)
    for i, b in enumerate(back):
        assert torch.equal(b, images.image(i))
    # the padding repeats the last row and column: it is never zero-filled
    assert torch.equal(tiles.images[13, :, :20, 1:], images.image(2)[:, :, 32:].expand(
        3, 20, 1).expand(3, 20, 31))


def test_an_identity_model_measures_zero_error_over_whole_images() -> None:
    m = evaluate(Identity(), mixed(), whole_crop=32)
    assert (m.mse, m.mae, m.n_images) == (0.0, 0.0, 3)
    assert m.ssim == pytest.approx(1.0)


def test_crops_are_drawn_inside_each_image_as_many_as_its_area_holds() -> None:
    images = mixed()
    crops = draw_crops(images, 32, torch.Generator().manual_seed(1))
    assert crops.images.shape == (6 + 2 + 1, 3, 32, 32)
    assert crops.labels.tolist() == [0] * 6 + [1] * 2 + [0]
    whole = images.image(0)
    windows = whole.unfold(1, 32, 1).unfold(2, 32, 1)  # every 32×32 window
    for c in crops.images[:6]:
        assert (windows == c[:, None, None]).flatten(3).all(3).all(0).any()


def test_a_folder_of_larger_images_trains_on_crops_and_tests_whole(tmp_path: Path) -> None:
    use_root(tmp_path)
    try:
        image_folder(tmp_path, "big", size=(64, 96), train=5, test=2)
        data = load_dataset("big", "/unused", crop=32, validation="test")
    finally:
        use_root(None)
    assert data.whole and data.test.images.shape == (4, 3, 64, 96)
    assert data.train.images.shape == (10 * 6, 3, 32, 32)
    again = data.epoch_train(torch.Generator().manual_seed(5))
    assert again.images.shape == data.train.images.shape
    assert not torch.equal(again.images, data.train.images)  # fresh crops each epoch
    small = load_dataset("synthetic", "/unused", train_limit=32, test_limit=8, crop=32)
    assert not small.whole and small.train_images is None
