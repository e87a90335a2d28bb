from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.models import resnet34

from models.recipes import build_model
from models.weights import WeightsSource, WeightsUnavailable, resolve_weights_file, weights_filename


def test_missing_weights_name_the_file_to_place(home: Path) -> None:
    with pytest.raises(WeightsUnavailable) as err:
        build_model("pretrained_resnet", weights=WeightsSource(home / "weights", download=False))
    message = str(err.value)
    assert weights_filename("resnet34") in message and str(home / "weights") in message
    assert "pretrained=false" in message
    with pytest.raises(WeightsUnavailable, match=weights_filename("vgg16_bn")):
        from models.losses import FeatureLoss

        FeatureLoss(weights=WeightsSource(home / "weights", download=False))


def test_random_init_needs_no_weights(home: Path) -> None:
    build_model("pretrained_resnet", pretrained=False,
                weights=WeightsSource(home / "none", download=False))


def test_placed_resnet_weights_are_loaded_into_the_encoder(home: Path) -> None:
    torch.manual_seed(1)
    stand_in = resnet34(weights=None).state_dict()
    folder = home / "weights"
    folder.mkdir()
    torch.save(stand_in, folder / weights_filename("resnet34"))
    source = WeightsSource(folder, download=False)
    assert resolve_weights_file("resnet34", source) == folder / weights_filename("resnet34")
    model = build_model("pretrained_resnet", weights=source)
    assert torch.equal(model.body[0].weight, stand_in["conv1.weight"])
    assert torch.equal(model.body[7][2].conv2.weight, stand_in["layer4.2.conv2.weight"])
    from models.classifier import Classifier

    classifier = Classifier(10)
    classifier.load_imagenet_body(source)
    assert torch.equal(classifier.body[1].running_mean, stand_in["bn1.running_mean"])


def test_torch_hub_cache_is_used_too(home: Path) -> None:
    hub = home / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.save(resnet34(weights=None).state_dict(), hub / weights_filename("resnet34"))
    path = resolve_weights_file("resnet34", WeightsSource(home / "empty", download=False))
    assert path == hub / weights_filename("resnet34")
