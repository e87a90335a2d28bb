"""A run's training schedule as data: one plan of one-cycle phases (torch-free).

Every path trains slices of the same plan: the phase-1 run is the plan stopped after
phase 1, an LR-search trial continues it into phase 2, final training finishes it. Nothing
re-plans (see ``models.training.TrainingSession.restore``, which refuses a checkpoint made
under another plan).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from models.catalog import IMAGE_SIZE, Recipe, Variant

Schedule = Literal["seed", "one_cycle"]
# The forward pass's arithmetic. "auto": bf16 autocast on CUDA, fp32 elsewhere; "bf16": bf16
# autocast on any device (the CPU's too); "fp32": no autocast. The loss and the optimiser
# step are fp32 in all three.
Precision = Literal["auto", "fp32", "bf16"]

PHASE1_LR = 3e-3  # fastai's default max_lr, used by every phase 1 of the study
PHASE1_EPOCHS = 5  # the study's fit_one_cycle(5) before lr_find


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite: ``what`` (``"training loss"`` or ``"validation
    loss"``) was ``value`` in ``epoch`` (1-based), before that epoch was reported. Raised
    by ``models.training``; defined here, torch-free, so a run's driver can tell it apart
    without importing torch."""

    def __init__(self, message: str, *, what: str = "loss", value: float = math.nan,
                 epoch: int = 0) -> None:
        super().__init__(message)
        self.what, self.value, self.epoch = what, value, epoch


@dataclass
class EpochMetrics:
    """What one trained epoch reports: the run's history is a list of these."""

    epoch: int  # 1-based, counted over all phases
    phase: str
    size: int
    lr: float  # the top group's learning rate at the epoch's last optimiser step
    train_loss: float
    val_loss: float
    val_mse: float
    val_mae: float
    seconds: float  # wall time of the epoch: training, then validation (fastai's)
    images_per_s: float  # training images per second of the training loop alone
    # The epoch's use of its CUDA device (``models.gpu``); None without one.
    gpu_utilization_percent: float | None = None  # NVML's, mean over the epoch
    gpu_memory_peak_mib: float | None = None  # the most the process reserved (MiB)


def format_epoch(m: EpochMetrics, total: int | None = None) -> str:
    """The one-line progress report of an epoch, as ``aelab train`` and job logs print it."""
    of = f"/{total}" if total else ""
    return (f"epoch {m.epoch:>3}{of} {m.phase} {m.size}px  train {m.train_loss:.5f}  "
            f"val {m.val_loss:.5f}  val mse {m.val_mse:.5f}  {m.seconds:.1f}s  "
            f"{m.images_per_s:.0f} img/s{format_gpu(m)}")


def format_gpu(m: EpochMetrics) -> str:
    """``  GPU 87% 1234 MiB`` (what is known of it), or "" for an epoch without a GPU."""
    parts = ([f"{m.gpu_utilization_percent:.0f}%"] if m.gpu_utilization_percent is not None
             else []) + ([f"{m.gpu_memory_peak_mib:.0f} MiB"]
                         if m.gpu_memory_peak_mib is not None else [])
    return f"  GPU {' '.join(parts)}" if parts else ""


@dataclass(frozen=True)
class Phase:
    """One one-cycle phase: ``epochs`` at ``size`` px with top learning rate ``lr``."""

    name: str
    epochs: int
    lr: float
    size: int = IMAGE_SIZE
    frozen_encoder: bool = False  # pretrained arm, phase 1: only the decoder learns
    discriminative: bool = False  # pretrained arm, phase 2: 10 geometric LR groups
    new_optimizer: bool = False  # the study's unfreeze() built a fresh optimiser

    def shape(self) -> dict[str, Any]:
        """Everything but the LR: what a checkpoint's plan must agree on to be resumed."""
        d = asdict(self)
        d.pop("lr")
        return d


def plan_phases(variant: Recipe | Variant, *, epochs: int, lr: float, schedule: Schedule,
                phase1_epochs: int = PHASE1_EPOCHS,
                phase1_lr: float = PHASE1_LR, crop: int = IMAGE_SIZE) -> list[Phase]:
    """The seed schedule is the study's: phase 1 (5 epochs at 3e-3; ``crop``/2 px — 16
    at the study's 32 — when the recipe is ``progressive``; frozen encoder body with
    ``encoder_weights: imagenet``), then the rest at ``lr`` (discriminative groups for
    the pretrained body). With fewer epochs phase 1 shrinks so phase 2 keeps at least
    one. ``one_cycle`` is one phase.

    Raises ValueError when ``epochs`` < 1.
    """
    if epochs < 1:
        raise ValueError("epochs must be at least 1")
    pretrained = variant.pretrained_encoder
    if schedule == "one_cycle":
        return [Phase("train", epochs, lr, size=crop, discriminative=pretrained)]
    first = min(phase1_epochs, epochs - 1)
    phases = []
    if first > 0:
        phases.append(Phase(
            "phase1", first, phase1_lr,
            size=crop // 2 if variant.progressive else crop,
            frozen_encoder=pretrained,
        ))
    phases.append(Phase("phase2", epochs - first, lr, size=crop, discriminative=pretrained,
                        new_optimizer=pretrained and first > 0))
    return phases


def epoch_plan(phases: list[Phase]) -> list[tuple[str, int]]:
    """(phase name, image size) of every epoch, 1-based order: what a history must equal."""
    return [(p.name, p.size) for p in phases for _ in range(p.epochs)]
