"""A results table's rows: one per run, each followed by its matched codec rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from models.catalog import VARIANTS
from service.results.columns import COLUMNS, RESULT_MEASURES, run_columns
from service.results.expect import verdict
from service.results.reference import reference_cells
from service.spec import ExperimentSpec
from workers.measures import CodecRow

if TYPE_CHECKING:
    from service.persistence.tables import CodecResult, Measure, Run

CODEC_TITLES = {"jpeg": "JPEG", "webp": "WebP", "avif": "AVIF"}
# The measures a codec row has, as the model rows have them.
CODEC_MEASURES = {head: m.name for head, m in RESULT_MEASURES.items()
                  if m.name in CodecRow.model_fields}


def rows(pairs: Sequence[tuple[Run, Measure | None]], experiment: str = "",
         spec: ExperimentSpec | None = None,
         codecs: Sequence[tuple[Run, CodecResult]] = ()) -> list[dict[str, Any]]:
    """One row per run (kind ``model``, measures of runs without any as None), each
    followed by its matched codec rows (kind ``codec``); with the reference's and the
    expectations' columns when ``spec`` asks for them (model rows only)."""
    by_run: dict[int, list[CodecResult]] = {}
    for run, c in codecs:
        if c.kind == "matched":
            by_run.setdefault(run.id, []).append(c)
    columns = run_columns(spec)
    out = []
    for run, m in pairs:
        row: dict[str, Any] = dict.fromkeys(columns)
        row.update({"run_id": run.id, "experiment": experiment, "kind": "model",
                    "model": run.model, "dataset": run.dataset, "lr": run.lr,
                    "status": run.status.value, "rd_lambda": run.rd_lambda, "seed": run.seed,
                    "latent_dim": run.latent_dim})
        for head, info in RESULT_MEASURES.items():
            row[head] = getattr(m, info.name) if m is not None else None
        if spec is not None and spec.reference == "study":
            row.update(reference_cells(run.model, run.dataset, row, spec.tolerance))
        if spec is not None and spec.expect:
            measures = row if m is not None else None
            row["expect"], row["expect_detail"] = verdict(
                spec.bounds(run.model, run.dataset), measures)
        out.append(row)
        for c in by_run.get(run.id, []):
            out.append({k: None for k in columns}
                       | codec_row(run, c, experiment, row["raw_bytes_per_image"]))
    return out


def codec_row(run: Run, c: CodecResult, experiment: str, raw: int | None) -> dict[str, Any]:
    """A codec matched to ``run``'s bytes per image, as a results row."""
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row.update({"run_id": run.id, "experiment": experiment, "kind": "codec",
                "model": run.model, "codec": c.codec, "dataset": run.dataset,
                "latent_dim": run.latent_dim, "rd_lambda": run.rd_lambda,
                **{head: getattr(c, name) for head, name in CODEC_MEASURES.items()},
                "raw_bytes_per_image": raw, "codec_quality": c.quality,
                "codec_status": c.status, "status": run.status.value})
    return row


def row_label(r: dict[str, Any], latent_shown: bool = False) -> str:
    """The Method cell: the variant's title (with its latent size, unless a column shows
    it, or λ when not the variant's default), or "JPEG @ 812 B (Baseline's size)" for a
    codec row."""
    title = VARIANTS[r["model"]].title if r["model"] in VARIANTS else r["model"]
    if r.get("rd_lambda") is not None:
        title += f" λ={r['rd_lambda']:g}"
    elif not latent_shown and r.get("latent_dim") is not None and r["model"] in VARIANTS \
            and r["latent_dim"] != VARIANTS[r["model"]].latent_dim:
        title += f" ({r['latent_dim']})"
    if r.get("kind") != "codec":
        return title
    codec = CODEC_TITLES.get(r["codec"], r["codec"])
    size = "n/a" if r["bytes_per_image"] is None else f"{r['bytes_per_image']:.0f} B"
    note = {"below_range": ", smallest file above target",
            "above_range": ", largest file below target"}.get(r["codec_status"] or "", "")
    return f"{codec} @ {size} ({title}'s size{note})"
