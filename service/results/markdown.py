"""The results table as Markdown: one table per dataset, laid out like the study's."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from models.catalog import DATASETS, VARIANTS
from models.study import study_original_accuracy
from service.results.cells import finite_or_token, md_text
from service.results.columns import RESULT_MEASURES
from service.results.rows import SIZE_MEASURES, row_label
from service.results.table import Table
from workers.measures import MEASURES, MeasureInfo

# The first quantised column names the quantiser's bits: "24.51 (8-bit)".
BITS_SHOWN_WITH = "q_psnr"
NOTE = ("Bytes / image: a model's entropy-coded test-set stream / images (its per-run side "
        "information apart); a codec's mean whole file, headers included. bpp = 8 · bytes "
        "/ native pixels. Quantised: decoded from that stream. Codec distortion is measured "
        "on its output served like the model's input. PSNR, split-level: 10·log10(1 / MSE) "
        "of the whole split's MSE; PSNR, per-image mean: the mean of each image's PSNR "
        "(CompressAI's convention, never below the split-level one). Per-image PSNR, MS-SSIM "
        "and the probes of the codes are columns where a row has them.\n")

SIZES_NOTE = ("At other sizes: the trained model with its input and output at that side "
              "(images served resized to it, or whole images as tiles of it); float "
              "measures, no stream; classifier accuracy only where the classifier sees "
              "what it was trained on (whole images, or the run's crop).\n")


def _num(value: float | None, digits: int = 6) -> str:
    if value is None:
        return "n/a"
    if not math.isfinite(value):
        return finite_or_token(value)  # type: ignore[no-any-return]
    return f"{value:.{digits}f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m {secs}s"


def _sig(value: float | None) -> str:
    if value is None:
        return "n/a"
    return finite_or_token(value) if not math.isfinite(value) else f"{value:.3g}"


def _writer(m: MeasureInfo) -> Callable[[Any], str]:
    """How a cell of measure ``m`` is written, by its format."""
    if m.format == "duration":
        return _duration
    if m.format == "sig":
        return _sig
    digits = m.digits
    return lambda v: _num(v, 0 if digits is None else digits)


def _pm(row: dict[str, Any], m: MeasureInfo) -> str:
    """``mean ± std`` of an aggregated row (★ when tied-best); ``n/a`` without values."""
    mean, std = row[f"{m.head}_mean"], row[f"{m.head}_std"]
    show = _writer(m)
    text = show(mean)
    if mean is not None and std is not None:
        text += f" ± {show(std)}"
    return text + (" ★" if row.get(f"{m.head}_tied_best") else "")


def _cell(row: dict[str, Any], m: MeasureInfo) -> str:
    """A per-run row's cell of measure ``m``."""
    text = _writer(m)(row[m.head])
    if m.name == BITS_SHOWN_WITH and row.get("quant_bits"):
        text += f" ({row['quant_bits']}-bit)"
    return text


def _study_cell(value: float | None, diff: float | None, digits: int) -> str:
    if value is None:
        return "n/a"
    return _num(value, digits) + (f" ({diff:+.{digits}f})" if diff is not None else "")


def shown_measures(rows: list[dict[str, Any]], aggregated: bool) -> list[MeasureInfo]:
    """The measure columns of one dataset's table, in the measures table's order: the
    study's, and each ``markdown`` measure that a row of ``rows`` has (its mean, when
    ``aggregated``)."""
    def measured(m: MeasureInfo) -> bool:
        key = f"{m.head}_mean" if aggregated else m.head
        return any(r.get(key) is not None for r in rows)

    return [m for m in MEASURES if m.study or (m.markdown and measured(m))]


def to_markdown(table: Table, title: str = "") -> str:
    """One table per dataset laid out like the study's, with the "Original images" row.

    Aggregated (``aggregate=seed``): one row per (model, latent size) with ``mean ± std``
    cells and n, ★ on each quality column's tied-best (Welch's t-test). With the study as
    reference, its values and our difference sit beside ours; with expectations, each
    row's verdict and numbers."""
    parts = [f"# {md_text(title)}\n"] if title else []
    agg = table.aggregate == "seed"
    ref = table.reference is not None
    expect = "expect" in table.columns
    if table.reference:
        parts.append(f"Reference: {md_text(table.reference)}\n")
    if expect:
        parts.append(f"Expectations: {table.expect or 'pending'}\n")
    parts += [f"Note: {md_text(note)}\n" for note in table.notes]
    lead = ["Method"]
    if agg:
        lead += ["Latent", "n"]
    elif table.sweep:
        lead += ["Latent", "Seed"]
    tail = [] if agg else ["LR", "Status"]
    if ref:
        tail += ["Study MAE (Δ)", "Study MSE (Δ)", "Study acc. (Δ)", "Reproduced"]
    if expect:
        tail += ["Expect"]
    for dataset in dict.fromkeys(r["dataset"] for r in table.rows):
        ds_rows = [r for r in table.rows if r["dataset"] == dataset
                   and r.get("kind") != "size"]
        sized = [r for r in table.rows if r["dataset"] == dataset and r.get("kind") == "size"]
        shown = shown_measures(ds_rows, agg)
        head = [*lead, *(m.title for m in shown), *tail]
        key = "original_accuracy_mean" if agg else "original_accuracy"
        original = next((r[key] for r in ds_rows if r[key] is not None), None)
        parts.append(f"## {DATASETS[dataset].title if dataset in DATASETS else dataset}\n")
        parts.append("| " + " | ".join(head) + " |")
        parts.append("|" + "---|" * len(head))
        info = DATASETS.get(dataset)
        # Raw uint8: from the dataset's one size, else the runs' measured mean (images
        # of differing sizes, evaluated whole).
        measured = next((r.get("raw_bytes_per_image") for r in ds_rows
                         if r.get("raw_bytes_per_image")), None)
        raw = info.channels * info.size ** 2 if info and info.size else measured
        raw_bpp = 8.0 * info.channels if raw and info else None
        # The original images' row: the reference classifier's accuracy on them, and
        # their raw size; the other measures are not theirs.
        originals = {"classifier_accuracy": _num(original, 4),
                     "bytes_per_image": f"{_num(raw, 0)} (raw uint8)",
                     "bpp": _num(raw_bpp, 1)}
        first = ["Original images"]
        if agg or table.sweep:
            first += ["", ""]
        first += [originals.get(m.name, "n/a") for m in shown]
        first += [] if agg else ["n/a", ""]
        if ref:
            study = study_original_accuracy(dataset)
            diff = original - study.value if study and original is not None else None
            first += ["n/a", "n/a", _study_cell(study.value if study else None, diff, 4), ""]
        if expect:
            first += [""]
        parts.append("| " + " | ".join(first) + " |")
        for r in ds_rows:
            cells = [md_text(row_label(r, latent_shown=agg or table.sweep))]
            if agg:
                cells += [str(r["latent_dim"]), str(r["runs"])]
                cells += [_pm(r, m) for m in shown]
            else:
                if table.sweep:
                    cells += [str(r["latent_dim"]), str(r["seed"])]
                lr = "n/a" if r["lr"] is None else f"{r['lr']:.3g}"
                status = r["status"] if r["kind"] == "model" else \
                    (r["codec_status"] or "").replace("_", " ")
                cells += [_cell(r, m) for m in shown]
                cells += [lr, md_text(status)]
            if ref:
                cells += [_study_cell(r["study_mae"], r["diff_mae"], 6),
                          _study_cell(r["study_mse"], r["diff_mse"], 6),
                          _study_cell(r["study_classifier_accuracy"],
                                      r["diff_classifier_accuracy"], 4),
                          r["reproduced"] or "n/a"]
            if expect:
                verdict_ = r["expect"] or ""
                if r["expect"] == "REGRESSED" and r["expect_detail"]:
                    verdict_ += f": {md_text(r['expect_detail'])}"
                cells += [verdict_]
            parts.append("| " + " | ".join(cells) + " |")
        notes = dict.fromkeys((r["model"], r["study_note"]) for r in ds_rows
                              if ref and r.get("study_note"))
        parts += [f"\nThe study's {md_text(VARIANTS[m].title if m in VARIANTS else m)}: "
                  f"{md_text(n)}." for m, n in notes]
        parts.append("")
        parts.append(NOTE)
        if sized:
            parts += _sizes_table(sized)
    return "\n".join(parts)


def _sizes_table(rows: list[dict[str, Any]]) -> list[str]:
    """The rows at ``evaluation.sizes``: each run's float measures at each size, or why
    it has none there."""
    measures = [RESULT_MEASURES[head] for head in SIZE_MEASURES]
    head = ["Method", "Size (px)", *(m.title for m in measures), "Status"]
    out = ["### At other sizes (evaluation.sizes)\n",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        status = r["eval_size_status"] or ""
        if r.get("eval_size_note"):
            status += f": {r['eval_size_note']}"
        cells = [md_text(row_label(r)), str(r["eval_size"]),
                 *(_cell(r, m) for m in measures), md_text(status)]
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    out.append(SIZES_NOTE)
    return out
