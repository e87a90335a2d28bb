"""The measures contract: what a run reports, as one typed record from the trainer to the
database and the API, and the one table every list of measures derives from.

:class:`RunMeasures` *is* the table: each field is one measure, its type says whether it
is a count or a real number and whether a run may lack it, and its :class:`MeasureInfo`
says how it is shown and used (title, unit, format, which way is better, whether it is a
results column, aggregated over seeds, boundable by ``expect``, orderable in ``GET /runs``).
:data:`MEASURES` lists them in the results' order. The trainer builds a ``RunMeasures``
(``workers.pipeline.evaluate_run``) and one :class:`CodecRow` per codec measurement; the
store interface carries them (``workers.store``); the repository writes one column per
measure (``service.persistence.tables.Measure``); the API answers them
(``service.client.schemas``) and the client parses them back. A key the contract does not know
is refused (``extra="forbid"``), never dropped.

Adding a measure is: one field here, its computation, one column of ``tables.Measure`` and
one migration. The results' columns and their Markdown/CSV heads, the ``expect`` bounds,
the ``order_by`` keys, the web tables and the terminal's derive from this table, and a test
(tests/test_measures_contract.py) keeps this table, the database's columns and the
migrations equal.

Imports pydantic only: the API process, the client and the CLI import it without torch,
Ray, SQLAlchemy or FastAPI.
"""

from __future__ import annotations

import math
import types
from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict

Group = Literal["quality", "rate", "time", "model"]
Better = Literal["min", "max"]
# What a measure needs of a run's data and spec to be measured at all (``needs``): labels
# (the dataset has classes), the reference classifier (classifier.enabled), one code per
# image (images not evaluated whole, as tiles), as many test images as classes (k-means),
# images of at least MS_SSIM_MIN_SIDE px a side (MS-SSIM's 5 scales). Without one, the
# measure is null for every run, and an ``expect`` bound on it is refused
# (``service.spec.unmeasured``).
Need = Literal["labels", "classifier", "codes", "clusters", "ms_ssim_side"]
# A measure's span (``span``): the least and the most any run could report, both
# included. Errors are of clamped [0, 1] images (so an MSE is at most 1 and a PSNR at least
# 0 dB, Infinity for a perfect decode); SSIM and MS-SSIM lie in [-1, 1]; accuracies and NMI
# are shares; bytes, rates, times and counts are never negative. An ``expect`` bound no
# value in its measure's span meets is refused (``service.spec.Bound.unmeetable``).
Span = tuple[float, float]
UNIT: Span = (0.0, 1.0)
SIMILARITY: Span = (-1.0, 1.0)
NON_NEGATIVE: Span = (0.0, math.inf)


@dataclass(frozen=True)
class MeasureInfo:
    """One row of the measures table. ``name``, ``kind`` and ``nullable`` come from the
    :class:`RunMeasures` field it annotates; the rest is written there."""

    title: str  # its column head in the study's table (Markdown and web) and elsewhere
    description: str  # what it is and how it is measured (the API schema's description)
    group: Group  # quality, rate, time or model facts: where it sits among results columns
    format: str = "num4"  # how tables write it: num<digits>, int, duration or sig
    unit: str = ""  # "" for ratios and counts of nothing in particular
    label: str = ""  # its name on a run's page when the title is too terse ("" → title)
    better: Better | None = None  # which way a score improves; None for facts, rate, time
    column: str = ""  # its results column when that is not its name ("" → name)
    results: bool = False  # a column of the results table (JSON, CSV)
    study: bool = False  # a column of the study's table (Markdown and the web page)
    page: bool = False  # a column of the web page's study table only (room for more)
    markdown: bool = False  # a column of the Markdown study table where a row has it
    aggregated: bool = False  # aggregate=seed gives its mean, std and n
    tied_best: bool = False  # aggregate=seed marks the rows Welch's test ties with the best
    expectable: bool = False  # an ``expect`` bound may name it
    orderable: bool = False  # GET /runs may order by it
    needs: tuple[Need, ...] = ()  # what it needs to be measured at all (see Need)
    span: Span = NON_NEGATIVE  # the least and most it can be, both included (see Span)
    name: str = ""  # the field's name
    kind: type = float  # int (a count) or float
    nullable: bool = False  # a run may lack it (None): not measured

    @property
    def head(self) -> str:
        """Its results column (CSV head, JSON key)."""
        return self.column or self.name

    @property
    def long_title(self) -> str:
        """Its name where there is room (a run's page)."""
        return self.label or self.title

    @property
    def span_text(self) -> str:
        """Its span as the results write its ends: ``[0, 1]``, ``[0, Infinity]``."""
        return "[" + ", ".join(("-" if v < 0 else "") + "Infinity" if math.isinf(v)
                               else f"{v:g}" for v in self.span) + "]"

    @property
    def digits(self) -> int | None:
        """The decimals of a ``num<digits>`` format; None for the others."""
        return int(self.format[3:]) if self.format.startswith("num") else None


class RunMeasures(BaseModel):
    """A run's test-set measures, as the trainer reports them and the API answers them.

    Non-finite values are kept (a perfect reconstruction's PSNR is Infinity) and written
    ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` in JSON; ``null`` means not measured."""

    model_config = ConfigDict(extra="forbid", from_attributes=True,
                              ser_json_inf_nan="strings",
                              json_schema_extra=lambda schema, cls: _describe(schema))

    # --- quality: the study's measures on the test split (models.metrics) ---------------
    mae: Annotated[float, MeasureInfo(
        "MAE", "mean absolute error over every value of the test split (images × 3 × 32 × "
        "32 in model space, [0, 1]; data evaluated whole: every real value of each whole "
        "image, the tiles' padding never counted)", "quality", format="num6", better="min",
        results=True, study=True, aggregated=True, tied_best=True, expectable=True,
        orderable=True, span=UNIT)]
    mse: Annotated[float, MeasureInfo(
        "MSE", "mean squared error over every value of the test split, as mae", "quality",
        format="num6", better="min",
        results=True, study=True, aggregated=True, tied_best=True, expectable=True,
        orderable=True, span=UNIT)]
    psnr: Annotated[float, MeasureInfo(
        "PSNR, split-level (dB)", "10·log10(1 / mse) of the whole split's MSE (not a mean "
        "over images: psnr_per_image is; never above it, by Jensen's inequality); Infinity "
        "for a perfect reconstruction", "quality", format="num2", unit="dB", better="max",
        results=True, study=True, aggregated=True, tied_best=True, expectable=True,
        orderable=True)]
    ssim: Annotated[float, MeasureInfo(
        "SSIM", "mean per-image SSIM (Gaussian window 11, σ 1.5; torchmetrics)", "quality",
        better="max",
        results=True, study=True, aggregated=True, tied_best=True, expectable=True,
        orderable=True, span=SIMILARITY)]
    psnr_per_image: Annotated[float | None, MeasureInfo(
        "PSNR, per-image mean (dB)", "the mean over test images of each image's "
        "10·log10(1 / its mse), as CompressAI's eval_model takes it; never below psnr "
        "(Jensen); Infinity if any image is exact (None: runs before it)", "quality",
        format="num2", unit="dB",
        label="PSNR, per-image mean: CompressAI's convention (dB)", better="max",
        results=True, page=True, markdown=True, aggregated=True, expectable=True,
        orderable=True)] = None
    ms_ssim: Annotated[float | None, MeasureInfo(
        "MS-SSIM", "mean per-image MS-SSIM (5 scales, Gaussian window 11, σ 1.5; "
        "torchmetrics); None for images under 176 px a side, too small for 5 scales "
        "(every 32-px model-space image)", "quality", better="max",
        results=True, markdown=True, aggregated=True, expectable=True, orderable=True,
        needs=("ms_ssim_side",), span=SIMILARITY)] = None
    classifier_accuracy: Annotated[float | None, MeasureInfo(
        "Classifier acc.", "top-1 accuracy of the dataset's reference classifier on the "
        "reconstructions (None: classifier disabled)", "quality",
        label="Classifier accuracy", better="max",
        results=True, study=True, aggregated=True, tied_best=True, expectable=True,
        orderable=True,
        needs=("labels", "classifier"), span=UNIT)] = None
    original_accuracy: Annotated[float | None, MeasureInfo(
        "Original images' accuracy", "the reference classifier's top-1 accuracy on the "
        "original test images (the study's 'Original images' row)", "quality",
        results=True, aggregated=True,
        needs=("labels", "classifier"), span=UNIT)] = None
    n_images: Annotated[int, MeasureInfo(
        "Test images", "test images measured", "quality", format="int")]
    # The q_* measures are taken on the images decoded from the entropy-coded test set
    # (models.compression), through a quantiser of quant_bits bits.
    quant_bits: Annotated[int | None, MeasureInfo(
        "Quantiser bits", "bits per latent value of the quantiser behind the q_* measures "
        "(None: factorized_prior's own integer symbols)", "quality", format="int",
        results=True)] = None
    q_mae: Annotated[float | None, MeasureInfo(
        "Quantised MAE", "mae of the images decoded from the stream", "quality",
        format="num6", better="min", span=UNIT)] = None
    q_mse: Annotated[float | None, MeasureInfo(
        "Quantised MSE", "mse of the images decoded from the stream", "quality",
        format="num6", better="min",
        results=True, aggregated=True, expectable=True, orderable=True, span=UNIT)] = None
    q_psnr: Annotated[float | None, MeasureInfo(
        "Quantised PSNR, split-level (dB)", "psnr of the images decoded from the stream",
        "quality", format="num2", unit="dB", better="max",
        results=True, study=True, aggregated=True, expectable=True, orderable=True)] = None
    q_ssim: Annotated[float | None, MeasureInfo(
        "Quantised SSIM", "ssim of the images decoded from the stream", "quality",
        better="max",
        results=True, aggregated=True, expectable=True, orderable=True,
        span=SIMILARITY)] = None
    q_psnr_per_image: Annotated[float | None, MeasureInfo(
        "Quantised PSNR, per-image mean (dB)", "psnr_per_image of the images decoded from "
        "the stream", "quality", format="num2", unit="dB",
        label="Quantised PSNR, per-image mean: CompressAI's convention (dB)", better="max",
        results=True, markdown=True, aggregated=True, expectable=True,
        orderable=True)] = None
    q_ms_ssim: Annotated[float | None, MeasureInfo(
        "Quantised MS-SSIM", "ms_ssim of the images decoded from the stream", "quality",
        better="max",
        results=True, markdown=True, aggregated=True, expectable=True, orderable=True,
        needs=("ms_ssim_side",), span=SIMILARITY)] = None
    q_accuracy: Annotated[float | None, MeasureInfo(
        "Quantised acc.", "classifier_accuracy on the images decoded from the stream",
        "quality", label="Quantised classifier acc.", better="max",
        results=True, study=True, aggregated=True, expectable=True, orderable=True,
        needs=("labels", "classifier"), span=UNIT)] = None

    # --- what the code knows: probes of the test codes (models.probes) -------------------
    probe_knn_accuracy: Annotated[float | None, MeasureInfo(
        "k-NN probe acc.", "top-1 accuracy of a k-NN classifier (k = 20) fitted on the "
        "float codes of ≤ 5,000 training images, on the test images' codes (None: "
        "unlabelled data, or data evaluated whole as tiles)", "quality",
        label="k-NN probe accuracy (codes)", better="max",
        results=True, page=True, markdown=True, aggregated=True, expectable=True, orderable=True,
        needs=("labels", "codes"), span=UNIT)] = None
    probe_linear_accuracy: Annotated[float | None, MeasureInfo(
        "Linear probe acc.", "top-1 accuracy of a logistic-regression probe on "
        "standardised codes, fitted on the training codes as probe_knn_accuracy (None: "
        "unlabelled data, or data evaluated whole as tiles)", "quality",
        label="Linear probe accuracy (codes)", better="max",
        results=True, page=True, markdown=True, aggregated=True, expectable=True, orderable=True,
        needs=("labels", "codes"), span=UNIT)] = None
    cluster_nmi: Annotated[float | None, MeasureInfo(
        "Cluster NMI", "normalised mutual information of k-means clusters of the test "
        "codes (k = the classes) with the labels (None: unlabelled data, or data "
        "evaluated whole as tiles)", "quality",
        label="Cluster NMI (codes)", better="max",
        results=True, page=True, markdown=True, aggregated=True, expectable=True, orderable=True,
        needs=("labels", "codes", "clusters"), span=UNIT)] = None
    q_probe_knn_accuracy: Annotated[float | None, MeasureInfo(
        "Quantised k-NN probe", "probe_knn_accuracy of the codes the decoder gets back "
        "from the stream (rounded, or the fitted quantiser's levels)", "quality",
        label="k-NN probe accuracy (quantised codes)", better="max",
        results=True, markdown=True, aggregated=True, expectable=True, orderable=True,
        needs=("labels", "codes"), span=UNIT)] = None
    q_probe_linear_accuracy: Annotated[float | None, MeasureInfo(
        "Quantised linear probe", "probe_linear_accuracy of the codes the decoder gets "
        "back from the stream", "quality",
        label="Linear probe accuracy (quantised codes)", better="max",
        results=True, markdown=True, aggregated=True, expectable=True, orderable=True,
        needs=("labels", "codes"), span=UNIT)] = None
    q_cluster_nmi: Annotated[float | None, MeasureInfo(
        "Quantised cluster NMI", "cluster_nmi of the codes the decoder gets back from the "
        "stream", "quality", label="Cluster NMI (quantised codes)", better="max",
        results=True, markdown=True, aggregated=True, expectable=True, orderable=True,
        needs=("labels", "codes", "clusters"), span=UNIT)] = None

    # --- rate: what an image really costs (models.compression) ---------------------------
    bytes_per_image: Annotated[float | None, MeasureInfo(
        "Bytes / image", "the test set's entropy-coded stream (header included) / test "
        "images; the per-run side information apart", "rate", format="num1", unit="B",
        label="Bytes / image (measured stream)",
        results=True, study=True, aggregated=True, expectable=True, orderable=True)] = None
    bpp: Annotated[float | None, MeasureInfo(
        "bpp", "8 · bytes_per_image / native_pixels: bits per pixel of the native image",
        "rate", format="num3", unit="bit/px", label="bpp (native pixels)",
        results=True, study=True, aggregated=True, expectable=True, orderable=True)] = None
    raw_bytes_per_image: Annotated[int | None, MeasureInfo(
        "Raw uint8 bytes / image", "the native image as uint8 (784 MNIST, 3,072 CIFAR-10; "
        "the mean over the test images when their sizes differ)",
        "rate", format="int", unit="B",
        results=True)] = None
    side_info_bytes: Annotated[int | None, MeasureInfo(
        "Side information (bytes, per run)", "per run, not per image: the quantiser (2 "
        "float32) and per-dimension entropy-model tables (2 float32 each)", "rate",
        format="int", unit="B",
        results=True)] = None
    stream_bytes: Annotated[int | None, MeasureInfo(
        "Test-set stream (bytes)", "the entropy-coded test set's length (the "
        "latents-test.bin artifact)", "rate", format="int", unit="B")] = None
    native_pixels: Annotated[int | None, MeasureInfo(
        "Native pixels / image", "H × W of the dataset's native image, the pixels bpp is "
        "counted over (784 MNIST, 1,024 CIFAR-10; data evaluated whole: each image's real "
        "H × W, their mean when sizes differ, bpp then 8 · stream bytes / Σ H·W)", "rate",
        format="int", unit="px")] = None

    # --- time --------------------------------------------------------------------------
    training_time_s: Annotated[float, MeasureInfo(
        "Train time", "every epoch of the final model", "time", format="duration",
        unit="s",
        results=True, study=True, aggregated=True, expectable=True, orderable=True)]
    search_time_s: Annotated[float | None, MeasureInfo(
        "LR search", "the learning-rate search alone", "time", format="duration", unit="s",
        label="LR search time",
        results=True, page=True, aggregated=True, expectable=True, orderable=True)] = None
    wall_time_s: Annotated[float | None, MeasureInfo(
        "Wall time", "the whole run, preflight to evaluated", "time", format="duration",
        unit="s",
        results=True, page=True, aggregated=True, expectable=True, orderable=True)] = None

    # --- the model ---------------------------------------------------------------------
    compression_ratio: Annotated[float, MeasureInfo(
        "Nominal ratio", "nominal, not measured: model-space values (3 × 32 × 32) per "
        "latent value", "model", format="num3",
        label="Nominal ratio (values; not measured)", column="nominal_compression_ratio",
        results=True, orderable=True)]
    params: Annotated[int, MeasureInfo(
        "Parameters", "the model's parameters", "model", format="int",
        results=True, aggregated=True, expectable=True, orderable=True)]
    latent_dim: Annotated[int, MeasureInfo(
        "Latent size", "the trained model's latent size (values per image)", "model",
        format="int")]
    compression_ratio_bytes: Annotated[float, MeasureInfo(
        "Nominal ratio (float32 bytes; not measured)", "nominal, not measured: model-space "
        "values per float32 byte of the latent", "model", format="num3")]
    rd_lambda: Annotated[float | None, MeasureInfo(
        "λ", "the λ of factorized_prior's rate + λ·255²·MSE loss the model was trained "
        "with (None for the other variants)", "model", format="sig",
        label="Rate–distortion λ")] = None


class CodecRow(BaseModel):
    """A standard codec on a run's test images (``models.compression.codec_rows``):
    matched to the run's bytes per image (``kind`` matched, with its ``status``) or at one
    quality of a curve (``kind`` curve). Sizes are whole files; distortion in model space,
    measured as the model's (mse … classifier_accuracy mean what :class:`RunMeasures`'s
    do)."""

    model_config = ConfigDict(extra="forbid", from_attributes=True,
                              ser_json_inf_nan="strings")

    codec: str  # jpeg, webp, avif
    kind: Literal["matched", "curve"]
    status: str | None  # matched, below_range, above_range (kind matched)
    quality: float | None  # the codec's quality (mean over images when matched)
    target_bytes: float | None  # the run's bytes per image it was matched to
    min_bytes_per_image: float | None  # the smallest and largest mean file it could reach
    max_bytes_per_image: float | None
    bytes_per_image: float
    bpp: float
    mse: float
    mae: float
    psnr: float
    ssim: float
    classifier_accuracy: float | None
    n_images: int
    psnr_per_image: float | None = None  # None: measured before it was
    ms_ssim: float | None = None  # None: images under 176 px a side, or measured before it


class SizeMeasures(BaseModel):
    """A run's trained model evaluated at another input side (``evaluation.sizes``,
    ``models.metrics.evaluate_sizes``): the float measures of :class:`RunMeasures` (mse …
    ms_ssim mean what theirs do) with the model's input and output at ``size`` px. Images
    served resized to the size (data not evaluated whole), or every whole image as tiles
    of it. ``classifier_accuracy`` only where the reference classifier sees what it was
    trained on (whole images, or the run's crop); None otherwise."""

    model_config = ConfigDict(extra="forbid", from_attributes=True,
                              ser_json_inf_nan="strings")

    size: int  # the model's input and output side, px
    mse: float
    mae: float
    psnr: float
    ssim: float
    n_images: int
    classifier_accuracy: float | None = None
    psnr_per_image: float | None = None
    ms_ssim: float | None = None  # None: images under 176 px a side


def _info(name: str, annotation: Any, metadata: list[Any]) -> MeasureInfo:
    infos = [m for m in metadata if isinstance(m, MeasureInfo)]
    if len(infos) != 1:
        raise TypeError(f"RunMeasures.{name} needs exactly one MeasureInfo")
    args = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) \
        else (annotation,)
    kinds = [a for a in args if a is not type(None)]
    if len(kinds) != 1 or kinds[0] not in (int, float):
        raise TypeError(f"RunMeasures.{name} must be an int or a float (or None)")
    return replace(infos[0], name=name, kind=kinds[0], nullable=type(None) in args)


# The measures table, in the results' order.
MEASURES: tuple[MeasureInfo, ...] = tuple(
    _info(name, field.annotation, field.metadata)
    for name, field in RunMeasures.model_fields.items())
BY_NAME: dict[str, MeasureInfo] = {m.name: m for m in MEASURES}
# Measures an ``expect`` bound may name, in the table's order.
EXPECTABLE: tuple[str, ...] = tuple(m.name for m in MEASURES if m.expectable)
# One line per run (the terminal's results table, the web's comparison of runs), in the
# study's order (MSE first): (measure, its terminal head, kept on a narrow terminal).
SUMMARY: tuple[tuple[str, str, bool], ...] = (
    ("mse", "MSE", True), ("mae", "MAE", False), ("psnr", "PSNR dB\n(split)", True),
    ("ssim", "SSIM", False), ("classifier_accuracy", "clf acc", True),
    ("training_time_s", "train time", False))


def _describe(schema: dict[str, Any]) -> None:
    """Each measure's description (and unit) in the JSON schema (the API's OpenAPI)."""
    for name, prop in schema.get("properties", {}).items():
        m = BY_NAME[name]
        prop["title"] = m.long_title
        prop["description"] = m.description + (f" [{m.unit}]" if m.unit else "")


class ResultsTable(BaseModel):
    """``GET /experiments/{id}/results?format=json``: the study's table, one row per run
    (``columns`` in order; a run without measures has them as null), or with
    ``aggregate=seed`` one per (model, dataset, latent size): ``{m}_mean``, ``{m}_std``
    (ddof = 1, null for n < 2) and ``{m}_n`` of each measure, ``{m}_tied_best``."""

    experiment_id: int
    columns: list[str]
    rows: list[dict[str, Any]]
    aggregate: str | None = None  # "seed": one row per (model, dataset, latent size)
    reference: str | None = None  # the study's source, with reference: "study"
    expect: str | None = None  # PASSED, REGRESSED, or None (no bounds, or runs pending)
    notes: list[str] = []  # what the table lacks and why (e.g. no labels: no accuracy)
