"""The results' columns, derived from the measures table (``workers.measures``).

A per-run row is the run's identity, its measures (quality, then rate), the codec facts of
a codec row, its times, the chosen LR, the model's facts and the status; with
``reference: "study"`` the study's values beside ours, with ``expect`` the verdicts.

Every row has bytes_per_image: a model row the measured stream of its test set / images
(models.compression), a codec row (kind "codec", "JPEG @ 812 B") its mean whole-file size
when matched to that run's bytes per image. bpp is over the native H × W; raw_bytes is the
native uint8 image (784 B MNIST, 3,072 B CIFAR-10). q_* are measured on the images decoded
from the stream (latent quantised to quant_bits); mae … classifier_accuracy of a model row
are the float (unquantised) ones. nominal_compression_ratio is the old count of model-space
values per latent value (3,072 / latent_dim): not a measured size.
"""

from __future__ import annotations

from models.study import STUDY_MEASURES
from service.spec import ExperimentSpec
from workers.measures import MEASURES, Group, MeasureInfo

IDENTITY = ("run_id", "experiment", "kind", "model", "codec", "dataset", "latent_dim",
            "rd_lambda", "seed")
CODEC_FACTS = ("codec_quality", "codec_status")  # a codec row's quality and match status
# The measures that are results columns, by results column.
RESULT_MEASURES: dict[str, MeasureInfo] = {m.head: m for m in MEASURES if m.results}


def _measures(*groups: Group) -> tuple[str, ...]:
    return tuple(head for head, m in RESULT_MEASURES.items() if m.group in groups)


COLUMNS = (*IDENTITY, *_measures("quality", "rate"), *CODEC_FACTS, *_measures("time"), "lr",
           *_measures("model"), "status")
# ``aggregate=seed``: mean, sample std (ddof=1) and n of each of these per group; the
# chosen LR is a run's fact, aggregated as a measure is.
AGGREGATED = tuple(c for c in COLUMNS
                   if c == "lr" or (c in RESULT_MEASURES and RESULT_MEASURES[c].aggregated))
# Quality measures and which way is better: Welch's test marks the tied-best per group.
TIED_BEST = {head: m.better for head, m in RESULT_MEASURES.items()
             if m.tied_best and m.better is not None}
# With ``reference: "study"``: the study's value of each measure it reported, ours minus
# it, whether every one is reproduced within the spec's tolerance, and which were corrected.
REFERENCE_COLUMNS = (*(f"study_{m}" for m in STUDY_MEASURES),
                     *(f"diff_{m}" for m in STUDY_MEASURES), "reproduced", "study_note")
EXPECT_COLUMNS = ("expect", "expect_detail")  # PASSED/REGRESSED and the numbers behind it
# With ``evaluation.sizes``: the side in px a row was measured at (a model row: its run's
# crop; a size row, kind "size": one of the sizes), and for a size row whether it was
# measured (measured, unsupported, pending, not measured) and why not.
SIZE_COLUMNS = ("eval_size", "eval_size_status", "eval_size_note")


def _extra(spec: ExperimentSpec | None) -> list[str]:
    columns: list[str] = []
    if spec is not None and spec.reference == "study":
        columns += REFERENCE_COLUMNS
    if spec is not None and spec.expect:
        columns += EXPECT_COLUMNS
    return columns


def run_columns(spec: ExperimentSpec | None, sizes: bool = False) -> list[str]:
    """The per-run table's columns for ``spec`` (``sizes``: with :data:`SIZE_COLUMNS`)."""
    return [*COLUMNS, *(SIZE_COLUMNS if sizes else ()), *_extra(spec)]


def aggregate_columns(spec: ExperimentSpec | None) -> list[str]:
    """The ``aggregate=seed`` table's columns for ``spec``."""
    columns = ["experiment", "model", "dataset", "latent_dim", "rd_lambda", "runs", "seeds"]
    for m in AGGREGATED:
        columns += [f"{m}_mean", f"{m}_std", f"{m}_n"]
    columns += [f"{m}_tied_best" for m in TIED_BEST]
    return columns + _extra(spec)
