"""One run, start to end — the one pipeline every path executes:

preflight → data → phase 1 (when the LR search starts from it) → LR search → final
training (finishing the same plan) → evaluation → artifacts.

The pipeline itself touches no tensors: everything that needs torch is a *step*, done by
:class:`LocalSteps` in this process (``aelab train``, tests, and inside the warm runner
actors of ``workers.warm``) or forwarded by ``workers.warm.RunnerSteps`` to a warm runner
on the Ray cluster (the service's job driver). The LR search is a method of
``workers.lr_search``.
"""

from __future__ import annotations

import io
import json
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from models.plan import TrainingDiverged
from workers.checkpoints import CheckpointStorage, CheckpointWriter
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
from workers.measures import CodecRow, RunMeasures, SizeMeasures
from workers.preflight import preflight
from workers.spec import RunSpec
from workers.store import (
    CODE_PROJECTION,
    COMPRESSION_META,
    COMPRESSION_STREAM,
    GALLERY_INPUTS,
    GALLERY_META,
    GALLERY_RECONSTRUCTIONS,
    RunCancelled,
    RunPruned,
    RunStore,
    StaleAttempt,
)

if TYPE_CHECKING:
    from models.compression import CompressionReport
    from models.data import DataSplits
    from models.lr_finder import RangeTestResult
    from models.samples import GalleryArtifacts
    from models.training import TrainResult

log = logging.getLogger("aelab.run")


class Steps(Protocol):
    """The steps of a run that need torch, in this process or on a warm Ray runner. A
    checkpoint travels between them as a key (:meth:`phase1`'s return value), never as
    bytes through the pipeline."""

    kind: str  # "local" or "ray"
    env: RunEnv
    # Timing marks the steps add to the run's ``timings.json`` (e.g. how long the run
    # waited for a warm runner); empty in this process.
    marks: dict[str, float]

    def open(self, spec: RunSpec, store: RunStore) -> None:
        """Start the run's session (``store`` is where in-process steps report)."""

    def prepare(self, spec: RunSpec, classifier_ready: bool) -> None:
        """Preflight on the node that trains (every file the run needs), check the
        resources, load the data."""

    def phase1(self, spec: RunSpec) -> str:
        """Train the plan up to the end of phase 1 (recording its epochs); returns the
        key of the checkpoint there."""

    def range_test(self, spec: RunSpec, start: str | None) -> RangeTestPoints:
        """The study's LR range test on the plan's last phase, from ``start``."""

    def tune_trials(self, spec: RunSpec, start: str | None, budget: int
                    ) -> list[tuple[float, list[float]]]:
        """Ray Tune trials of the ``tune`` method: (lr, validation loss per epoch) each."""

    def train(self, spec: RunSpec, lr: float, start: str | None) -> None:
        """Finish the plan with ``lr`` for its last phase, from ``start`` (or from init),
        recording every epoch; the trained model stays with the steps."""

    def train_classifier(self, spec: RunSpec) -> tuple[bytes, float]:
        """The reference classifier's serialised weights and its test accuracy."""

    def evaluate(self, spec: RunSpec, classifier: bytes | None,
                 original_accuracy: float | None
                 ) -> tuple[RunMeasures, list[CodecRow], list[SizeMeasures]]:
        """Test-set measures of the trained model, its codec rows and its measures at
        the other sizes it takes (``evaluation.sizes``); its sample figure and weights
        are saved as the run's artifacts."""

    def hand_back(self) -> None:
        """Give back, while the run waits on another run, what it holds between steps
        (its warm runner); the next step takes one again and resumes from the run's
        checkpoints."""

    def finish(self) -> None:
        """Release what the steps kept for the run (sessions, trial checkpoints); called
        once the last step is done and again when the pipeline ends (a second call does
        nothing)."""


@dataclass(frozen=True)
class RangeTestPoints:
    """A range test's curve as plain numbers (it crosses processes)."""

    lrs: list[float]
    losses: list[float]
    suggestion: float
    diverged: bool

    @classmethod
    def of(cls, r: RangeTestResult) -> RangeTestPoints:
        return cls(list(r.lrs), list(r.losses), r.suggestion, r.diverged)


def diverged_in(exc: BaseException) -> TrainingDiverged | None:
    """The :class:`~models.plan.TrainingDiverged` that ``exc`` is or wraps (Ray's task
    errors carry it as ``cause``), else None."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, TrainingDiverged):
            return exc
        seen.add(id(exc))
        cause = getattr(exc, "cause", None)
        exc = cause if isinstance(cause, BaseException) else exc.__cause__  # type: ignore[assignment]
    return None


def check_cancelled(store: RunStore) -> None:
    if store.is_cancelled():
        raise RunCancelled("cancelled")


def train_classifier_blob(spec: RunSpec, env: RunEnv, data: DataSplits,
                          device: str | None = None) -> tuple[bytes, float]:
    """Train the reference classifier in this process: (weights, test accuracy)."""
    from models.classifier import save_classifier, train_classifier

    config = classifier_config(spec, env, device)
    model, accuracy = train_classifier(
        config, data, on_epoch=lambda done, total: print(
            f"reference classifier: epoch {done}/{total}", flush=True))
    buffer = io.BytesIO()
    save_classifier(model, config, accuracy, buffer)
    return buffer.getvalue(), accuracy


class LocalSteps:
    """The steps in this process. With ``persist``, every epoch's checkpoint is also
    written to the run's storage, so a step re-run elsewhere (a warm runner on another
    node, after this one died) resumes from the last epoch instead of from scratch."""

    kind = "local"

    def __init__(self, env: RunEnv, *, persist: bool = False) -> None:
        self.env = env
        self.marks: dict[str, float] = {}
        self.storage = CheckpointStorage(env) if persist else None
        self.store: RunStore | None = None
        self.data: DataSplits | None = None
        self.result: TrainResult | None = None
        self.checkpoints: dict[str, bytes] = {}

    # --- the session ---------------------------------------------------------------------

    def open(self, spec: RunSpec, store: RunStore) -> None:
        self.store = store

    def _data(self, spec: RunSpec) -> DataSplits:
        if self.data is None:
            self.data = load_data(spec, self.env)
        return self.data

    def _checkpoint(self, key: str | None) -> bytes | None:
        if key is None:
            return None
        if key not in self.checkpoints and self.storage is not None:
            blob = self.storage.read_step(key)
            if blob is not None:
                self.checkpoints[key] = blob
        if key not in self.checkpoints:
            raise RuntimeError(f"checkpoint {key!r} of this run is gone")
        return self.checkpoints[key]

    def _keep(self, key: str, blob: bytes) -> None:
        self.checkpoints[key] = blob
        if self.storage is not None:
            self.storage.write(key, blob)

    # --- the steps -----------------------------------------------------------------------

    def prepare(self, spec: RunSpec, classifier_ready: bool) -> None:
        env = self.env
        env.use()
        preflight(spec, data_root=env.data_root, weights_dir=env.weights_dir,
                  allow_download=env.allow_download, classifier_ready=classifier_ready)
        self._data(spec)

    def _train(self, spec: RunSpec, step: str, lr: float | None, start: str | None,
               stop_after: int | None) -> None:
        """Train a slice of the plan, recording every epoch. With storage, each epoch's
        checkpoint is written as ``{step}-progress`` by a background writer while the
        next epoch trains (:class:`~workers.checkpoints.CheckpointWriter`: durably, then
        the epoch recorded; at most one epoch in flight, its error raised here at the
        next epoch or at the end), so a step re-run after its runner died resumes from
        the last epoch recorded or a later one, never from a torn file."""
        from models.training import load_checkpoint, save_checkpoint, snapshot_checkpoint, train

        store = self.store
        assert store is not None
        progress = f"{step}-progress"
        # A step re-run after its runner died continues from its own last epoch.
        resume = (self.storage.read(progress) if self.storage is not None else None) \
            or self._checkpoint(start)
        config, data = train_config(spec, self.env, lr), self._data(spec)
        resume_from = load_checkpoint(resume) if resume else None
        blob: bytes | None
        if self.storage is None:  # nothing durable to write: all on this thread
            last: dict[str, Any] = {}

            def on_epoch(metrics: Any, checkpoint: dict[str, Any]) -> None:
                store.record_epoch(metrics)
                last["checkpoint"] = checkpoint
                check_cancelled(store)

            self.result = train(config, data, on_epoch=on_epoch, resume_from=resume_from,
                                stop_after=stop_after)
            blob = save_checkpoint(last["checkpoint"]) if last else None
        else:
            with CheckpointWriter(self.storage, progress, save_checkpoint,
                                  store.record_epoch) as writer:

                def on_epoch(metrics: Any, checkpoint: dict[str, Any]) -> None:
                    writer.wait()  # the last epoch's write and record: its error here
                    writer.submit(metrics, snapshot_checkpoint(checkpoint))
                    check_cancelled(store)  # a prune of the epoch in flight wins (writer)

                self.result = train(config, data, on_epoch=on_epoch,
                                    resume_from=resume_from, stop_after=stop_after)
            blob = writer.last  # the last epoch's, written and recorded
        if blob is not None:  # the last epoch's: durable as {step}-progress (read_step)
            self.checkpoints[step] = blob
        elif resume is not None:
            self._keep(step, resume)

    def phase1(self, spec: RunSpec) -> str:
        self._train(spec, "phase1", None, None, phase1_epochs(spec))
        return "phase1"

    def range_test(self, spec: RunSpec, start: str | None) -> RangeTestPoints:
        from models.lr_finder import lr_range_test
        from models.training import load_checkpoint

        blob = self._checkpoint(start)
        result = lr_range_test(train_config(spec, self.env), self._data(spec).train,
                               resume_from=load_checkpoint(blob) if blob else None,
                               num_steps=spec.lr_search.range_test_steps)
        return RangeTestPoints.of(result)

    def tune_trials(self, spec: RunSpec, start: str | None, budget: int
                    ) -> list[tuple[float, list[float]]]:
        from workers.lr_search import LrSearchUnavailable

        raise LrSearchUnavailable("lr_search method 'tune' needs a Ray cluster: submit the "
                                  "run to the service, or use fixed or range_test locally")

    def train(self, spec: RunSpec, lr: float, start: str | None) -> None:
        self._train(spec, "train", lr, start, None)

    def train_classifier(self, spec: RunSpec) -> tuple[bytes, float]:
        return train_classifier_blob(spec, self.env, self._data(spec))

    def _trained(self, spec: RunSpec) -> TrainResult:
        """The trained model: this session's, else rebuilt from the final checkpoint."""
        if self.result is not None:
            return self.result
        from models.plan import EpochMetrics
        from models.recipes import build_model
        from models.training import TrainResult, load_checkpoint, resolve_device

        blob = self._checkpoint("train")
        assert blob is not None
        checkpoint = load_checkpoint(blob)
        model = build_model(spec.recipe, latent_dim=spec.latent_dim, pretrained=False,
                            crop=spec.data.crop)
        model.load_state_dict(checkpoint["model"])
        model.to(resolve_device(self.env.device)).eval()
        history = [EpochMetrics(**m) for m in checkpoint["history"]]
        return TrainResult(model, history, sum(m.seconds for m in history))

    def evaluate(self, spec: RunSpec, classifier: bytes | None,
                 original_accuracy: float | None
                 ) -> tuple[RunMeasures, list[CodecRow], list[SizeMeasures]]:
        store = self.store
        assert store is not None
        evaluation = evaluate_run(spec, self._trained(spec), self._data(spec), classifier,
                                  original_accuracy)
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
        if evaluation.compression is not None:
            c = evaluation.compression
            store.save_artifact(COMPRESSION_STREAM, "compression", c.stream,
                                "application/octet-stream")
            store.save_artifact(COMPRESSION_META, "compression",
                                json.dumps(c.meta, indent=1).encode(), "application/json")
        if evaluation.projection is not None:
            store.save_artifact(CODE_PROJECTION, "codes",
                                json.dumps(evaluation.projection).encode(), "application/json")
        return evaluation.measures, evaluation.codecs, evaluation.sizes

    def hand_back(self) -> None:
        """Nothing to give back: this process holds no slot of a cluster."""

    def finish(self) -> None:
        self.data = None
        self.result = None
        self.checkpoints.clear()
        if self.storage is not None:
            self.storage.remove()


@dataclass(frozen=True)
class Evaluation:
    measures: RunMeasures  # without search_time_s and wall_time_s (the pipeline's)
    codecs: list[CodecRow]
    samples_png: bytes
    weights: bytes
    gallery: GalleryArtifacts
    compression: CompressionReport | None = None
    projection: dict[str, Any] | None = None  # the test codes' 2-D PCA (CODE_PROJECTION)
    sizes: list[SizeMeasures] = field(default_factory=list)  # evaluation.sizes it takes


def evaluate_run(spec: RunSpec, result: TrainResult, data: DataSplits,
                 classifier_blob: bytes | None, original_accuracy: float | None
                 ) -> Evaluation:
    """Test-set measures, the sample figure, the gallery's reconstructions of the first
    ``spec.gallery_samples`` test images and the final weights of a trained model; and
    what an image really costs (``models.compression``): the test set quantised to
    ``spec.compression.bits``, entropy-coded (the stream is an artifact), decoded from the
    stream and measured (``q_*``), bytes per image and bpp, and codec rows at the same
    bytes; and what the codes know (``models.probes``: k-NN and linear probes, k-means
    NMI) and their 2-D PCA (``models.probes.code_projection``), none of which when the data
    is evaluated whole; and the float measures at each of ``evaluation.sizes`` the model
    takes (``RunSpec.size_plan``; ``models.metrics.evaluate_sizes``). ValidationError when
    a measure is not in the contract (``workers.measures``)."""
    import torch

    from models.classifier import load_classifier
    from models.compression import compress_run, quantised_codes
    from models.metrics import evaluate, evaluate_sizes, model_facts
    from models.probes import latent_probes
    from models.samples import reconstruct_gallery, sample_grid

    model = result.model
    device = next(model.parameters()).device
    classifier = None
    if classifier_blob is not None:
        classifier, _ = load_classifier(io.BytesIO(classifier_blob), device)
    measures = evaluate(model, data.test, device=device, classifier=classifier,
                        whole_crop=data.crop if data.whole else None, size=data.crop)
    compression = compress_run(model, data, dataset=spec.dataset,
                               bits=spec.compression.bits, classifier=classifier,
                               device=device, codecs=tuple(spec.compression.codecs))
    # The probes read one code per image: whole images of any size have one per tile.
    probes, projection = ({}, None) if data.whole else latent_probes(
        model, data, seed=spec.seed, device=device,
        quantised=quantised_codes(compression.meta), test_codes=compression.codes)
    # The models layer reports plain dicts; the contract validates their union.
    reported = RunMeasures.model_validate({
        **measures.as_dict(), "original_accuracy": original_accuracy,
        "training_time_s": result.seconds, **model_facts(model, model.latent_dim),
        **compression.measures, **probes, "rd_lambda": spec.effective_rd_lambda})
    codecs = [CodecRow.model_validate(row) for row in compression.codec_rows]
    weights = io.BytesIO()
    torch.save({"model": spec.model, "latent_dim": model.latent_dim, "crop": spec.data.crop,
                "recipe": spec.recipe.model_dump(mode="json"),
                "spec": spec.model_dump(mode="json"), "state": model.state_dict()}, weights)
    whole = data.crop if data.whole else None
    gallery = reconstruct_gallery(model, data.test, spec.gallery_samples,
                                  dataset=spec.dataset, device=device, whole_crop=whole,
                                  size=data.crop)
    grid = sample_grid(model, data.test, device=device, whole_crop=whole, size=data.crop)
    takes = [size for size, problem in spec.size_plan() if problem is None]
    at_sizes = evaluate_sizes(model, data.test, takes, crop=data.crop, whole=data.whole,
                              device=device, classifier=classifier)
    sizes = [SizeMeasures.model_validate({"size": size, **m.as_dict()})
             for size, m in at_sizes.items()]
    return Evaluation(reported, codecs, grid,
                      weights.getvalue(), gallery, compression, projection, sizes)


def run_pipeline(spec: RunSpec, store: RunStore, steps: Steps,
                 clock: dict[str, float] | None = None) -> bool:
    """Execute the run, reporting through ``store``. A failure ends this run alone, its
    error recorded as one line (the traceback goes to the log); returns success.

    Also saves ``timings.json``: wall-clock seconds of each stage and when training
    started (Unix time), for the orchestration benchmark; ``clock`` adds the caller's
    earlier marks (a job driver's start, imports and ``ray.init``, Unix time)."""
    started = time.perf_counter()
    clock = {**(clock or {}), "pipeline_started_unix": time.time()}

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        clock[f"{name}_s"] = clock.get(f"{name}_s", 0.0) + now - since
        return now

    try:
        steps.open(spec, store)
        store.set_phase("preflight")
        key = classifier_key(spec)
        ready = spec.classifier.enabled and store.has_reference_classifier(key)
        t = time.perf_counter()
        steps.prepare(spec, classifier_ready=ready)
        t = lap("prepare", t)
        method = get_method(spec.lr_search.method)
        start = None
        clock["training_started_unix"] = time.time()
        if method.needs_phase1 and len(plan(spec)) > 1:
            store.set_phase("train")  # phase 1 is the final model's first epochs
            start = steps.phase1(spec)
            check_cancelled(store)
            t = lap("train", t)
        store.set_phase("lr_search")
        found = method.search(steps, SearchJob(spec, start, store))
        search_time = time.perf_counter() - t
        t = lap("search", t)
        store.record_lr_trials(found.trials, found.lr)
        check_cancelled(store)
        store.set_phase("train")
        steps.train(spec, found.lr, start)
        check_cancelled(store)
        t = lap("train", t)
        store.set_phase("evaluate")
        blob, original = None, None
        if spec.classifier.enabled:
            # A run waiting for another run's classifier hands its runner back meanwhile
            # (the trainer may have lost its own and need one).
            blob, original = store.reference_classifier(
                key, spec.dataset, lambda: steps.train_classifier(spec),
                waiting=lambda: steps.hand_back())
        t = lap("classifier", t)
        measures, codecs, sizes = steps.evaluate(spec, blob, original)
        lap("evaluate", t)
        # The runner goes back now: what follows is this process's records, and the next
        # run's driver may be waiting for it. A cleanup that fails here does not fail a
        # run already evaluated (``finally`` tries once more).
        try:
            steps.finish()
        except Exception as exc:
            log.warning("run %s: releasing its steps failed (%s: %s); tried again at the "
                        "end", spec.label(), type(exc).__name__, exc)
        clock["wall_s"] = time.perf_counter() - started
        clock.update(steps.marks)
        store.save_artifact("timings.json", "timings", json.dumps(clock).encode(),
                            "application/json")
        store.record_measures(measures.model_copy(update={
            "search_time_s": search_time, "wall_time_s": time.perf_counter() - started}),
            codecs, sizes)
        store.succeed()
        return True
    except RunPruned as exc:
        log.info("run %s %s", spec.label(), exc)
        return False
    except RunCancelled:
        log.info("run %s cancelled", spec.label())
        return False
    except StaleAttempt as exc:
        log.warning("run %s: %s; this driver stops", spec.label(), exc)
        return False
    except Exception as exc:  # a run fails alone, with its error recorded
        try:
            diverged = diverged_in(exc)
            pruned = None if diverged is None else store.prune_hopeless(
                diverged.epoch, f"{diverged.what} is {diverged.value} (diverged)")
            if pruned:  # a search's hopeless sample, not a failure
                log.info("run %s %s", spec.label(), pruned)
                return False
            log.exception("run %s failed", spec.label())
            store.fail(one_line_error(exc))
        except (RunCancelled, StaleAttempt) as refused:
            log.warning("run %s: its failure was not recorded: %s", spec.label(), refused)
        return False
    finally:
        steps.finish()
