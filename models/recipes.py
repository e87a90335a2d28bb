"""Turn a variant name into a model, a loss and the study's per-phase optimiser setup."""

from __future__ import annotations

import torch
from torch import nn

from models.architectures import (
    Autoencoder,
    ConvAutoencoder,
    ResNetAutoencoder,
    get_architecture,
)
from models.catalog import IMAGE_SIZE, Variant, get_variant
from models.losses import build_loss
from models.plan import Phase
from models.weights import WeightsSource, resnet34_body_state

DISCRIMINATIVE_SPAN = 1e4  # slice(1e-6, 1e-2): the lowest group gets max_lr / 1e4


def build_model(variant: Variant | str, *, latent_dim: int | None = None, pretrained: bool = True,
                weights: WeightsSource | None = None, icnr: bool = False) -> Autoencoder:
    v = get_variant(variant) if isinstance(variant, str) else variant
    kwargs: dict[str, object] = {"latent_dim": latent_dim or v.latent_dim}
    if v.architecture == "pixel_shuffle":
        kwargs["icnr"] = icnr
    model = get_architecture(v.architecture, **kwargs)
    if v.pretrained_encoder and pretrained:
        assert isinstance(model, ResNetAutoencoder)
        model.body.load_state_dict(resnet34_body_state(weights or WeightsSource()))
    return model


def build_training_loss(variant: Variant | str, *, pretrained: bool = True,
                        weights: WeightsSource | None = None,
                        rd_lambda: float | None = None,
                        model: nn.Module | None = None) -> nn.Module:
    """The variant's loss; a rate-distortion loss is bound to ``model`` (required then)."""
    v = get_variant(variant) if isinstance(variant, str) else variant
    loss = build_loss(v.loss, pretrained=pretrained, weights=weights, rd_lambda=rd_lambda)
    bind = getattr(loss, "bind", None)
    if bind is not None:
        if model is None:
            raise ValueError(f"the {v.loss} loss of {v.name} needs its model")
        bind(model)
    return loss


def enter_phase(model: Autoencoder, phase: Phase) -> None:
    """Set what a phase changes in the model itself: output size, frozen encoder."""
    if isinstance(model, ConvAutoencoder):
        model.set_output_size(phase.size)
    elif phase.size != IMAGE_SIZE:
        raise ValueError(f"{type(model).__name__} trains at {IMAGE_SIZE} px only")
    if isinstance(model, ResNetAutoencoder):
        # Frozen, but left in train mode: its BN running stats adapt, as in the study.
        model.body.requires_grad_(not phase.frozen_encoder)


def param_groups(model: Autoencoder, phase: Phase) -> tuple[list[dict], list[float]]:
    """Optimiser parameter groups and their max learning rates for ``phase``."""
    if phase.discriminative and isinstance(model, ResNetAutoencoder):
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
