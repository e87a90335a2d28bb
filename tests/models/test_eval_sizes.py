"""A trained model measured at other sizes (``evaluation.sizes``): which sizes each
architecture takes, and the measures there against an independent computation."""

from __future__ import annotations

import pytest
import torch

from models.architectures import ConvAutoencoder
from models.builders import get_architecture
from models.catalog import ARCHITECTURES, PRESETS, size_problem
from models.data import normalize, to_float
from models.metrics import evaluate_sizes
from models.tiles import from_tiles, to_tiles
from tests.models.test_tiles import mixed


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_the_catalogs_sizes_are_those_the_built_model_takes(name: str) -> None:
    """The torch-free rule (the API, the results) and the model's own set_output_size
    agree on every built-in architecture."""
    crop = 64 if name == "resnet" else 32
    model = get_architecture(name, latent_dim=16, crop=crop)
    recipe = next(v.recipe for v in PRESETS.values() if v.architecture == name)
    for size in (crop // 4, crop // 2, crop - 4, crop, 2 * crop):
        problem = size_problem(recipe, crop, size)
        try:
            model.set_output_size(size)
            took = True
        except ValueError:
            took = False
        assert took == (problem is None), (name, size, problem)
        model.set_output_size(crop)
    assert size_problem(recipe, crop, crop // 2) == (
        None if ARCHITECTURES[name].resizable else
        f"{name} cannot change its output size: a model trained at {crop} px takes "
        f"{crop} px only")


def _mse_at(model: ConvAutoencoder, images: torch.Tensor, size: int) -> float:
    """The model's MSE with input and output at ``size``, computed here by hand."""
    model.set_output_size(size)
    x = to_float(images, size)
    with torch.no_grad():
        out = model(normalize(x)).clamp(0, 1)
    model.set_output_size(model.crop)
    assert out.shape[-1] == size
    return float((out.double() - x.double()).pow(2).mean())


def test_resized_images_are_measured_at_each_size(synthetic_splits) -> None:
    torch.manual_seed(0)
    model = ConvAutoencoder(latent_dim=64).eval()
    test = synthetic_splits.test.subset(slice(0, 16))
    at = evaluate_sizes(model, test, [16, 32], crop=32, whole=False)
    assert at[16].mse == pytest.approx(_mse_at(model, test.images, 16), rel=1e-6)
    assert at[32].mse == pytest.approx(_mse_at(model, test.images, 32), rel=1e-6)
    assert at[16].mse != pytest.approx(at[32].mse, rel=1e-3)
    assert model.decoder[3].factor == 2  # back at its crop afterwards


def test_whole_images_are_tiles_of_each_size() -> None:
    torch.manual_seed(0)
    model = ConvAutoencoder(latent_dim=64).eval()
    images = mixed()  # 64×96, 70×50 and 20×33 images
    at = evaluate_sizes(model, images, [16], crop=32, whole=True)
    tiles, tiling = to_tiles(images, 16)
    assert tiling.count == 4 * 6 + 5 * 4 + 2 * 3
    model.set_output_size(16)
    with torch.no_grad():
        out = model(normalize(to_float(tiles.images, None))).clamp(0, 1)
    model.set_output_size(32)
    se = values = 0.0
    for i, whole in enumerate(from_tiles(out, tiling)):
        diff = whole.double() - to_float(images.image(i)[None], None)[0].double()
        se, values = se + float(diff.pow(2).sum()), values + diff.numel()
    assert values == 3 * (64 * 96 + 70 * 50 + 20 * 33)  # real pixels: no padding counted
    assert at[16].mse == pytest.approx(se / values, rel=1e-6)
    assert at[16].n_images == 3


class _Pooled(torch.nn.Module):
    """A 'classifier' of any input size: 2 logits from the channel means."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean((2, 3)))


def test_the_classifier_is_asked_only_about_what_it_was_trained_on(synthetic_splits
                                                                   ) -> None:
    """Resized to 16 px the reference classifier (trained at the crop) would judge
    images it never saw; whole images are whole at any tile size."""
    torch.manual_seed(0)
    model = ConvAutoencoder(latent_dim=64).eval()
    test = synthetic_splits.test.subset(slice(0, 8))
    resized = evaluate_sizes(model, test, [16, 32], crop=32, whole=False,
                             classifier=_Pooled())
    assert resized[16].classifier_accuracy is None
    assert resized[32].classifier_accuracy is not None
    whole = evaluate_sizes(model, mixed(), [16], crop=32, whole=True, classifier=_Pooled())
    assert whole[16].classifier_accuracy is not None


class _Net(torch.nn.Module):
    """A plugin's module: 8×8 average codes of a 64-px image, upsampled back."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(x, 8).flatten(1) * self.scale  # (B, 192)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(z.view(-1, 3, 8, 8), scale_factor=8)


def test_a_plugin_built_for_its_crop_takes_that_crop_only() -> None:
    from models.builders import PluginAutoencoder

    model = PluginAutoencoder(_Net(), 192, "pooled", crop=64)
    model.set_output_size(64)  # what every phase of its training asks first
    with pytest.raises(ValueError, match="trains at 64 px only"):
        model.set_output_size(32)
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    from models.images import ImageSet

    at = evaluate_sizes(model, ImageSet(images, torch.tensor([-1, -1])), [64], crop=64,
                        whole=False)
    assert at[64].n_images == 2 and at[64].mse > 0
