"""One run, start to end — the one pipeline every path executes:

preflight → data → phase 1 (when the LR search starts from it) → LR search → final
training (finishing the same plan) → evaluation → artifacts.

The steps that need a scheduler are behind :class:`Steps`: :class:`LocalSteps` runs them
in-process (``aelab train``, tests), ``workers.ray_run.RaySteps`` on Ray Tune (the
service's job driver). The LR search is a method of ``workers.lr_search``.
"""

from __future__ import annotations

import io
import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from workers.context import (
    RunEnv,
    classifier_config,
    classifier_key,
    load_data,
    one_line_error,
    plan,
    train_config,
)
from workers.lr_search import SearchJob, get_method, phase1_epochs
from workers.preflight import preflight
from workers.spec import RunSpec
from workers.store import (
    GALLERY_INPUTS,
    GALLERY_META,
    GALLERY_RECONSTRUCTIONS,
    RunCancelled,
    RunStore,
    StaleAttempt,
)

if TYPE_CHECKING:
    from models.data import DataSplits
    from models.samples import GalleryArtifacts
    from models.training import TrainResult

log = logging.getLogger("aelab.run")


class Steps(Protocol):
    """The scheduled steps of a run: in-process or on Ray."""

    kind: str
    env: RunEnv

    def phase1(self, spec: RunSpec, data: DataSplits, store: RunStore) -> bytes:
        """Train the plan up to the end of phase 1 (recording its epochs); returns the
        checkpoint there."""

    def train(self, spec: RunSpec, data: DataSplits, lr: float, start: bytes | None,
              store: RunStore) -> TrainResult:
        """Finish the plan with ``lr`` for its last phase, from ``start`` (or from init),
        recording every epoch; returns the trained model and the whole history."""

    def train_classifier(self, spec: RunSpec, data: DataSplits) -> tuple[bytes, float]:
        """The reference classifier's serialised weights and its test accuracy."""


def check_cancelled(store: RunStore) -> None:
    if store.is_cancelled():
        raise RunCancelled("cancelled")


def train_classifier_blob(spec: RunSpec, env: RunEnv, data: DataSplits,
                          device: str | None = None) -> tuple[bytes, float]:
    """Train the reference classifier in this process: (weights, test accuracy)."""
    from models.classifier import save_classifier, train_classifier

    config = classifier_config(spec, env, device)
    model, accuracy = train_classifier(config, data)
    buffer = io.BytesIO()
    save_classifier(model, config, accuracy, buffer)
    return buffer.getvalue(), accuracy


class LocalSteps:
    """The scheduled steps in this process: no Ray (``aelab train``, unit tests)."""

    kind = "local"

    def __init__(self, env: RunEnv) -> None:
        self.env = env

    def _train(self, spec: RunSpec, data: DataSplits, lr: float | None, start: bytes | None,
               store: RunStore, stop_after: int | None) -> tuple[TrainResult, bytes | None]:
        from models.training import load_checkpoint, save_checkpoint, train

        last: dict[str, Any] = {}

        def on_epoch(metrics: Any, checkpoint: dict[str, Any]) -> None:
            store.record_epoch(metrics)
            last["checkpoint"] = checkpoint
            check_cancelled(store)

        result = train(train_config(spec, self.env, lr), data, on_epoch=on_epoch,
                       resume_from=load_checkpoint(start) if start else None,
                       stop_after=stop_after)
        blob = save_checkpoint(last["checkpoint"]) if "checkpoint" in last else start
        return result, blob

    def phase1(self, spec: RunSpec, data: DataSplits, store: RunStore) -> bytes:
        _, blob = self._train(spec, data, None, None, store, phase1_epochs(spec))
        assert blob is not None
        return blob

    def train(self, spec: RunSpec, data: DataSplits, lr: float, start: bytes | None,
              store: RunStore) -> TrainResult:
        return self._train(spec, data, lr, start, store, None)[0]

    def train_classifier(self, spec: RunSpec, data: DataSplits) -> tuple[bytes, float]:
        return train_classifier_blob(spec, self.env, data)


@dataclass(frozen=True)
class Evaluation:
    measures: dict[str, Any]
    samples_png: bytes
    weights: bytes
    gallery: GalleryArtifacts


def evaluate_run(spec: RunSpec, result: TrainResult, data: DataSplits,
                 classifier_blob: bytes | None, original_accuracy: float | None
                 ) -> Evaluation:
    """Test-set measures, the sample figure, the gallery's reconstructions of the first
    ``spec.gallery_samples`` test images and the final weights of a trained model."""
    import torch

    from models.classifier import load_classifier
    from models.metrics import evaluate, model_facts
    from models.samples import reconstruct_gallery, sample_grid

    model = result.model
    device = next(model.parameters()).device
    classifier = None
    if classifier_blob is not None:
        classifier, _ = load_classifier(io.BytesIO(classifier_blob), device)
    measures = evaluate(model, data.test, device=device, classifier=classifier)
    row = {**measures.as_dict(), "original_accuracy": original_accuracy,
           "training_time_s": result.seconds, **model_facts(model, model.latent_dim)}
    weights = io.BytesIO()
    torch.save({"model": spec.model, "latent_dim": model.latent_dim,
                "spec": spec.model_dump(mode="json"), "state": model.state_dict()}, weights)
    gallery = reconstruct_gallery(model, data.test, spec.gallery_samples,
                                  dataset=spec.dataset, device=device)
    return Evaluation(row, sample_grid(model, data.test, device=device), weights.getvalue(),
                      gallery)


def run_pipeline(spec: RunSpec, store: RunStore, steps: Steps) -> bool:
    """Execute the run, reporting through ``store``. A failure ends this run alone, its
    error recorded as one line (the traceback goes to the log); returns success."""
    env = steps.env
    started = time.perf_counter()
    try:
        store.set_phase("preflight")
        key = classifier_key(spec)
        ready = spec.classifier.enabled and store.has_reference_classifier(key)
        preflight(spec, data_root=env.data_root, weights_dir=env.weights_dir,
                  allow_download=env.allow_download, classifier_ready=ready)
        store.set_phase("data")
        data = load_data(spec, env)
        method = get_method(spec.lr_search.method)
        start = None
        if method.needs_phase1 and len(plan(spec)) > 1:
            store.set_phase("train")  # phase 1 is the final model's first epochs
            start = steps.phase1(spec, data, store)
            check_cancelled(store)
        store.set_phase("lr_search")
        searched = time.perf_counter()
        found = method.search(steps, SearchJob(spec, data, start, store))
        search_time = time.perf_counter() - searched
        store.record_lr_trials(found.trials, found.lr)
        check_cancelled(store)
        store.set_phase("train")
        result = steps.train(spec, data, found.lr, start, store)
        check_cancelled(store)
        store.set_phase("evaluate")
        blob, original = None, None
        if spec.classifier.enabled:
            blob, original = store.reference_classifier(
                key, spec.dataset, lambda: steps.train_classifier(spec, data))
        evaluation = evaluate_run(spec, result, data, blob, original)
        store.save_artifact("samples.png", "samples", evaluation.samples_png, "image/png")
        store.save_artifact("model.pt", "weights", evaluation.weights,
                            "application/octet-stream")
        gallery = evaluation.gallery
        store.save_artifact(GALLERY_INPUTS, "gallery", gallery.inputs_png, "image/png")
        store.save_artifact(GALLERY_RECONSTRUCTIONS, "gallery", gallery.reconstructions_png,
                            "image/png")
        meta = {**gallery.meta, "inputs": GALLERY_INPUTS,
                "reconstructions": GALLERY_RECONSTRUCTIONS}
        store.save_artifact(GALLERY_META, "gallery", json.dumps(meta, indent=1).encode(),
                            "application/json")
        store.record_measures({**evaluation.measures, "search_time_s": search_time,
                               "wall_time_s": time.perf_counter() - started})
        store.succeed()
        return True
    except RunCancelled:
        log.info("run %s cancelled", spec.label())
        return False
    except StaleAttempt as exc:
        log.warning("run %s: %s; this driver stops", spec.label(), exc)
        return False
    except Exception as exc:  # a run fails alone, with its error recorded
        log.exception("run %s failed", spec.label())
        try:
            store.fail(one_line_error(exc))
        except (RunCancelled, StaleAttempt) as refused:
            log.warning("run %s: its failure was not recorded: %s", spec.label(), refused)
        return False
