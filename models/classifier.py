"""The reference classifier behind "classifier accuracy" (seed-experiment §5.2).

fastai's ``cnn_learner(resnet34)``: the ResNet34 body and fastai's head. Trained once per
dataset on the original images, then frozen and reused for every autoencoder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import torch
from torch import nn
from torchvision.models import resnet34

from models.architectures import ConcatPool
from models.data import (
    DataSplits,
    ImageSet,
    augment,
    batch_indices,
    normalize,
    steps_per_epoch,
    to_float,
)
from models.recipes import make_optimizer, make_scheduler
from models.training import autocast, resolve_device
from models.weights import WeightsSource, resnet34_body_state

ClassifierArch = Literal["resnet34", "small"]


def _small_body() -> nn.Sequential:
    """Three conv blocks (≈60k parameters): a cheap stand-in for CPU demos and tests."""
    layers: list[nn.Module] = []
    for ni, nf in ((3, 32), (32, 64), (64, 64)):
        layers += [nn.Conv2d(ni, nf, 3, padding=1, bias=False), nn.BatchNorm2d(nf),
                   nn.ReLU(inplace=True), nn.MaxPool2d(2)]
    return nn.Sequential(*layers)


class Classifier(nn.Module):
    """``resnet34``: the study's ResNet34 body + fastai head. ``small``: a three-block CNN
    with a linear head, for CPU-sized budgets."""

    def __init__(self, num_classes: int = 10, arch: ClassifierArch = "resnet34") -> None:
        super().__init__()
        self.arch = arch
        self.num_classes = num_classes
        if arch == "small":
            self.body = _small_body()
            self.head = nn.Sequential(ConcatPool(), nn.Flatten(), nn.Linear(128, num_classes))
            return
        self.body = nn.Sequential(*list(resnet34(weights=None).children())[:-2])
        self.head = nn.Sequential(
            ConcatPool(), nn.Flatten(),  # (B, 1024)
            nn.BatchNorm1d(1024), nn.Dropout(0.25), nn.Linear(1024, 512), nn.ReLU(inplace=True),
            nn.BatchNorm1d(512), nn.Dropout(0.5), nn.Linear(512, num_classes),
        )
        for m in self.head:
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    def load_imagenet_body(self, weights: WeightsSource) -> None:
        if self.arch != "resnet34":
            raise ValueError(f"no ImageNet weights for the {self.arch!r} classifier")
        self.body.load_state_dict(resnet34_body_state(weights))

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """fastai's three groups: stem + layer1-2 | layer3-4 | head."""
        if self.arch == "small":
            return [list(self.body[:4].parameters()), list(self.body[4:].parameters()),
                    list(self.head.parameters())]
        return [list(self.body[:6].parameters()), list(self.body[6:].parameters()),
                list(self.head.parameters())]


@dataclass
class ClassifierConfig:
    """The study's budget is 11 frozen + 10 unfrozen epochs; tests use a tiny one."""

    arch: ClassifierArch = "resnet34"
    frozen_epochs: int = 11
    unfrozen_epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 128
    pretrained: bool = True
    weights_dir: str | None = None
    allow_download: bool = True
    seed: int = 0
    device: str | None = None


def _freeze_body(model: Classifier, frozen: bool) -> None:
    for m in model.body.modules():
        for p in m.parameters(recurse=False):
            # fastai's train_bn: BatchNorm stays trainable in a frozen body.
            p.requires_grad = not frozen or isinstance(m, nn.BatchNorm2d)


def train_classifier(config: ClassifierConfig, data: DataSplits,
                     on_epoch: Callable[[int, int], None] | None = None
                     ) -> tuple[Classifier, float]:
    """Train on ``data.train``; returns the classifier (eval mode) and its test accuracy.
    ``on_epoch(done, total)`` after each epoch, for progress."""
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    model = Classifier(data.num_classes, config.arch)
    if config.pretrained:
        folder = Path(config.weights_dir).expanduser() if config.weights_dir else None
        model.load_imagenet_body(WeightsSource(folder, config.allow_download))
    model.to(device)
    generator = torch.Generator().manual_seed(config.seed)
    steps = steps_per_epoch(len(data.train), config.batch_size)
    loss_fn = nn.CrossEntropyLoss()
    # Pretrained: frozen body first, then everything with slice(lr/1000, lr) over 3 groups.
    # From random init there is nothing to protect: all epochs train everything.
    if config.pretrained:
        plan = [(True, config.frozen_epochs), (False, config.unfrozen_epochs)]
    else:
        plan = [(False, config.frozen_epochs + config.unfrozen_epochs)]
    total, done = sum(max(0, epochs) for _, epochs in plan), 0
    for frozen, epochs in plan:
        if epochs <= 0:
            continue
        _freeze_body(model, frozen)
        if frozen:
            groups = [{"params": [p for p in g if p.requires_grad]} for g in model.layer_groups()]
            lrs = [config.lr] * 3
        else:
            groups = [{"params": g} for g in model.layer_groups()]
            lrs = [config.lr / 1000, config.lr / 1000**0.5, config.lr] if config.pretrained \
                else [config.lr] * 3
        optimizer = make_optimizer(groups, weight_decay=0.01)
        scheduler = make_scheduler(optimizer, lrs, epochs * steps)
        for _ in range(epochs):
            model.train()
            for idx in batch_indices(len(data.train), config.batch_size, shuffle=True,
                                     drop_last=True, generator=generator):
                x = augment(to_float(data.train.images[idx], data.crop, device), generator,
                            flips="horizontal")
                with autocast(device):
                    logits = model(normalize(x))
                loss = loss_fn(logits.float(), data.train.labels[idx].to(device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
            done += 1
            if on_epoch is not None:
                on_epoch(done, total)
    model.requires_grad_(False)
    model.eval()
    if data.whole:
        return model, whole_accuracy(model, data.test, device=device)
    return model, accuracy(model, data.test, device=device, size=data.crop)


@torch.no_grad()
def whole_accuracy(classifier: nn.Module, images: ImageSet, *,
                   device: torch.device | str = "cpu") -> float:
    """Top-1 accuracy on each original image whole, at its real size (the classifier
    pools globally), as reconstructions are classified (``models.metrics.measure_whole``)."""
    classifier.eval()
    correct = 0
    for i in range(len(images)):
        x = to_float(images.image(i)[None], None, device)
        correct += int(classifier(normalize(x)).argmax(1).item() == images.labels[i])
    return correct / max(1, len(images))


@torch.no_grad()
def accuracy(classifier: nn.Module, images: ImageSet, *, device: torch.device | str = "cpu",
             batch_size: int = 256, size: int = 32) -> float:
    """Top-1 accuracy on the original images."""
    classifier.eval()
    correct = 0
    for idx in batch_indices(len(images), batch_size, shuffle=False, drop_last=False):
        logits = classifier(normalize(to_float(images.images[idx], size, device)))
        correct += int((logits.argmax(1).cpu() == images.labels[idx]).sum())
    return correct / len(images)


def save_classifier(model: Classifier, config: ClassifierConfig, accuracy_: float,
                    path: Path | str | BinaryIO) -> None:
    torch.save({"state": model.state_dict(), "num_classes": model.num_classes,
                "arch": model.arch,
                "config": asdict(config), "accuracy": accuracy_}, path)


def load_classifier(path: Path | str | BinaryIO, device: torch.device | str = "cpu"
                    ) -> tuple[Classifier, float]:
    blob = torch.load(path, map_location="cpu", weights_only=False)
    model = Classifier(blob["num_classes"], blob.get("arch", "resnet34"))
    model.load_state_dict(blob["state"])
    model.requires_grad_(False)
    return model.to(device).eval(), blob["accuracy"]
