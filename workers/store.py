"""The narrow interface a run reports through, and two plain implementations of it.

``service`` implements :class:`RunStore` on the database (``DbRunStore``); ``workers``
never imports ``service``. :class:`MemoryStore` keeps a run in memory (tests, notebooks);
:class:`DirStore` writes it to a folder (``aelab train``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from models.plan import EpochMetrics, format_epoch
from workers.measures import CodecRow, RunMeasures, SizeMeasures
from workers.space import write_atomic

# A run's gallery artifacts, saved at evaluation (``models.samples.reconstruct_gallery``):
# its dataset's fixed sample set (the first ``gallery_samples`` test images) and the
# model's reconstructions of exactly those, as lossless RGB PNG strips (tile i at x = 32·i),
# and a JSON of the count, layout and per-tile PSNR/MSE.
GALLERY_INPUTS = "gallery-inputs.png"
GALLERY_RECONSTRUCTIONS = "gallery-recon.png"
GALLERY_META = "gallery.json"
# The test codes' 2-D PCA (models.probes.code_projection): x, y, label and index per point
# (at most 2,000, drawn with the run's seed) and the components' explained variance ratio;
# the run page draws it. Absent when the data is evaluated whole (one code per tile).
CODE_PROJECTION = "codes-pca.json"
# The test set's latents as coded at evaluation (models.compression): the stream whose
# length / images is the run's bytes_per_image, and how to decode it with model.pt.
COMPRESSION_STREAM = "latents-test.bin"
COMPRESSION_META = "compression.json"


class RunCancelled(RuntimeError):
    """The user cancelled the run while it was executing."""


class RunPruned(RunCancelled):
    """A search's pruner ended the run (its message: the epoch and the rule), recorded as
    ``pruned`` by the store; everything that stops for a cancellation stops for it."""


class StaleAttempt(RuntimeError):
    """This driver's attempt is no longer the run's current one: its writes are refused."""


@dataclass(frozen=True)
class LrTrial:
    """One LR-search trial (a Tune trial, a range-test point or the fixed LR)."""

    method: str
    lr: float
    loss: float | None  # best validation loss (tune), smoothed loss (range_test), None
    iterations: int  # epochs (tune) or steps (range_test) it ran
    stopped_early: bool
    chosen: bool


ClassifierTrainer = Callable[[], tuple[bytes, float]]


class RunStore(Protocol):
    def set_phase(self, phase: str) -> None:
        """preflight, data, train, lr_search or evaluate."""

    def record_epoch(self, metrics: EpochMetrics) -> None: ...

    def record_lr_trials(self, trials: list[LrTrial], chosen_lr: float) -> None: ...

    def record_measures(self, measures: RunMeasures, codecs: Sequence[CodecRow] = (),
                        sizes: Sequence[SizeMeasures] = ()) -> None:
        """The run's test-set measures, its codec rows and its measures at other sizes
        (replacing earlier ones)."""

    def save_artifact(self, name: str, kind: str, data: bytes, content_type: str) -> None: ...

    def has_reference_classifier(self, key: str) -> bool:
        """Whether the classifier ``key`` is already trained (its weights need no files)."""

    def reference_classifier(self, key: str, dataset: str, train: ClassifierTrainer,
                             waiting: Callable[[], None] | None = None
                             ) -> tuple[bytes, float]:
        """The classifier stored under ``key`` (weights, test accuracy); trains it with
        ``train`` when nobody has, and waits when somebody else is training it, calling
        ``waiting`` once before it starts to wait (the caller hands back what it holds
        that the trainer may need: its runner)."""

    def is_cancelled(self) -> bool: ...

    def prune_hopeless(self, epoch: int, why: str) -> str | None:
        """End the run ``pruned`` when it is a sample of a search with a pruner and cannot
        go on (``why``: e.g. its loss diverged in ``epoch``); the reason recorded, or None
        when it is no such sample (the caller records the failure)."""

    def succeed(self) -> None: ...

    def fail(self, error: str) -> None: ...


class MemoryStore:
    """A :class:`RunStore` that keeps everything in memory."""

    def __init__(self, on_epoch: Callable[[EpochMetrics], None] | None = None) -> None:
        self.phases: list[str] = []
        self.epochs: list[EpochMetrics] = []
        self.trials: list[LrTrial] = []
        self.lr: float | None = None
        self.measures: RunMeasures | None = None
        self.codecs: list[CodecRow] = []
        self.sizes: list[SizeMeasures] = []
        self.artifacts: dict[str, bytes] = {}
        self.classifiers: dict[str, tuple[bytes, float]] = {}
        self.outcome: str | None = None
        self.error: str | None = None
        self.cancelled = False
        self.on_epoch = on_epoch

    def set_phase(self, phase: str) -> None:
        self.phases.append(phase)

    def record_epoch(self, metrics: EpochMetrics) -> None:
        self.epochs.append(metrics)
        if self.on_epoch:
            self.on_epoch(metrics)

    def record_lr_trials(self, trials: list[LrTrial], chosen_lr: float) -> None:
        self.trials, self.lr = list(trials), chosen_lr

    def record_measures(self, measures: RunMeasures, codecs: Sequence[CodecRow] = (),
                        sizes: Sequence[SizeMeasures] = ()) -> None:
        self.measures, self.codecs, self.sizes = measures, list(codecs), list(sizes)

    def save_artifact(self, name: str, kind: str, data: bytes, content_type: str) -> None:
        self.artifacts[name] = data

    def has_reference_classifier(self, key: str) -> bool:
        return key in self.classifiers

    def reference_classifier(self, key: str, dataset: str, train: ClassifierTrainer,
                             waiting: Callable[[], None] | None = None
                             ) -> tuple[bytes, float]:
        if key not in self.classifiers:
            self.classifiers[key] = train()
        return self.classifiers[key]

    def is_cancelled(self) -> bool:
        return self.cancelled

    def prune_hopeless(self, epoch: int, why: str) -> str | None:
        return None  # no search here

    def succeed(self) -> None:
        self.outcome = "succeeded"

    def fail(self, error: str) -> None:
        self.outcome, self.error = "failed", error


def _write_atomic(path: Path, data: bytes) -> None:
    from fsspec.implementations.local import LocalFileSystem

    write_atomic(LocalFileSystem(), str(path.parent), path.name, data,
                 where=f"the folder {path.parent}")


class DirStore:
    """A :class:`RunStore` writing one run to ``folder``: ``history.json``,
    ``lr_trials.json``, ``measures.json`` (the measures and, under ``codecs``, the codec
    rows, under ``sizes`` the measures at other sizes), ``status.json`` and every artifact by name.
    Reference classifiers are cached in ``classifier_cache`` (shared across runs), so a
    second local run on the same data reuses the first one's."""

    def __init__(self, folder: Path, *, classifier_cache: Path | None = None,
                 total_epochs: int | None = None, echo: Callable[[str], None] = print) -> None:
        self.folder = folder
        self.total = total_epochs
        self.classifier_cache = classifier_cache or folder
        self.echo = echo
        self.history: list[EpochMetrics] = []
        folder.mkdir(parents=True, exist_ok=True)

    def _json(self, name: str, value: Any) -> None:
        _write_atomic(self.folder / name, json.dumps(value, indent=2).encode())

    def set_phase(self, phase: str) -> None:
        self.echo(f"[{phase}]")

    def record_epoch(self, metrics: EpochMetrics) -> None:
        self.history = [m for m in self.history if m.epoch != metrics.epoch] + [metrics]
        self._json("history.json", [asdict(m) for m in self.history])
        self.echo("  " + format_epoch(metrics, self.total))

    def record_lr_trials(self, trials: list[LrTrial], chosen_lr: float) -> None:
        self._json("lr_trials.json", {"chosen_lr": chosen_lr,
                                      "trials": [asdict(t) for t in trials]})
        self.echo(f"  learning rate: {chosen_lr:.3g} ({trials[0].method if trials else '-'})")

    def record_measures(self, measures: RunMeasures, codecs: Sequence[CodecRow] = (),
                        sizes: Sequence[SizeMeasures] = ()) -> None:
        self._json("measures.json", {**measures.model_dump(),
                                     "codecs": [c.model_dump() for c in codecs],
                                     "sizes": [m.model_dump() for m in sizes]})

    def save_artifact(self, name: str, kind: str, data: bytes, content_type: str) -> None:
        _write_atomic(self.folder / name, data)

    def _classifier_path(self, key: str) -> Path:
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        return self.classifier_cache / f"classifier-{digest}.pt"

    def has_reference_classifier(self, key: str) -> bool:
        return self._classifier_path(key).is_file()

    def reference_classifier(self, key: str, dataset: str, train: ClassifierTrainer,
                             waiting: Callable[[], None] | None = None
                             ) -> tuple[bytes, float]:
        path = self._classifier_path(key)
        meta = path.with_suffix(".json")
        if path.is_file() and meta.is_file():
            return path.read_bytes(), json.loads(meta.read_text())["accuracy"]
        blob, accuracy = train()
        self.classifier_cache.mkdir(parents=True, exist_ok=True)
        _write_atomic(path, blob)
        _write_atomic(meta, json.dumps({"key": key, "accuracy": accuracy}).encode())
        return blob, accuracy

    def is_cancelled(self) -> bool:
        return False

    def prune_hopeless(self, epoch: int, why: str) -> str | None:
        return None  # no search here

    def succeed(self) -> None:
        self._json("status.json", {"status": "succeeded"})

    def fail(self, error: str) -> None:
        self._json("status.json", {"status": "failed", "error": error})
