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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from models.catalog import DATASETS, VARIANTS
from service.api.schemas import ResultsTable
from service.persistence.tables import Measure, Run

COLUMNS = ("run_id", "experiment", "model", "dataset", "mae", "mse", "psnr", "ssim",
           "classifier_accuracy", "original_accuracy", "training_time_s", "search_time_s",
           "wall_time_s", "lr", "latent_dim", "compression_ratio", "params", "status")
MEASURE_COLUMNS = ("mae", "mse", "psnr", "ssim", "classifier_accuracy", "original_accuracy",
                   "training_time_s", "search_time_s", "wall_time_s", "latent_dim",
                   "compression_ratio", "params")


NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def finite_or_token(value: Any) -> Any:
    """``value``, or its token (``NaN``/``Infinity``/``-Infinity``) when not finite."""
    if isinstance(value, float) and not math.isfinite(value):
        return NON_FINITE[str(value)]
    return value


def rows(pairs: list[tuple[Run, Measure | None]], experiment: str = "") -> list[dict[str, Any]]:
    """One row per run, measures of runs without any as None."""
    out = []
    for run, m in pairs:
        row: dict[str, Any] = {"run_id": run.id, "experiment": experiment,
                               "model": run.model, "dataset": run.dataset,
                               "lr": run.lr, "status": run.status.value}
        for key in MEASURE_COLUMNS:
            row[key] = getattr(m, key) if m is not None else None
        out.append({k: row[k] for k in COLUMNS})
    return out


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
    escaped (it cannot add a column), the brackets of links and images, code backticks and
    ``*`` emphasis backslash-escaped so they stay text, HTML's ``<``, ``>`` and ``&`` as
    entities."""
    text = "".join(" " if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c
                   for c in value)
    text = text.replace("\\", "\\\\")
    for mark in "|[]`*":
        text = text.replace(mark, "\\" + mark)
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
        parts.append("| Method | MAE | MSE | PSNR (dB) | SSIM | Classifier acc. | Train time "
                     "| LR | Status |")
        parts.append("|---|---|---|---|---|---|---|---|---|")
        parts.append(f"| Original images | n/a | n/a | n/a | n/a | {_num(original, 4)} | n/a "
                     "| n/a | |")
        for r in ds_rows:
            method = VARIANTS[r["model"]].title if r["model"] in VARIANTS else r["model"]
            lr = "n/a" if r["lr"] is None else f"{r['lr']:.3g}"
            parts.append(
                f"| {md_text(method)} | {_num(r['mae'])} | {_num(r['mse'])} "
                f"| {_num(r['psnr'], 2)} | {_num(r['ssim'], 4)} "
                f"| {_num(r['classifier_accuracy'], 4)} | {_duration(r['training_time_s'])} "
                f"| {lr} | {md_text(r['status'])} |")
        parts.append("")
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
