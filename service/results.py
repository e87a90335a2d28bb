"""The study's results table, as JSON rows, CSV or Markdown.

One representation for numbers that are not finite, in every format: the strings
``NaN``, ``Infinity`` and ``-Infinity`` (a PSNR of a perfect reconstruction is Infinity).
A measure that was not taken is ``null`` in JSON, an empty cell in CSV and ``n/a`` in
Markdown — never confused with an infinite one.

User text is escaped where it lands: a CSV cell never starts a spreadsheet formula
(OWASP's CSV-injection rule: a leading ``=``, ``+``, ``-``, ``@``, tab or CR gets a ``'``
prefix), and Markdown cells and titles cannot break a table or start a line.
"""

from __future__ import annotations

import csv
import io
import json
import math
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from models.catalog import DATASETS, VARIANTS
from service.api.schemas import ResultsTable
from service.persistence.tables import CodecResult, Measure, Run

# Every row has bytes_per_image: a model row the measured stream of its test set / images
# (models.compression), a codec row (kind "codec", "JPEG @ 812 B") its mean whole-file size
# when matched to that run's bytes per image. bpp is over the native H × W; raw_bytes is the
# native uint8 image (784 B MNIST, 3,072 B CIFAR-10). q_* are measured on the images decoded
# from the stream (latent quantised to quant_bits); mae … classifier_accuracy of a model row
# are the float (unquantised) ones. nominal_compression_ratio is the old count of model-space
# values per latent value (3,072 / latent_dim): not a measured size.
COLUMNS = ("run_id", "experiment", "kind", "model", "codec", "dataset", "latent_dim",
           "rd_lambda", "mae", "mse", "psnr", "ssim", "classifier_accuracy",
           "original_accuracy", "quant_bits", "q_mse", "q_psnr", "q_ssim", "q_accuracy",
           "bytes_per_image", "bpp", "raw_bytes_per_image", "side_info_bytes", "codec_quality",
           "codec_status", "training_time_s", "search_time_s", "wall_time_s", "lr",
           "nominal_compression_ratio", "params", "status")
MEASURE_COLUMNS = ("mae", "mse", "psnr", "ssim", "classifier_accuracy", "original_accuracy",
                   "quant_bits", "q_mse", "q_psnr", "q_ssim", "q_accuracy", "bytes_per_image",
                   "bpp", "raw_bytes_per_image", "side_info_bytes", "training_time_s",
                   "search_time_s", "wall_time_s", "latent_dim", "params")
CODEC_TITLES = {"jpeg": "JPEG", "webp": "WebP", "avif": "AVIF"}


NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def finite_or_token(value: Any) -> Any:
    """``value``, or its token (``NaN``/``Infinity``/``-Infinity``) when not finite."""
    if isinstance(value, float) and not math.isfinite(value):
        return NON_FINITE[str(value)]
    return value


def rows(pairs: list[tuple[Run, Measure | None]], experiment: str = "",
         codecs: Sequence[tuple[Run, CodecResult]] = ()) -> list[dict[str, Any]]:
    """One row per run (kind ``model``, measures of runs without any as None), each
    followed by its matched codec rows (kind ``codec``)."""
    by_run: dict[int, list[CodecResult]] = {}
    for run, c in codecs:
        if c.kind == "matched":
            by_run.setdefault(run.id, []).append(c)
    out = []
    for run, m in pairs:
        row: dict[str, Any] = dict.fromkeys(COLUMNS)
        row.update({"run_id": run.id, "experiment": experiment, "kind": "model",
                    "model": run.model, "dataset": run.dataset, "lr": run.lr,
                    "status": run.status.value, "rd_lambda": run.rd_lambda})
        for key in MEASURE_COLUMNS:
            row[key] = getattr(m, key) if m is not None else None
        row["latent_dim"] = run.latent_dim
        row["nominal_compression_ratio"] = m.compression_ratio if m is not None else None
        out.append(row)
        for c in by_run.get(run.id, []):
            out.append(codec_row(run, c, experiment, row["raw_bytes_per_image"]))
    return out


def codec_row(run: Run, c: CodecResult, experiment: str, raw: int | None) -> dict[str, Any]:
    """A codec matched to ``run``'s bytes per image, as a results row."""
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row.update({"run_id": run.id, "experiment": experiment, "kind": "codec",
                "model": run.model, "codec": c.codec, "dataset": run.dataset,
                "latent_dim": run.latent_dim, "rd_lambda": run.rd_lambda, "mae": c.mae,
                "mse": c.mse, "psnr": c.psnr, "ssim": c.ssim,
                "classifier_accuracy": c.classifier_accuracy,
                "bytes_per_image": c.bytes_per_image, "bpp": c.bpp,
                "raw_bytes_per_image": raw, "codec_quality": c.quality,
                "codec_status": c.status, "status": run.status.value})
    return row


def row_label(r: dict[str, Any]) -> str:
    """The Method cell: the variant's title (with its latent size or λ when not the
    variant's default), or "JPEG @ 812 B (Baseline's size)" for a codec row."""
    title = VARIANTS[r["model"]].title if r["model"] in VARIANTS else r["model"]
    if r.get("rd_lambda") is not None:
        title += f" λ={r['rd_lambda']:g}"
    elif r.get("latent_dim") is not None and r["model"] in VARIANTS \
            and r["latent_dim"] != VARIANTS[r["model"]].latent_dim:
        title += f" ({r['latent_dim']})"
    if r.get("kind") != "codec":
        return title
    codec = CODEC_TITLES.get(r["codec"], r["codec"])
    size = "n/a" if r["bytes_per_image"] is None else f"{r['bytes_per_image']:.0f} B"
    note = {"below_range": ", smallest file above target",
            "above_range": ", largest file below target"}.get(r["codec_status"] or "", "")
    return f"{codec} @ {size} ({title}'s size{note})"


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A CSV cell: text that a spreadsheet would run as a formula gets a ``'`` prefix;
    numbers stay numbers (a negative number is not text); None is an empty cell."""
    if value is None:
        return ""
    if isinstance(value, str):
        return "'" + value if value.startswith(FORMULA_START) else value
    return finite_or_token(value)


def to_csv(table: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: csv_cell(v) for k, v in row.items()} for row in table)
    return buffer.getvalue()


def md_text(value: str) -> str:
    """Text safe in a Markdown table cell or heading: one line (control characters and
    line separators become spaces, so it cannot add a heading or a row), ``|`` and ``\\``
    escaped (it cannot add a column), HTML's ``<``, ``>`` and ``&`` as entities."""
    text = "".join(" " if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c
                   for c in value)
    text = text.replace("\\", "\\\\").replace("|", "\\|")
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").strip()


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


def to_markdown(table: list[dict[str, Any]], title: str = "") -> str:
    """One table per dataset laid out like the study's, with the "Original images" row."""
    parts = [f"# {md_text(title)}\n"] if title else []
    for dataset in dict.fromkeys(r["dataset"] for r in table):
        ds_rows = [r for r in table if r["dataset"] == dataset]
        original = next((r["original_accuracy"] for r in ds_rows
                         if r["original_accuracy"] is not None), None)
        parts.append(f"## {DATASETS[dataset].title if dataset in DATASETS else dataset}\n")
        raw = DATASETS[dataset].channels * DATASETS[dataset].size ** 2 \
            if dataset in DATASETS else None
        raw_bpp = 8.0 * raw / DATASETS[dataset].size ** 2 if raw else None
        parts.append("| Method | MAE | MSE | PSNR (dB) | SSIM | Classifier acc. "
                     "| Quantised MSE | Quantised PSNR (dB) | Quantised SSIM | Quantised acc. "
                     "| Bytes / image | bpp | Train time | LR | Status |")
        parts.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        parts.append(f"| Original images | n/a | n/a | n/a | n/a | {_num(original, 4)} "
                     f"| n/a | n/a | n/a | n/a | {_num(raw, 0)} (raw uint8) "
                     f"| {_num(raw_bpp, 1)} | n/a | n/a | |")
        for r in ds_rows:
            lr = "n/a" if r["lr"] is None else f"{r['lr']:.3g}"
            bits = f" ({r['quant_bits']}-bit)" if r.get("quant_bits") else ""
            status = r["status"] if r["kind"] == "model" else \
                (r["codec_status"] or "").replace("_", " ")
            parts.append(
                f"| {md_text(row_label(r))} | {_num(r['mae'])} | {_num(r['mse'])} "
                f"| {_num(r['psnr'], 2)} | {_num(r['ssim'], 4)} "
                f"| {_num(r['classifier_accuracy'], 4)} | {_num(r['q_mse'])}{bits} "
                f"| {_num(r['q_psnr'], 2)} | {_num(r['q_ssim'], 4)} "
                f"| {_num(r['q_accuracy'], 4)} | {_num(r['bytes_per_image'], 1)} "
                f"| {_num(r['bpp'], 3)} | {_duration(r['training_time_s'])} "
                f"| {lr} | {md_text(status)} |")
        parts.append("")
        parts.append("Bytes / image: a model's entropy-coded test-set stream / images (its "
                     "per-run side information apart); a codec's mean whole file, headers "
                     "included. bpp = 8 · bytes / native pixels. Quantised: decoded from "
                     "that stream. Codec distortion is measured on its output served like "
                     "the model's input.\n")
    return "\n".join(parts)


def to_json(table: list[dict[str, Any]], title: str = "", experiment_id: int = 0) -> str:
    safe = [{k: finite_or_token(v) for k, v in row.items()} for row in table]
    return json.dumps(ResultsTable(experiment_id=experiment_id, columns=list(COLUMNS),
                                   rows=safe).model_dump(mode="json"), allow_nan=False)


@dataclass(frozen=True)
class Format:
    """A results format: its media type and how a table becomes its text."""

    media_type: str
    render: Callable[[list[dict[str, Any]], str, int], str]


FORMATS: dict[str, Format] = {
    "json": Format("application/json", to_json),
    "csv": Format("text/csv; charset=utf-8", lambda table, title, _id: to_csv(table)),
    "markdown": Format("text/markdown; charset=utf-8",
                       lambda table, title, _id: to_markdown(table, title)),
}


RD_DEFINITIONS = {
    "bpp": "8 × bytes per image / (H × W) of the native image (784 MNIST, 1,024 CIFAR-10)",
    "bytes_per_image": "model: entropy-coded test-set stream / images (header included, "
                       "per-run side information apart); codec: mean whole file",
    "psnr": "10·log10(1/MSE) in model space (3×32×32 in [0, 1]) of the decoded images",
    "accuracy": "reference classifier's top-1 on the decoded images",
    "grouping": "model points: runs grouped by (model, dataset, latent_dim, rd_lambda), "
                "means over the group (e.g. seeds)",
}


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def rate_distortion(pairs: Sequence[tuple[Run, Measure | None]],
                    codecs: Sequence[tuple[Run, CodecResult]]) -> list[dict[str, Any]]:
    """The rate–distortion series of an experiment: per (model, dataset) one series whose
    points are its (latent_dim, rd_lambda) groups, and per (dataset, codec) one curve (the
    curve rows of the dataset's first run that has them: every run of a dataset codes the
    same test images). Runs without measured bytes are left out."""
    groups: dict[tuple[str, str], dict[tuple[int, float | None], list[Measure]]] = {}
    runs: dict[tuple[str, str, int, float | None], list[int]] = {}
    for run, m in pairs:
        if m is None or m.bytes_per_image is None or m.bpp is None:
            continue
        key = (run.latent_dim, run.rd_lambda)
        groups.setdefault((run.model, run.dataset), {}).setdefault(key, []).append(m)
        runs.setdefault((run.model, run.dataset, *key), []).append(run.id)
    series: list[dict[str, Any]] = []
    for (model, dataset), by_key in groups.items():
        points = []
        for (latent, lam), ms in by_key.items():
            points.append({
                "bpp": _mean([m.bpp for m in ms]),
                "bytes_per_image": _mean([m.bytes_per_image for m in ms]),
                "psnr": _mean([m.q_psnr for m in ms]), "ssim": _mean([m.q_ssim for m in ms]),
                "accuracy": _mean([m.q_accuracy for m in ms]), "latent_dim": latent,
                "rd_lambda": lam, "quant_bits": ms[0].quant_bits,
                "run_ids": runs[(model, dataset, latent, lam)]})
        points.sort(key=lambda p: float(p["bpp"]))  # type: ignore[arg-type]
        title = VARIANTS[model].title if model in VARIANTS else model
        series.append({"kind": "model", "name": model, "title": title, "dataset": dataset,
                       "points": points})
    curves: dict[tuple[str, str], tuple[int, list[CodecResult]]] = {}
    for run, c in codecs:
        if c.kind != "curve":
            continue
        first = curves.setdefault((run.dataset, c.codec), (run.id, []))
        if first[0] == run.id:
            first[1].append(c)
    for (dataset, codec), (_, rows_) in curves.items():
        points = [{"bpp": c.bpp, "bytes_per_image": c.bytes_per_image, "psnr": c.psnr,
                   "ssim": c.ssim, "accuracy": c.classifier_accuracy, "quality": c.quality,
                   "run_ids": []} for c in sorted(rows_, key=lambda c: c.bpp)]
        series.append({"kind": "codec", "name": codec, "title": CODEC_TITLES.get(codec, codec),
                       "dataset": dataset, "points": points})
    return series
