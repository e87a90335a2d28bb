"""Turn a recipe into a model, a loss and the study's per-phase optimiser setup.

Everything a phase asks of a model goes through its capabilities (``Autoencoder``'s
``set_output_size``, ``freeze_encoder_body``, ``layer_groups``, ``load_encoder_weights``),
never through its class, so a plugin's architecture trains like a built-in one.
"""

from __future__ import annotations

import torch
from torch import nn

from models.architectures import Autoencoder
from models.builders import architecture_builder
from models.catalog import ARCHITECTURES, IMAGE_SIZE, PRESETS, Recipe, Variant
from models.losses import build_loss
from models.plan import Phase
from models.weights import WeightsSource

DISCRIMINATIVE_SPAN = 1e4  # slice(1e-6, 1e-2): the lowest group gets max_lr / 1e4


def recipe_of(variant: Recipe | Variant | str) -> Recipe:
    """A recipe as given, a variant's, or a preset's by name (KeyError listing them)."""
    if isinstance(variant, Recipe):
        return variant
    return (variant if isinstance(variant, Variant) else PRESETS[variant]).recipe


def build_model(variant: Recipe | Variant | str, *, latent_dim: int | None = None,
                pretrained: bool = True, weights: WeightsSource | None = None,
                icnr: bool = False, crop: int = IMAGE_SIZE) -> Autoencoder:
    """The recipe's architecture at ``latent_dim`` (default: the recipe's), with ImageNet
    weights in its encoder body when the recipe asks for them and ``pretrained``.
    ``icnr`` reaches architectures that take it (see PixelShuffleBlock); ``crop`` is the
    input side in px (ValueError when the architecture cannot take it)."""
    recipe = recipe_of(variant)
    info = ARCHITECTURES.get(recipe.architecture)  # None: a plugin (no options)
    options = {k: v for k, v in {"icnr": icnr, "crop": crop}.items()
               if info and k in info.options}
    if crop != IMAGE_SIZE and info is None:
        options["crop"] = crop  # a plugin the API let take it names a crop_stride
    elif crop != IMAGE_SIZE and info is not None and "crop" not in info.options:
        raise ValueError(f"{recipe.architecture} takes {IMAGE_SIZE} px crops only")
    size = latent_dim or recipe.latent_dim or (info.default_latent_dim if info else None)
    model = architecture_builder(recipe.architecture)(latent_dim=size, **options)
    if recipe.pretrained_encoder and pretrained:
        model.load_encoder_weights(weights or WeightsSource())
    return model


def build_training_loss(variant: Recipe | Variant | str, *, pretrained: bool = True,
                        weights: WeightsSource | None = None,
                        rd_lambda: float | None = None,
                        model: nn.Module | None = None) -> nn.Module:
    """The recipe's loss; a rate-distortion loss is bound to ``model`` (required then)."""
    recipe = recipe_of(variant)
    loss = build_loss(recipe.loss, pretrained=pretrained, weights=weights, rd_lambda=rd_lambda)
    bind = getattr(loss, "bind", None)
    if bind is not None:
        if model is None:
            raise ValueError(f"the {recipe.loss} loss of {recipe.name} needs its model")
        bind(model)
    return loss


def enter_phase(model: Autoencoder, phase: Phase) -> None:
    """Set what a phase changes in the model itself: output size, frozen encoder body."""
    model.set_output_size(phase.size)
    model.freeze_encoder_body(phase.frozen_encoder)


def param_groups(model: Autoencoder, phase: Phase) -> tuple[list[dict], list[float]]:
    """Optimiser parameter groups and their max learning rates for ``phase``."""
    if phase.discriminative:
        groups = model.layer_groups()
        n = len(groups)
        lrs = [phase.lr / DISCRIMINATIVE_SPAN ** (1 - i / (n - 1)) for i in range(n)]
        out, max_lrs = [], []
        for mods, lr in zip(groups, lrs, strict=True):
            params = [p for m in mods for p in m.parameters()]
            if params:  # relu, maxpool and a plain concat pool hold no parameters
                out.append({"params": params})
                max_lrs.append(lr)
        return out, max_lrs
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": params}], [phase.lr]


def make_optimizer(groups: list[dict], weight_decay: float) -> torch.optim.Optimizer:
    # fastai's AdamW: β (0.9, 0.99), decoupled decay on every parameter, BN included.
    # fused: one kernel for all parameters (CPU and CUDA), ~10 % of a small model's step.
    return torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.99), eps=1e-8,
                             weight_decay=weight_decay, fused=True)


def make_scheduler(optimizer: torch.optim.Optimizer, max_lrs: list[float],
                   total_steps: int) -> torch.optim.lr_scheduler.OneCycleLR:
    # fastai's fit_one_cycle: cosine warm-up over 30 %, anneal to max/(25·1e4), β1 0.95↔0.85.
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=max_lrs, total_steps=max(total_steps, 1), pct_start=0.3,
        anneal_strategy="cos", div_factor=25.0, final_div_factor=1e4,
        cycle_momentum=True, base_momentum=0.85, max_momentum=0.95,
    )
