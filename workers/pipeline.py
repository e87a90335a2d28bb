"""One run, start to end: data → LR search → final training → evaluation → artifacts.

The steps that need a scheduler (LR search, final training) are passed in, so the same
pipeline runs on Ray (workers.ray_run) or in-process (``local_search``/``local_train``).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from workers.request import RunRequest
from workers.store import RunCancelled, RunStore

log = logging.getLogger("aelab.run")

LrSearch = Callable[[RunRequest, Any, RunStore], tuple[float, list[dict[str, Any]]]]
FinalTrain = Callable[[RunRequest, Any, float, RunStore], Any]  # → models.training.TrainResult
TrainClassifier = Callable[[RunRequest, Any], tuple[bytes, float]]  # → (weights, accuracy)


def local_search(req: RunRequest, data: Any, store: RunStore
                 ) -> tuple[float, list[dict[str, Any]]]:
    """`fixed` and `range_test` without a scheduler; `tune` needs Ray."""
    method = req.spec["lr_search"]["method"]
    if method == "fixed":
        lr = req.default_lr
        return lr, [{"method": "fixed", "lr": lr, "loss": None, "iterations": 0,
                     "stopped_early": False, "chosen": True}]
    if method == "range_test":
        from models.lr_finder import lr_range_test

        result = lr_range_test(req.train_config(), data.train,
                               num_steps=req.spec["lr_search"]["range_test_steps"])
        return result.suggestion, range_test_trials(result)
    raise ValueError(f"lr_search method {method!r} needs Ray")


def range_test_trials(result: Any) -> list[dict[str, Any]]:
    """The sweep as trial rows: every point, the suggestion marked chosen."""
    best = min(range(len(result.lrs)), key=lambda i: abs(result.lrs[i] - result.suggestion))
    return [{"method": "range_test", "lr": lr, "loss": loss, "iterations": i + 1,
             "stopped_early": result.diverged and i == len(result.lrs) - 1,
             "chosen": i == best}
            for i, (lr, loss) in enumerate(zip(result.lrs, result.losses, strict=True))]


def local_train(req: RunRequest, data: Any, lr: float, store: RunStore) -> Any:
    from models.training import train

    def on_epoch(metrics: Any, _checkpoint: dict[str, Any]) -> None:
        store.record_epoch(asdict(metrics))
        if store.is_cancelled():
            raise RunCancelled("cancelled")

    return train(req.train_config(lr), data, on_epoch=on_epoch)


def train_reference_classifier(req: RunRequest, data: Any) -> tuple[bytes, float]:
    import io

    from models.classifier import ClassifierConfig, save_classifier, train_classifier

    c = req.spec["classifier"]
    config = ClassifierConfig(arch=c["arch"], frozen_epochs=c["frozen_epochs"],
                              unfrozen_epochs=c["unfrozen_epochs"], pretrained=c["pretrained"],
                              weights_dir=req.weights_dir, seed=req.spec["seed"],
                              batch_size=req.spec["batch_size"])
    model, accuracy = train_classifier(config, data)
    buffer = io.BytesIO()
    save_classifier(model, config, accuracy, buffer)
    return buffer.getvalue(), accuracy


def evaluate_run(req: RunRequest, result: Any, data: Any, classifier_blob: bytes | None,
                 original_accuracy: float | None) -> tuple[dict[str, Any], bytes, bytes]:
    """(measures, samples PNG, final weights) of a trained model."""
    import io

    import torch

    from models.classifier import load_classifier
    from models.metrics import evaluate, model_facts
    from models.samples import sample_grid

    model = result.model
    device = next(model.parameters()).device
    classifier = None
    if classifier_blob is not None:
        classifier, _ = load_classifier(io.BytesIO(classifier_blob), device)
    measures = evaluate(model, data.test, device=device, classifier=classifier)
    row = {**measures.as_dict(), "original_accuracy": original_accuracy,
           "training_time_s": result.seconds, **model_facts(model, model.latent_dim)}
    weights = io.BytesIO()
    torch.save({"model": req.model, "latent_dim": model.latent_dim,
                "state": model.state_dict()}, weights)
    return row, sample_grid(model, data.test, device=device), weights.getvalue()


def run_pipeline(req: RunRequest, store: RunStore, *, search: LrSearch = local_search,
                 final_train: FinalTrain = local_train,
                 train_classifier: TrainClassifier | None = None) -> bool:
    """Execute the run, reporting through ``store``. A failure ends this run alone, with
    its error recorded; returns whether the run succeeded."""
    try:
        store.set_phase("data")
        data = req.load_data()
        store.set_phase("lr_search")
        lr, trials = search(req, data, store)
        store.record_lr_trials(trials, lr)
        if store.is_cancelled():
            raise RunCancelled("cancelled")
        store.set_phase("train")
        result = final_train(req, data, lr, store)
        store.set_phase("evaluate")
        blob, original = None, None
        if req.spec["classifier"]["enabled"]:
            blob, original = store.reference_classifier(
                req.classifier_key(), req.dataset,
                lambda: (train_classifier or train_reference_classifier)(req, data))
        measures, png, weights = evaluate_run(req, result, data, blob, original)
        store.save_artifact("samples.png", "samples", png, "image/png")
        store.save_artifact("model.pt", "weights", weights, "application/octet-stream")
        store.record_measures(measures)
        store.succeed()
        return True
    except RunCancelled:
        log.info("run %s cancelled", req.name)
        return False
    except Exception as exc:  # a run fails alone, with its error recorded
        log.error("run %s failed:\n%s", req.name, traceback.format_exc())
        store.fail(f"{type(exc).__name__}: {exc}")
        return False
