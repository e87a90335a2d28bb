"""The API's wire contract: its path prefix, the results formats, and every answer's body.

The server answers with these models and the client parses answers with the very same
ones, so the two cannot drift apart. Imports pydantic, this package and the measures
contract (``workers.measures``, a leaf module that imports pydantic only): the client
installs without the server's dependencies (SQLAlchemy, FastAPI, Ray, torch).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict

from service.client.states import Status
from workers.measures import ResultsTable as ResultsTable  # the results' JSON body
from workers.measures import RunMeasures, SizeMeasures

API_PREFIX = "/api/v1"  # every API path starts with it (health checks aside)

# The formats GET /experiments/{id}/results renders (service.results.FORMATS, by name).
ResultFormat = Literal["json", "csv", "markdown"]


def _as_utc(value: datetime) -> datetime:
    """Stored times are UTC; SQLite hands them back without an offset: say it."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Every timestamp in an answer is UTC with its offset, whatever the database kept.
UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]


class _FromRow(BaseModel):
    # Non-finite numbers read "NaN", "Infinity", "-Infinity" (as in every results format);
    # null means "not measured".
    model_config = ConfigDict(from_attributes=True, ser_json_inf_nan="strings")


class RunSummary(_FromRow):
    id: int
    model: str
    dataset: str
    rd_lambda: float | None = None  # factorized_prior's λ; None for the other variants
    status: Status
    phase: str | None
    epoch: int
    epochs_total: int
    progress: float  # share of training epochs done, 0..1
    lr: float | None
    attempt: int
    error: str | None
    ray_job_id: str | None
    created_at: UtcDatetime
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    links: dict[str, str]


class _ExperimentBase(_FromRow):
    id: int
    name: str
    status: Status
    error: str | None
    created_at: UtcDatetime
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    links: dict[str, str]


class ExperimentOut(_ExperimentBase):
    runs: list[RunSummary]
    # A search's state (service.orchestration.sampling.search_view): metric, mode,
    # algorithm, pruner, space (searched names), planned (runs once every sample is made),
    # samples (run_id, model, dataset, sample, status, epoch, values, metric), best and
    # best_by_pair (the best succeeded sample overall / per "model/dataset"); None for a grid.
    search: dict[str, Any] | None = None


class ExperimentItem(_ExperimentBase):
    """An experiment in a list: its runs as counts (the detail endpoint lists them)."""

    runs: dict[str, int]  # status → count, plus "total"


# The ``code`` of an error answer, one per status (service.http_errors answers them).
ERROR_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 409: "conflict", 413: "payload_too_large",
               500: "internal_error", 503: "unavailable"}


class FieldError(BaseModel):
    """One problem of a refused request, as pydantic names it: ``loc`` is the path to the
    field (``["body", "epochs"]``), ``type`` the machine-readable kind (the answer also
    carries the refused ``input`` and the rule's ``ctx`` where pydantic gives them)."""

    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorOut(BaseModel):
    """A 422: every refused field of the request, each named."""

    detail: list[FieldError]


class ErrorOut(BaseModel):
    """Every other error answer: what went wrong, its ``code`` (one per status:
    ``ERROR_CODES``), and on a 500 the id its log line has."""

    detail: str
    code: str
    request_id: str | None = None


class Readiness(BaseModel):
    """``/readyz``: ready when every check is ``ok`` (or ``disabled``); 503 otherwise."""

    ready: bool
    checks: dict[str, str]  # database, ray, artifacts → ok, disabled or what is wrong


class RatePoint(BaseModel):
    """One point of a rate–distortion curve. ``bpp`` = 8 · bytes_per_image / native H·W.
    A model point is measured on images decoded from its entropy-coded test set (the
    mean over the runs of its group, e.g. seeds); a codec point at one quality."""

    model_config = ConfigDict(ser_json_inf_nan="strings")

    bpp: float
    bytes_per_image: float
    psnr: float
    ssim: float
    accuracy: float | None
    psnr_per_image: float | None = None  # mean of per-image PSNRs (CompressAI's convention)
    ms_ssim: float | None = None  # null under 176 px a side
    latent_dim: int | None = None
    rd_lambda: float | None = None
    quant_bits: int | None = None
    quality: float | None = None
    run_ids: list[int] = []


class BjontegaardDelta(BaseModel):
    """A model curve's BD-rate and BD-PSNR against an anchor codec's curve, over the
    overlapping range only (``service.results.rate_distortion.bjontegaard_delta``); a
    delta is null with its reason, its range null."""

    anchor: str  # the codec whose curve is the reference
    method: str  # the bjontegaard package's interpolation (pchip)
    bd_rate_pct: float | None  # mean rate difference at equal PSNR, % (negative: fewer bits)
    psnr_range_db: list[float] | None  # [low, high]: the PSNR overlap it is averaged over
    bd_rate_reason: str | None
    bd_psnr_db: float | None  # mean PSNR difference at equal log-rate, dB (positive: better)
    bpp_range: list[float] | None  # [low, high]: the bpp overlap it is averaged over
    bd_psnr_reason: str | None
    points: list[int]  # points on the upper envelopes used: [model, anchor]
    # The points each curve lost before the fit, in words: at a tied rate (the same bpp as
    # another point, the higher PSNR kept), below a cheaper point's PSNR, or not finite.
    dropped: list[str] = []


class RateSeries(BaseModel):
    """A model's points on one dataset (one per latent size / λ), or a codec's curve."""

    kind: Literal["model", "codec"]
    name: str  # variant name, or codec name
    title: str
    dataset: str
    points: list[RatePoint]
    bd: BjontegaardDelta | None = None  # model series, with ?anchor=


class RateDistortion(BaseModel):
    """``GET /experiments/{id}/rate_distortion``: per dataset, each model's points
    (grouped by model, dataset, latent size and λ; sorted by bpp) and the codec curves
    over a range of qualities on the same test images."""

    experiment_id: int
    definitions: dict[str, str]
    series: list[RateSeries]


class CompressAIResult(BaseModel):
    """One series of ``GET /experiments/{id}/rate_distortion?format=compressai``: a result
    file as CompressAI's eval_model writes it and ``python -m compressai.utils.plot`` reads
    it (``results``: ``bpp``, ``psnr-rgb`` and ``ms-ssim-rgb`` — null where MS-SSIM was not
    measured —, the older ``psnr``, and ``ms-ssim`` where every point has it; per-image
    conventions)."""

    name: str
    description: str
    results: dict[str, list[float | None]]


class ExperimentPage(BaseModel):
    items: list[ExperimentItem]
    next: str | None  # cursor for the next (older) page


class RunItem(RunSummary):
    """A run in a list across experiments: its summary, size and measures."""

    experiment_id: int
    experiment_name: str
    latent_dim: int  # effective: the spec's or the variant's
    measures: RunMeasures | None  # once evaluated


class RunPage(BaseModel):
    items: list[RunItem]
    next: str | None  # cursor for the next page in the same order


class DryRun(BaseModel):
    dry_run: bool = True
    spec: dict[str, Any]
    # model, dataset, latent_dim, seed: one per grid point; a search's: model, dataset and
    # its samples, one per (model, dataset)
    runs: list[dict[str, str | int]]
    # A search's algorithm, metric, mode, pruner, num_samples, max_concurrent, runs (the
    # run count) and space (name, field, distribution, values); None without search.
    search: dict[str, Any] | None = None
    estimate: dict[str, float | int]
    needs: list[dict[str, Any]]  # files the runs need, as the API host sees them
    missing: list[dict[str, Any]]  # those absent here (workers may still hold them)


class EpochOut(_FromRow):
    epoch: int
    phase: str
    size: int
    lr: float
    train_loss: float
    val_loss: float
    val_mse: float
    val_mae: float
    seconds: float
    images_per_s: float
    # The epoch's GPU: NVML's utilisation (%, the device's mean over the epoch) and the
    # most memory the run's process reserved on it (MiB); null without a GPU.
    gpu_utilization_percent: float | None = None
    gpu_memory_peak_mib: float | None = None


class LrTrialOut(_FromRow):
    method: str
    lr: float
    loss: float | None
    iterations: int
    stopped_early: bool
    chosen: bool


class ArtifactOut(_FromRow):
    name: str
    kind: str
    content_type: str
    size: int
    checksum: str
    created_at: UtcDatetime
    url: str


class AttemptOut(_FromRow):
    attempt: int
    job_id: str
    cluster: str | None  # the Ray session it was submitted to
    status: Status
    error: str | None
    # A lost attempt's cause, each with its own budget: "cluster" (its Ray cluster gone)
    # or "run" (its driver died); null otherwise (and for attempts lost before 0010).
    lost_to: Literal["cluster", "run"] | None = None
    started_at: UtcDatetime
    finished_at: UtcDatetime | None


class RunDetail(RunSummary):
    experiment_id: int
    spec: dict[str, Any]
    attempts: list[AttemptOut]  # every submission of the run, each with how it ended
    lr_trials: list[LrTrialOut]
    epochs: list[EpochOut]
    measures: RunMeasures | None  # once evaluated
    # At evaluation.sizes it was measured at (results: also which it cannot take, and why)
    size_measures: list[SizeMeasures] = []
    artifacts: list[ArtifactOut]


class SourceOut(BaseModel):
    """Where a catalog entry comes from."""

    kind: Literal["built-in", "plugin"]
    distribution: str | None = None  # a plugin's distribution (as pip names it)
    version: str | None = None
    entry_point: str | None = None  # "tiny_ae = tiny_ae:build"


class RecipeOut(BaseModel):
    """A variant's recipe: the axes an inline recipe in a spec composes."""

    architecture: str
    loss: str
    progressive: bool
    encoder_weights: str
    latent_dim: int | None


class VariantOut(BaseModel):
    name: str
    title: str
    description: str
    recipe: RecipeOut | None  # None: a plugin that is unavailable
    latent_dim: int | None
    params: int | None  # at its latent size; None: not known before a build (plugins)
    needs_pretrained_weights: bool
    pretrained_weights: list[str]  # weights files it loads with pretrained: true
    pretrained_weights_present: bool  # all of them on the API host
    seed_lr: dict[str, float]
    source: SourceOut
    available: bool  # false: a plugin that fails to load (see error)
    error: str | None = None


class ArchitectureOut(BaseModel):
    """A registered builder and the capabilities recipes over it may use."""

    name: str
    title: str
    description: str
    default_latent_dim: int | None
    params: int | None  # at the default latent size, where known before a build
    resizable: bool  # can change its output size: progressive may be true
    pretrained_body: str | None  # ImageNet weights of its encoder body: encoder_weights
    layer_groups: bool  # discriminative learning rates for the pretrained body
    entropy_model: bool  # a learned entropy model: loss rate_distortion, its own coder
    source: SourceOut
    available: bool
    error: str | None = None
    # data.crop values it takes: multiples of this (px); None: the study's 32 only
    crop_stride: int | None = None


class LossOut(BaseModel):
    name: str
    title: str
    description: str
    weights: list[str]  # pretrained weights it loads (pretrained: true)
    needs_entropy_model: bool


class DatasetOut(BaseModel):
    name: str
    title: str
    description: str
    num_classes: int | None  # None: unlabelled
    channels: int | None  # as stored: 1 grey, 3 RGB
    native_size: list[int] | None  # [H, W]; None: differs per image
    train_size: int | None  # images
    test_size: int | None
    min_size: list[int] | None = None  # [H, W] smallest per side; None: not known
    max_size: list[int] | None = None  # [H, W] largest per side
    classes: list[str] = []  # class names, when it has them (a folder's class folders)
    split: str = ""  # how its train/test split is made, when not the dataset's own
    available: bool  # present and whole on the API host
    # available, missing, corrupt ("present but corrupt") or unusable (whole files the run
    # cannot load as they are, e.g. padded too large); unchecked: a plugin's files
    # (checked on the worker); broken: a plugin that fails to load (problems say why)
    status: str
    problems: list[str]  # each missing or corrupt file, by path
    source: SourceOut
    error: str | None = None  # why it is unavailable, in one line (as a variant's)


class WeightsOut(BaseModel):
    name: str
    file: str
    folder: str  # where to place it
    present: bool  # present and whole (its SHA-256 prefix checked)
    problem: str | None = None  # e.g. "… is corrupt"


class Catalog(BaseModel):
    variants: list[VariantOut]
    architectures: list[ArchitectureOut]
    losses: list[LossOut]
    datasets: list[DatasetOut]
    weights: list[WeightsOut]
    classifier_pretrained_weights_present: bool  # the reference classifier's (ResNet34)


class LogOut(BaseModel):
    run_id: int
    status: Status
    source: str  # saved (job.log artifact), ray (live from the cluster), none (not started)
    offset: int
    next_offset: int  # pass as ?offset= to read what comes next
    text: str
    complete: bool  # the run ended and this is its saved log: nothing more will come
