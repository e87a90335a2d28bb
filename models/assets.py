"""Pretrained-weights files by name and where they are looked up — without torch.

The API reports which weights a deployment holds (``/catalog``, ``dry_run``) and a run's
preflight checks them before any training; both must agree with what
``models.weights`` loads, so the names and folders live here once. A test checks the names
and URLs against torchvision's weights API.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Literal

WeightsName = Literal["resnet34", "vgg16_bn"]

# torchvision's ResNet34_Weights.IMAGENET1K_V1 and VGG16_BN_Weights.IMAGENET1K_V1.
WEIGHTS_URLS: dict[str, str] = {
    "resnet34": "https://download.pytorch.org/models/resnet34-b627a593.pth",
    "vgg16_bn": "https://download.pytorch.org/models/vgg16_bn-6c64b313.pth",
}
WEIGHTS_PURPOSE: dict[str, str] = {
    "resnet34": "ImageNet ResNet34 (pretrained_resnet encoder, reference classifier)",
    "vgg16_bn": "ImageNet VGG16-bn (feature_loss)",
}


def weights_filename(name: WeightsName) -> str:
    return os.path.basename(WEIGHTS_URLS[name])


def hub_checkpoints_dir() -> Path:
    """``torch.hub.get_dir() / "checkpoints"``, computed as torch does it
    (``$TORCH_HOME/hub``, else ``$XDG_CACHE_HOME/torch/hub``, else ``~/.cache/torch/hub``)."""
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", "~/.cache"), "torch")
    return Path(torch_home).expanduser() / "hub" / "checkpoints"


def weights_folders(weights_dir: str | Path | None) -> list[Path]:
    """Where weights are looked up, in order: the configured folder, then torch's hub."""
    folders = [Path(weights_dir).expanduser()] if weights_dir else []
    return [*folders, hub_checkpoints_dir()]


def find_weights(name: WeightsName, weights_dir: str | Path | None) -> Path | None:
    """The weights file for ``name`` if it is in one of :func:`weights_folders`."""
    filename = weights_filename(name)
    for folder in weights_folders(weights_dir):
        if (folder / filename).is_file():
            return folder / filename
    return None


_sha_cache: dict[tuple[str, int, int], str] = {}


def sha256_of(path: Path) -> str:
    """SHA-256 hex digest of ``path``, cached by (path, size, mtime)."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _sha_cache:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        _sha_cache[key] = digest.hexdigest()
    return _sha_cache[key]


def weights_problem(name: WeightsName, path: Path) -> str | None:
    """Why the file at ``path`` is not ``name``'s weights, or None when it is.

    torchvision names each file after the first hex digits of its SHA-256
    (``resnet34-b627a593.pth``); ``torch.hub`` checks downloads against that prefix, and so
    does this (truncated or replaced files fail it)."""
    match = re.search(r"-([a-f0-9]+)\.", weights_filename(name))
    assert match is not None
    digest = sha256_of(path)
    if not digest.startswith(match.group(1)):
        return (f"{path} is corrupt (SHA-256 {digest[:12]}… does not start with "
                f"{match.group(1)}, size {path.stat().st_size} B)")
    return None
