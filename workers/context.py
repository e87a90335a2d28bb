"""What a run needs besides its spec, and the one translation of a spec into training
configs. Torch is imported only inside functions: the API imports this module."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING

from workers.spec import RunSpec
from workers.text import strip_ansi

if TYPE_CHECKING:
    from models.classifier import ClassifierConfig
    from models.data import DataSplits
    from models.plan import Phase
    from models.training import TrainConfig


@dataclass(frozen=True)
class RunEnv:
    """Where a run finds its files and keeps its trials; the job driver derives it from
    the service's settings (``Settings.run_env``), ``aelab train`` from the same settings.

    ``storage_key`` names the run's folder under ``tune_storage`` (trial checkpoints), so
    deleting a run can remove exactly that folder.
    """

    data_root: str
    weights_dir: str
    allow_download: bool = True
    tune_storage: str = os.path.join(tempfile.gettempdir(), "aelab-tune")
    storage_key: str = "run"
    max_trial_failures: int = 3
    device: str | None = None  # None: CUDA when present, else the CPU
    niceness: int = 0  # training processes on the cluster run at this nice level
    datasets_dir: str | None = None  # folder datasets (models.datasets.folder); None: none
    log_format: str = "text"  # workers.logs.LogFormat: how runners format log records
    run_id: int | None = None  # the run these steps serve (on its log records), when known
    dataset_urls: tuple[tuple[str, str], ...] = ()  # (name, fsspec URL) folder datasets

    def use(self) -> None:
        """Make this process read folder datasets from :attr:`datasets_dir` and
        :attr:`dataset_urls`."""
        from models.datasets.folder import use_root, use_urls

        use_root(self.datasets_dir)
        use_urls(dict(self.dataset_urls))


def plan(spec: RunSpec, lr: float | None = None) -> list[Phase]:
    """The run's one plan (``models.plan.plan_phases`` of its recipe) with ``lr`` for its
    last phase."""
    from models.plan import plan_phases

    return plan_phases(spec.recipe, epochs=spec.epochs, lr=lr or spec.fixed_lr,
                       schedule=spec.schedule, crop=spec.data.crop)


def train_config(spec: RunSpec, env: RunEnv, lr: float | None = None,
                 device: str | None = None) -> TrainConfig:
    """The ``models.training.TrainConfig`` of ``spec`` with ``lr`` as its last phase's LR
    (default: the fixed LR). The same on every path, thread count included."""
    from models.training import TrainConfig

    return TrainConfig(
        spec.model, epochs=spec.epochs, batch_size=spec.batch_size,
        lr=lr or spec.fixed_lr, schedule=spec.schedule, latent_dim=spec.latent_dim,
        augment=spec.data.augment, pretrained=spec.pretrained, weights_dir=env.weights_dir,
        allow_download=env.allow_download, seed=spec.seed, device=device or env.device,
        threads=spec.resources.threads, rd_lambda=spec.rd_lambda, recipe=spec.recipe,
        crop=spec.data.crop, precision=spec.precision,
    )


def classifier_config(spec: RunSpec, env: RunEnv, device: str | None = None
                      ) -> ClassifierConfig:
    from models.classifier import ClassifierConfig

    c = spec.classifier
    return ClassifierConfig(arch=c.arch, frozen_epochs=c.frozen_epochs,
                            unfrozen_epochs=c.unfrozen_epochs, pretrained=c.pretrained,
                            weights_dir=env.weights_dir, allow_download=env.allow_download,
                            seed=spec.split_seed, batch_size=spec.batch_size,
                            device=device or env.device)


def classifier_key(spec: RunSpec) -> str:
    """Runs share a reference classifier when dataset, data limits, budget and shared
    seed (:attr:`RunSpec.split_seed`, not the run's own) agree."""
    basis = {"dataset": spec.dataset, "classifier": spec.classifier.model_dump(),
             "train_limit": spec.data.train_limit, "test_limit": spec.data.test_limit,
             "seed": spec.split_seed,
             # the classifier trains at the crop: the study's keys stay as they were
             **({"crop": spec.data.crop} if spec.data.crop != 32 else {})}
    digest = hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()[:16]
    return f"{spec.dataset}-{spec.classifier.arch}-{digest}"


def load_data(spec: RunSpec, env: RunEnv) -> DataSplits:
    from models.data import load_dataset

    env.use()
    d = spec.data
    return load_dataset(spec.dataset, env.data_root, train_limit=d.train_limit,
                        test_limit=d.test_limit, validation=d.validation,
                        seed=spec.split_seed, download=env.allow_download,
                        crop=d.crop)


def one_line_error(exc: BaseException, limit: int = 1000) -> str:
    """``"Type: message"`` on one line: Ray's task/Tune wrappers unwrapped to the error that
    was raised, ANSI colour codes and tracebacks dropped, at most ``limit`` characters."""
    seen: set[int] = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        cause = getattr(exc, "cause", None)  # ray.exceptions.RayTaskError
        if isinstance(cause, BaseException):
            exc = cause
            continue
        if type(exc).__module__.startswith("ray.") and exc.__cause__ is not None:
            exc = exc.__cause__
            continue
        break
    message = strip_ansi(str(exc)).strip()
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    if lines and lines[0].startswith(("Traceback", "ray::")):
        # Ray renders a remote traceback into the message: the last line is the error.
        lines = lines[-1:]
    text = lines[0] if lines else ""
    name = type(exc).__name__
    if text.startswith(f"{name}:"):
        text = text[len(name) + 1:].strip()
    line = f"{name}: {text}" if text else name
    return line if len(line) <= limit else line[: limit - 1] + "…"
