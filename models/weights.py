"""ImageNet weights for the ResNet34 encoder/classifier and the VGG16-bn loss network.

torchvision's weights API names the files; they are looked up in a weights folder, then
in torch's hub cache, and downloaded only when allowed. Offline with no file, the error
names the file to place and where — it never hangs on a download.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch

from models.assets import WEIGHTS_URLS, WeightsName, weights_filename, weights_folders

DOWNLOAD_TIMEOUT_S = 30


class WeightsUnavailable(RuntimeError):
    """Pretrained weights are needed but neither present nor downloadable."""


@dataclass(frozen=True)
class WeightsSource:
    """Where to find pretrained weights. ``folder`` is checked first, then torch's hub
    cache (``$TORCH_HOME/hub/checkpoints``); ``download`` allows fetching into ``folder``."""

    folder: Path | None = None
    download: bool = True


def _download(url: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with (urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response,
          tempfile.NamedTemporaryFile(dir=dest.parent, delete=False) as tmp):
        shutil.copyfileobj(response, tmp)
    os.replace(tmp.name, dest)


def download_weights(name: WeightsName, folder: Path) -> Path:
    """Download ``name``'s weights into ``folder`` (atomically; OSError when offline)."""
    target = folder / weights_filename(name)
    _download(WEIGHTS_URLS[name], target)
    return target


def resolve_weights_file(name: WeightsName, source: WeightsSource) -> Path:
    filename = weights_filename(name)
    candidates = [d / filename for d in weights_folders(source.folder)]
    for path in candidates:
        if path.is_file():
            return path
    target = candidates[0]
    if source.download:
        try:
            _download(WEIGHTS_URLS[name], target)
            return target
        except OSError as exc:
            reason = f"download from {WEIGHTS_URLS[name]} failed ({exc})"
    else:
        reason = "downloads are disabled"
    where = " or ".join(str(p.parent) for p in candidates)
    raise WeightsUnavailable(
        f"ImageNet weights for {name} are needed but not found: place {filename} in {where} "
        f"({reason}); or choose random initialisation (pretrained=false)."
    )


def load_state_dict(name: WeightsName, source: WeightsSource) -> dict[str, torch.Tensor]:
    path = resolve_weights_file(name, source)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated or not a state dict: name the file, not torch
        raise WeightsUnavailable(f"{path} is not a readable {name} weights file "
                                 f"({type(exc).__name__}): delete or replace it") from exc


RESNET_BODY = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


def resnet34_body_state(source: WeightsSource) -> dict[str, torch.Tensor]:
    """ImageNet ResNet34 weights keyed for ``nn.Sequential(*children[:-2])`` (no fc)."""
    state = load_state_dict("resnet34", source)
    return {f"{RESNET_BODY.index(k.split('.')[0])}.{k.split('.', 1)[1]}": t
            for k, t in state.items() if not k.startswith("fc.")}
