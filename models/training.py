"""``train``: the study's recipe as a plain function — no Ray, no database, no server.

A run is a list of one-cycle phases (see :mod:`models.recipes`). After every epoch the
``on_epoch`` callback gets the epoch's metrics and a self-describing checkpoint; passing
that checkpoint back as ``resume_from`` continues to the identical state (same weights,
optimiser, schedule and random streams), on any device.
"""

from __future__ import annotations

import contextlib
import io
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, get_args

import torch
from torch import nn

from models.architectures import Autoencoder
from models.catalog import Recipe
from models.data import (
    DataSplits,
    ImageSet,
    ResidentSplits,
    normalize,
    steps_per_epoch,
    to_float,
)
from models.gpu import GpuMonitor, GpuUse, monitor_for
from models.plan import (
    PHASE1_EPOCHS,
    PHASE1_LR,
    EpochMetrics,
    Phase,
    Precision,
    Schedule,
    TrainingDiverged,
    plan_phases,
)
from models.recipes import (
    build_model,
    build_training_loss,
    enter_phase,
    make_optimizer,
    make_scheduler,
    param_groups,
    recipe_of,
)
from models.weights import WeightsSource

CHECKPOINT_VERSION = 3  # 2: the plan travels with the checkpoint; 3: and the recipe


VALIDATION_BATCH = 1024  # images: validation's batch, at most ...
VALIDATION_BATCH_BYTES = 16 * 2**20  # ... and at most this much float32 RGB input


@dataclass
class TrainConfig:
    variant: str  # the recipe's name (a preset's when ``recipe`` is None)
    epochs: int = 15
    batch_size: int = 128
    lr: float = 1e-3  # top LR of the last phase (phase 2 of the seed schedule)
    schedule: Schedule = "seed"
    phase1_epochs: int = PHASE1_EPOCHS
    phase1_lr: float = PHASE1_LR
    weight_decay: float = 0.01
    latent_dim: int | None = None  # None: the study's (1000, or 1024 for ResNet encoders)
    augment: bool = True  # the study's dihedral + logit-space lighting
    pretrained: bool = True  # ImageNet weights for the ResNet encoder / the VGG loss
    weights_dir: str | None = None
    allow_download: bool = True
    icnr: bool = False  # see models.architectures.PixelShuffleBlock
    seed: int = 0
    device: str | None = None  # None: CUDA when present, else CPU
    channels_last: bool | None = None  # None: on CUDA only (it slows small convs on the CPU)
    compile: bool = False
    threads: int | None = None  # torch intra-op threads (None: torch's default)
    rd_lambda: float | None = None  # factorized_prior's λ (None: DEFAULT_RD_LAMBDA)
    recipe: Recipe | None = None  # None: the preset named ``variant``
    crop: int = 32  # the model's input side, px (data.crop; the study's 32)
    precision: Precision = "auto"  # see Precision

    def __post_init__(self) -> None:
        if self.recipe is None:
            self.recipe = recipe_of(self.variant)  # a KeyError listing the valid names
        elif self.recipe.name != self.variant:
            raise ValueError(f"variant {self.variant!r} is not its recipe's name "
                             f"{self.recipe.name!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("epochs, batch_size and lr must be positive")
        if self.precision not in get_args(Precision):
            raise ValueError(f"precision {self.precision!r} is not one of "
                             f"{', '.join(get_args(Precision))}")

    @property
    def weights(self) -> WeightsSource:
        folder = Path(self.weights_dir).expanduser() if self.weights_dir else None
        return WeightsSource(folder=folder, download=self.allow_download)

    def phases(self) -> list[Phase]:
        assert self.recipe is not None
        return plan_phases(self.recipe, epochs=self.epochs, lr=self.lr,
                           schedule=self.schedule, phase1_epochs=self.phase1_epochs,
                           phase1_lr=self.phase1_lr, crop=self.crop)


@dataclass
class TrainResult:
    model: Autoencoder
    history: list[EpochMetrics] = field(default_factory=list)
    seconds: float = 0.0  # sum of epoch wall times, as the study reported


EpochCallback = Callable[[EpochMetrics, dict[str, Any]], None]


def resolve_device(requested: str | None = None) -> torch.device:
    """CUDA when asked for or available, else the CPU — also when a GPU was assigned
    logically (e.g. by Ray) but CUDA is absent."""
    if requested and requested.startswith("cuda") and not torch.cuda.is_available():
        return torch.device("cpu")
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(device: torch.device, precision: Precision = "auto"
             ) -> contextlib.AbstractContextManager[Any]:
    """The forward pass's autocast for ``precision`` (see :data:`Precision`) on
    ``device``: bf16 autocast, or a no-op context for fp32."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def validation_batch_size(batch_size: int, size: int) -> int:
    """Images per validation batch at ``size`` px: :data:`VALIDATION_BATCH`, fewer when
    their float32 RGB input would pass :data:`VALIDATION_BATCH_BYTES`, never fewer than
    the training ``batch_size`` (whose activations with gradients already fit)."""
    per_image = 3 * size * size * 4
    return max(batch_size, min(VALIDATION_BATCH, VALIDATION_BATCH_BYTES // per_image))


def _finite(value: float, what: str, epoch: int) -> float:
    if not math.isfinite(value):
        raise TrainingDiverged(f"{what} is {value} at epoch {epoch}: training diverged "
                               "(try a lower learning rate)", what=what, value=value,
                               epoch=epoch)
    return value


@torch.inference_mode()
def validate(model: nn.Module, loss_fn: nn.Module, images: ImageSet | torch.Tensor, *,
             size: int, batch_size: int, device: torch.device,
             precision: Precision = "auto") -> tuple[float, float, float]:
    """(loss, MSE, MAE) over ``images`` (an ImageSet or its uint8 (N, C, H, W) tensor, on
    any device) at ``size`` px, means over every element (the loss: over images), in
    batches of ``batch_size`` without autograd. The model is left in eval mode."""
    model.eval()
    x = images.images if isinstance(images, ImageSet) else images
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    se = torch.zeros_like(loss_sum)
    ae = torch.zeros_like(loss_sum)
    for start in range(0, len(x), batch_size):
        target = to_float(x[start : start + batch_size], size, device)
        with autocast(device, precision):
            out = model(normalize(target))
        out = out.float()
        loss_sum += loss_fn(out, target).double() * len(target)
        se += (out - target).pow(2).sum(dtype=torch.float64)
        ae += (out - target).abs().sum(dtype=torch.float64)
    n_images = len(x)
    n_values = n_images * 3 * size * size
    loss, mse, mae = torch.stack([loss_sum / n_images, se / n_values, ae / n_values]).tolist()
    return loss, mse, mae  # one wait for the device, not three


class TrainingSession:
    """The state of one training run: model, optimiser, schedule, random stream."""

    def __init__(self, config: TrainConfig, data: DataSplits) -> None:
        self.config = config
        self.data = data
        self.device = resolve_device(config.device)
        if config.threads:
            torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)
        assert config.recipe is not None
        self.model = build_model(config.recipe, latent_dim=config.latent_dim,
                                 pretrained=config.pretrained, weights=config.weights,
                                 icnr=config.icnr, crop=config.crop).to(self.device)
        self.channels_last = (config.channels_last if config.channels_last is not None
                              else self.device.type == "cuda")
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.step_fn = torch.compile(self.model) if config.compile else self.model
        self.loss_fn = build_training_loss(config.recipe, pretrained=config.pretrained,
                                           weights=config.weights, rd_lambda=config.rd_lambda,
                                           model=self.model).to(self.device)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.phases = config.phases()
        self._resident: ResidentSplits | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: torch.optim.lr_scheduler.OneCycleLR | None = None
        self.history: list[EpochMetrics] = []
        self.epoch = 0  # epochs completed
        self.last_lr = 0.0  # the top group's LR at the last optimiser step

    def phase_at(self, epoch: int) -> tuple[int, Phase]:
        """The phase that epoch ``epoch`` (1-based) belongs to."""
        end = 0
        for i, phase in enumerate(self.phases):
            end += phase.epochs
            if epoch <= end:
                return i, phase
        raise ValueError(f"epoch {epoch} is past the plan's {end} epochs")

    def start_phase(self, phase: Phase) -> None:
        enter_phase(self.model, phase)
        groups, max_lrs = param_groups(self.model, phase)
        if self.optimizer is None or phase.new_optimizer:
            self.optimizer = make_optimizer(groups, self.config.weight_decay)
        n = steps_per_epoch(len(self.data.train), self.config.batch_size)
        self.scheduler = make_scheduler(self.optimizer, max_lrs, phase.epochs * n)

    def checkpoint(self) -> dict[str, Any]:
        assert self.optimizer is not None and self.scheduler is not None
        return {
            "version": CHECKPOINT_VERSION,
            "config": self._config_dict(),
            "epoch": self.epoch,
            "plan": [p.shape() for p in self.phases],
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "history": [asdict(m) for m in self.history],
        }

    def _config_dict(self) -> dict[str, Any]:
        assert self.config.recipe is not None
        return {**asdict(self.config), "recipe": self.config.recipe.model_dump(mode="json")}

    def restore(self, ckpt: dict[str, Any]) -> None:
        if ckpt.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"unsupported checkpoint version {ckpt.get('version')!r}")
        if ckpt["config"]["variant"] != self.config.variant:
            raise ValueError(f"checkpoint is of {ckpt['config']['variant']!r}, "
                             f"not {self.config.variant!r}")
        if ckpt["config"]["recipe"] != self._config_dict()["recipe"]:
            raise ValueError(f"checkpoint of {self.config.variant!r} was made under another "
                             f"recipe: {ckpt['config']['recipe']}")
        plan = [p.shape() for p in self.phases]
        if ckpt["plan"] != plan:
            # A slice of another plan (e.g. a phase-1 run planned with fewer epochs) would
            # restore an optimiser and schedule that this plan does not have.
            raise ValueError(f"checkpoint was made under another plan: {ckpt['plan']} "
                             f"is not {plan}")
        self.epoch = ckpt["epoch"]
        # Rebuild optimiser and schedule as they were in the checkpoint's phase (every
        # phase that keeps its predecessor's optimiser has the same groups), then load.
        self.optimizer = None
        self.start_phase(self.phase_at(self.epoch)[1])
        self.model.load_state_dict(ckpt["model"])
        assert self.optimizer is not None and self.scheduler is not None
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.generator.set_state(ckpt["generator"])
        self.history = [EpochMetrics(**m) for m in ckpt["history"]]

    @property
    def resident(self) -> ResidentSplits:
        """The run's training and validation images where its batches are made: placed
        on the device once, at first use (see :class:`models.data.ResidentSplits`)."""
        if self._resident is None:
            self._resident = ResidentSplits(self.data, self.device)
        return self._resident

    def epoch_batches(self, size: int) -> Iterator[torch.Tensor]:
        """An epoch's training targets: float (batch, 3, size, size) on the device,
        augmented when the config says so. Every random number of the epoch (crops,
        order, augmentation) is drawn from the session's generator now, in the order the
        per-batch loop drew them; the batches are then made on the device."""
        epoch = self.resident.epoch(self.config.batch_size, self.generator,
                                    augment=self.config.augment)

        def batches() -> Iterator[torch.Tensor]:
            for i in range(len(epoch)):
                draws = None if epoch.draws is None else epoch.draws[i]
                images = self.resident.batch(epoch.images, epoch.order[i])
                yield to_float(images, size, self.device, draws=draws)

        return batches()

    def step(self, target: torch.Tensor) -> torch.Tensor:
        """One optimiser step on ``target``; returns the (detached) loss."""
        assert self.optimizer is not None and self.scheduler is not None
        x = normalize(target)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.config.precision):
            out = self.step_fn(x)
        loss = self.loss_fn(out.float(), target)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.last_lr = self.optimizer.param_groups[-1]["lr"]  # the LR this step used
        self.optimizer.step()
        self.scheduler.step()
        return loss.detach()

    def train_epoch(self, phase: Phase) -> tuple[float, float]:
        assert self.optimizer is not None and self.scheduler is not None
        self.model.train()
        self.loss_fn.train()
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        start = time.perf_counter()
        steps = 0
        for target in self.epoch_batches(phase.size):
            loss_sum += self.step(target)
            steps += 1
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - start
        if steps == 0:
            raise ValueError(f"{len(self.data.train)} training images do not fill one "
                             f"batch of {self.config.batch_size}")
        return (loss_sum / steps).item(), seconds

    @property
    def total_epochs(self) -> int:
        return sum(p.epochs for p in self.phases)

    def run(self, on_epoch: EpochCallback | None, stop_after: int | None = None) -> None:
        """Train the plan's epochs after ``self.epoch``, up to epoch ``stop_after``
        (1-based, inclusive; None: to the end of the plan)."""
        last = self.total_epochs if stop_after is None else min(stop_after, self.total_epochs)
        if self.epoch >= last:
            return
        gpu = monitor_for(self.device)  # None off CUDA: the epochs' GPU fields stay None
        try:
            self._run(on_epoch, last, gpu)
        finally:
            if gpu is not None:
                gpu.close()

    def _run(self, on_epoch: EpochCallback | None, last: int, gpu: GpuMonitor | None
             ) -> None:
        current = self.phase_at(self.epoch)[0] if self.epoch else -1
        for epoch in range(self.epoch + 1, last + 1):
            index, phase = self.phase_at(epoch)
            if gpu is not None:
                gpu.start()
            if index != current:
                self.start_phase(phase)
                current = index
            started = time.perf_counter()
            train_loss, train_seconds = self.train_epoch(phase)
            _finite(train_loss, "training loss", epoch)
            val_loss, val_mse, val_mae = validate(
                self.model, self.loss_fn, self.resident.val, size=phase.size,
                batch_size=validation_batch_size(self.config.batch_size, phase.size),
                device=self.device, precision=self.config.precision)
            _finite(val_loss, "validation loss", epoch)
            # The epoch's time is its training and its validation pass, as fastai printed
            # the study's epoch times (seed-experiment §6.2); its speed is the training's.
            seconds = time.perf_counter() - started
            assert self.optimizer is not None
            seen = steps_per_epoch(len(self.data.train), self.config.batch_size)
            use = gpu.take() if gpu is not None else GpuUse(None, None)  # train + validate
            metrics = EpochMetrics(
                epoch=epoch, phase=phase.name, size=phase.size,
                lr=self.last_lr, train_loss=train_loss,
                val_loss=val_loss, val_mse=val_mse, val_mae=val_mae, seconds=seconds,
                images_per_s=seen * self.config.batch_size / train_seconds,
                gpu_utilization_percent=use.utilization_percent,
                gpu_memory_peak_mib=use.memory_peak_mib,
            )
            self.history.append(metrics)
            self.epoch = epoch
            if on_epoch is not None:
                on_epoch(metrics, self.checkpoint())


def train(config: TrainConfig, data: DataSplits, *, on_epoch: EpochCallback | None = None,
          resume_from: dict[str, Any] | None = None,
          stop_after: int | None = None) -> TrainResult:
    """Train ``config.recipe`` on ``data``; returns the model (eval mode) and its history.

    ``resume_from`` continues a checkpoint of the same plan (ValueError otherwise);
    ``stop_after`` stops after that epoch of the plan (e.g. the end of phase 1), so every
    caller trains a slice of one plan and never re-plans.
    """
    session = TrainingSession(config, data)
    if resume_from is not None:
        session.restore(resume_from)
    session.run(on_epoch, stop_after=stop_after)
    session.model.eval()
    return TrainResult(session.model, session.history,
                       sum(m.seconds for m in session.history))


def save_checkpoint(ckpt: dict[str, Any], path: Path | str | None = None) -> bytes:
    """Serialise a checkpoint (to ``path`` too, when given)."""
    buffer = io.BytesIO()
    torch.save(ckpt, buffer)
    payload = buffer.getvalue()
    if path is not None:
        Path(path).write_bytes(payload)
    return payload


def load_checkpoint(source: Path | str | bytes) -> dict[str, Any]:
    raw = source if isinstance(source, bytes) else Path(source).read_bytes()
    return torch.load(io.BytesIO(raw), map_location="cpu", weights_only=False)


def snapshot_checkpoint(ckpt: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``ckpt`` (as :meth:`TrainingSession.checkpoint` returns it: nested dicts,
    lists and tuples of tensors and plain values, whose tensors are the live model and
    optimiser state) that further training cannot change, so that another thread may
    serialise it while the next epoch trains.

    Every tensor is detached and copied to the CPU: from CUDA into pinned memory without
    blocking, then one synchronisation per device before returning; on the CPU a clone.
    Every dict, list and tuple is rebuilt (an ``OrderedDict`` keeps its type and its
    ``_metadata``, which ``load_state_dict`` reads); other values (numbers, strings,
    None) are shared. :func:`save_checkpoint` of the copy loads (:func:`load_checkpoint`,
    to the CPU) as that of ``ckpt`` would. Costs one copy of the model and optimiser
    state (bytes: the serialised checkpoint's size, less its pickled metadata)."""
    from collections import OrderedDict

    devices: set[torch.device] = set()

    def copy(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            tensor = value.detach()
            if tensor.device.type == "cuda":
                out = torch.empty_like(tensor, device="cpu", pin_memory=True)
                out.copy_(tensor, non_blocking=True)
                devices.add(tensor.device)
                return out
            return tensor.clone() if tensor.device.type == "cpu" else tensor.to("cpu")
        if isinstance(value, OrderedDict):
            ordered = OrderedDict((k, copy(v)) for k, v in value.items())
            if hasattr(value, "_metadata"):
                ordered._metadata = value._metadata  # type: ignore[attr-defined]
            return ordered
        if isinstance(value, dict):
            return {k: copy(v) for k, v in value.items()}
        if isinstance(value, list):
            return [copy(v) for v in value]
        if isinstance(value, tuple):
            return tuple(copy(v) for v in value)
        return value

    snapshot = copy(ckpt)
    for device in devices:  # the non-blocking copies have landed
        torch.cuda.synchronize(device)
    return snapshot  # type: ignore[no-any-return]
