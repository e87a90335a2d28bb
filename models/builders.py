"""Architectures by name, built: the torch side of ``models.catalog.ARCHITECTURES``.

Built-in architectures are registered by their import target (resolved on first use), so
this registry imports none of them at import time and none of them imports it; others
register a builder with :func:`register_architecture` (refusing a taken name). A plugin's
architecture (an ``aelab.variants`` entry point) is loaded in this process and wrapped
(:class:`PluginAutoencoder`), so it trains, codes and draws like a built-in one.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn

from models import plugins
from models.architectures import Autoencoder
from models.catalog import ARCHITECTURES, IMAGE_SIZE
from models.data import IMAGENET_MEAN, IMAGENET_STD
from models.registry import Registry

Builder = Callable[..., Autoencoder]
B = TypeVar("B", bound=Builder)

# Built-ins as "module:attr" targets until first use.
_REGISTRY: Registry[Builder | str] = Registry("architecture")
for _name, _info in ARCHITECTURES.items():
    _REGISTRY.register(_name, _info.target)
_PLUGINS: dict[plugins.PluginEntry, Builder] = {}


def register_architecture(name: str, builder: B) -> B:
    """Register ``builder(latent_dim=…, **options) -> Autoencoder`` as ``name`` in this
    process; ValueError when the name is taken."""
    _REGISTRY.register(name, builder)
    return builder


def list_architectures(pattern: str = "*") -> list[str]:
    """Registered names (built-in and :func:`register_architecture`'s), sorted."""
    return _REGISTRY.names(pattern)


def _resolve(name: str) -> Builder:
    found = _REGISTRY[name]  # KeyError listing the valid names
    if isinstance(found, str):
        module, _, attr = found.partition(":")
        return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]
    return found


def get_architecture(name: str, **kwargs: Any) -> Autoencoder:
    """A registered architecture built with ``kwargs``; KeyError listing valid names."""
    return _resolve(name)(**kwargs)


def architecture_builder(name: str) -> Builder:
    """The builder of ``name``: a registered one, else the ``aelab.variants`` plugin of
    that name loaded in this process. KeyError when neither exists here;
    ``plugins.PluginUnavailable`` when the plugin fails to load."""
    if name in _REGISTRY:
        return _resolve(name)
    entry = plugins.find(plugins.VARIANTS_GROUP, name)
    if entry is None:
        installed = [e.name for e in plugins.installed(plugins.VARIANTS_GROUP)]
        raise KeyError(f"unknown architecture {name!r}; valid: "
                       f"{', '.join([*_REGISTRY, *installed])}")
    if entry not in _PLUGINS:
        build = plugins.load(entry)
        if not callable(build):
            raise plugins.PluginUnavailable(f"plugin {entry.describe()} is not a callable "
                                            "build(latent_dim)")

        def builder(latent_dim: int, **options: Any) -> Autoencoder:
            # crop reaches a plugin that names a crop_stride (models.catalog)
            crop = {"crop": options["crop"]} if "crop" in options else {}
            return PluginAutoencoder(build(latent_dim, **crop), latent_dim, name,
                                     **crop)

        _PLUGINS[entry] = builder
    return _PLUGINS[entry]


# ---------------------------------------------------------------------------------------
# Plugins: a module with encode/decode on [0, 1] images, as an aelab autoencoder


class _PluginEncoder(nn.Module):
    """ImageNet-normalised (B, 3, H, W) → the plugin's ``encode`` of the [0, 1] image →
    (B, latent_dim), checked."""

    def __init__(self, net: nn.Module, latent_dim: int, name: str) -> None:
        super().__init__()
        self._net: list[Any] = [net]  # a list: the autoencoder registers the module, once
        self.latent_dim = latent_dim
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
        z = self._net[0].encode(x * std + mean)
        if z.dim() != 2 or tuple(z.shape) != (x.shape[0], self.latent_dim):
            raise ValueError(f"plugin {self.name}: encode returned {tuple(z.shape)} for "
                             f"{x.shape[0]} images; expected ({x.shape[0]}, "
                             f"{self.latent_dim})")
        return z


class _PluginDecoder(nn.Module):
    """(B, latent_dim) → the plugin's ``decode`` → (B, 3, H, W), checked."""

    def __init__(self, net: nn.Module, name: str) -> None:
        super().__init__()
        self._net: list[Any] = [net]
        self.name = name

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        y = self._net[0].decode(z)
        if y.dim() != 4 or tuple(y.shape[:2]) != (z.shape[0], 3):
            raise ValueError(f"plugin {self.name}: decode returned {tuple(y.shape)} for "
                             f"{z.shape[0]} codes; expected ({z.shape[0]}, 3, H, W)")
        return y


class PluginAutoencoder(Autoencoder):
    """A plugin's ``build(latent_dim)`` module as an :class:`Autoencoder`: its parameters
    under ``net``; ``encoder``/``decoder`` call its ``encode``/``decode`` (which see
    images in [0, 1]: aelab's ImageNet normalisation is undone first). Training, LR
    searches, the quantised and entropy-coded latent, measures and the gallery use it as
    they use a built-in; it has none of the optional capabilities (output size, encoder
    body, layer groups, entropy model)."""

    def __init__(self, net: nn.Module, latent_dim: int, name: str,
                 crop: int = IMAGE_SIZE) -> None:
        super().__init__()
        self.crop = crop  # the side it was built for: its only output size
        if not (callable(getattr(net, "encode", None)) and callable(getattr(net, "decode",
                                                                             None))):
            raise TypeError(f"plugin {name}: build(latent_dim) returned "
                            f"{type(net).__name__}, which lacks encode(x) and decode(z)")
        self.net = net
        self.name = name
        self.latent_dim = latent_dim
        self.encoder = _PluginEncoder(net, latent_dim, name)
        self.decoder = _PluginDecoder(net, name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        if out.shape[-2:] != x.shape[-2:]:
            raise ValueError(f"plugin {self.name}: decode gave "
                             f"{tuple(out.shape[-2:])} px for {tuple(x.shape[-2:])} px inputs")
        return out
