"""The study's LR range test (fastai ``lr_find``): one exponential sweep, weights restored.

The suggestion is the learning rate of steepest descent of the smoothed loss (fastai's
"min numerical gradient"). The study read its plots by hand; aelab picks automatically.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from models.data import ImageSet, augment, batch_indices, normalize, to_float
from models.plan import Precision
from models.training import TrainConfig, TrainingSession, autocast


@dataclass
class RangeTestResult:
    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)  # smoothed, as fastai plots them
    suggestion: float = math.nan
    diverged: bool = False

    @property
    def best_loss(self) -> float:
        return min(self.losses) if self.losses else math.nan


def steepest_descent(lrs: list[float], losses: list[float], skip_start: int = 10,
                     skip_end: int = 5) -> float:
    """The LR suggested by a range-test curve, read as fastai's ``Recorder.plot`` does.

    ``lrs``/``losses``: the sweep's learning rates (exponentially spaced, rising) and its
    smoothed losses, same length ≥ 1. The first ``skip_start`` and last ``skip_end`` points
    are dropped (the noisy start and the divergence), then the point where the loss falls
    fastest per step (``np.gradient(losses).argmin()``; steps are equal in log LR) is the
    suggestion. Source: fastai v1 ``basic_train.Recorder.plot(suggestion=True)``. When
    fewer than 2 points remain (a sweep that diverged early), the fallback is fastai's
    other rule: the LR of the lowest loss, divided by 10.
    """
    if len(lrs) != len(losses) or not lrs:
        raise ValueError("need as many losses as learning rates, at least one")
    kept = losses[skip_start: len(losses) - skip_end]
    if len(kept) < 2:
        return float(lrs[int(np.argmin(losses))] / 10)
    return float(lrs[skip_start + int(np.argmin(np.gradient(np.asarray(kept))))])


def range_test(model: nn.Module, loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
               images: ImageSet, *, start_lr: float = 1e-7, end_lr: float = 10.0,
               num_steps: int = 100, batch_size: int = 128, size: int = 32,
               augmented: bool = True, device: torch.device | str = "cpu",
               generator: torch.Generator | None = None, beta: float = 0.98,
               diverge_factor: float = 4.0, precision: Precision = "auto"
               ) -> RangeTestResult:
    """Sweep the LR from ``start_lr`` to ``end_lr`` over ``num_steps`` mini-batches,
    stopping once the smoothed loss exceeds ``diverge_factor`` × its best, the forward
    pass at ``precision`` (as training's, ``models.plan.Precision``). Model and
    optimiser states are restored afterwards."""
    if not 0 < start_lr < end_lr:
        raise ValueError("need 0 < start_lr < end_lr")
    device = torch.device(device)
    generator = generator or torch.Generator().manual_seed(0)
    saved_model = copy.deepcopy(model.state_dict())
    saved_opt = copy.deepcopy(optimizer.state_dict())
    result = RangeTestResult()
    ratio = (end_lr / start_lr) ** (1 / max(num_steps - 1, 1))
    # Discriminative groups keep their proportions: the sweep moves the top group's LR.
    top = optimizer.param_groups[-1].get("max_lr", 1.0)
    scales = [g.get("max_lr", top) / top for g in optimizer.param_groups]
    avg, best, step = 0.0, math.inf, 0
    model.train()
    try:
        while step < num_steps:
            batches = batch_indices(len(images), batch_size, shuffle=True, drop_last=True,
                                    generator=generator)
            for idx in batches:
                lr = start_lr * ratio**step
                for group, scale in zip(optimizer.param_groups, scales, strict=True):
                    group["lr"] = lr * scale
                target = to_float(images.images[idx], size, device)
                if augmented:
                    target = augment(target, generator)
                with autocast(device, precision):
                    out = model(normalize(target))
                loss = loss_fn(out.float(), target)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                value = loss.item()
                step += 1
                avg = beta * avg + (1 - beta) * value
                smoothed = avg / (1 - beta**step)
                result.lrs.append(lr)
                result.losses.append(smoothed)
                best = min(best, smoothed)
                if not math.isfinite(smoothed) or smoothed > diverge_factor * best:
                    result.diverged = True
                    step = num_steps
                if step >= num_steps:
                    break
            else:
                if step == 0:
                    raise ValueError("the image set does not fill one batch")
    finally:
        model.load_state_dict(saved_model)
        optimizer.load_state_dict(saved_opt)
    finite = [(lr, loss) for lr, loss in zip(result.lrs, result.losses, strict=True)
              if math.isfinite(loss)]
    if finite:
        result.suggestion = steepest_descent([f[0] for f in finite], [f[1] for f in finite])
    return result


def lr_range_test(config: TrainConfig, images: ImageSet, *,
                  resume_from: dict[str, Any] | None = None, start_lr: float = 1e-7,
                  end_lr: float = 10.0, num_steps: int = 100) -> RangeTestResult:
    """The sweep for ``config.variant`` as it would train its last phase — from
    ``resume_from`` (e.g. the end of phase 1, as the study did) or from initialisation."""
    from models.data import DataSplits

    data = DataSplits("range_test", images, images, images, num_classes=0)
    session = TrainingSession(config, data)
    if resume_from is not None:
        session.restore(resume_from)
    last = session.phases[-1]
    session.optimizer = None if last.new_optimizer else session.optimizer
    session.start_phase(last)
    assert session.optimizer is not None
    return range_test(session.model, session.loss_fn, session.optimizer, images,
                      start_lr=start_lr, end_lr=end_lr, num_steps=num_steps,
                      batch_size=config.batch_size, size=last.size,
                      augmented=config.augment, device=session.device,
                      generator=session.generator, precision=config.precision)
