"""The study's results table, as JSON rows, CSV or Markdown."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from models.catalog import DATASETS, VARIANTS
from service.api.schemas import ResultsTable
from service.persistence.tables import Measure, Run

COLUMNS = ("run_id", "model", "dataset", "mae", "mse", "psnr", "ssim", "classifier_accuracy",
           "original_accuracy", "training_time_s", "search_time_s", "wall_time_s", "lr",
           "latent_dim", "compression_ratio", "params", "status")
MEASURE_COLUMNS = ("mae", "mse", "psnr", "ssim", "classifier_accuracy", "original_accuracy",
                   "training_time_s", "search_time_s", "wall_time_s", "latent_dim",
                   "compression_ratio", "params")


def rows(pairs: list[tuple[Run, Measure | None]]) -> list[dict[str, Any]]:
    out = []
    for run, m in pairs:
        row: dict[str, Any] = {"run_id": run.id, "model": run.model, "dataset": run.dataset,
                               "lr": run.lr, "status": run.status.value}
        for key in MEASURE_COLUMNS:
            row[key] = getattr(m, key) if m is not None else None
        out.append({k: row[k] for k in COLUMNS})
    return out


def to_csv(table: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    return buffer.getvalue()


def _num(value: float | None, digits: int = 6) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m {secs}s"


def to_markdown(table: list[dict[str, Any]], title: str = "") -> str:
    """One table per dataset laid out like the study's, with the "Original images" row."""
    parts = [f"# {title}\n"] if title else []
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
                f"| {method} | {_num(r['mae'])} | {_num(r['mse'])} | {_num(r['psnr'], 2)} "
                f"| {_num(r['ssim'], 4)} | {_num(r['classifier_accuracy'], 4)} "
                f"| {_duration(r['training_time_s'])} | {lr} | {r['status']} |")
        parts.append("")
    return "\n".join(parts)


def to_json(table: list[dict[str, Any]], title: str = "", experiment_id: int = 0) -> str:
    return json.dumps(ResultsTable(experiment_id=experiment_id, columns=list(COLUMNS),
                                   rows=table).model_dump(mode="json"))


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
