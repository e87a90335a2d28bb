"""A results table's rows: one per run, each followed by its matched codec rows and, with
``evaluation.sizes``, one row per size it was to be evaluated at."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from models.catalog import VARIANTS, Recipe, size_problem
from service.results.columns import COLUMNS, RESULT_MEASURES, run_columns
from service.results.expect import verdict
from service.results.reference import reference_cells
from service.spec import ExperimentSpec
from workers.measures import CodecRow, SizeMeasures

if TYPE_CHECKING:
    from service.persistence.tables import CodecResult, Measure, Run, SizeMeasure

CODEC_TITLES = {"jpeg": "JPEG", "webp": "WebP", "avif": "AVIF"}
# The measures a codec row has, as the model rows have them.
CODEC_MEASURES = {head: m.name for head, m in RESULT_MEASURES.items()
                  if m.name in CodecRow.model_fields}
# The measures a size row has (the float quality measures at another size).
SIZE_MEASURES = {head: m.name for head, m in RESULT_MEASURES.items()
                 if m.name in SizeMeasures.model_fields}


def eval_sizes(run: Run) -> list[int]:
    """The sizes (px) the run's spec asks it to be evaluated at besides its crop."""
    return list((run.spec or {}).get("evaluation", {}).get("sizes") or [])


def _crop(run: Run) -> int:
    return int((run.spec or {}).get("data", {}).get("crop") or 32)


def rows(pairs: Sequence[tuple[Run, Measure | None]], experiment: str = "",
         spec: ExperimentSpec | None = None,
         codecs: Sequence[tuple[Run, CodecResult]] = (),
         sizes: Sequence[tuple[Run, SizeMeasure]] | None = None) -> list[dict[str, Any]]:
    """One row per run (kind ``model``, measures of runs without any as None), each
    followed by its matched codec rows (kind ``codec``) and, given ``sizes`` (the stored
    measures at other sizes), one row per size of its ``evaluation.sizes`` (kind
    ``size``, see :func:`size_row`); with the reference's and the expectations' columns
    when ``spec`` asks for them (model rows only)."""
    by_run: dict[int, list[CodecResult]] = {}
    for run, c in codecs:
        if c.kind == "matched":
            by_run.setdefault(run.id, []).append(c)
    at_size: dict[tuple[int, int], SizeMeasure] = {
        (run.id, m.size): m for run, m in sizes or ()}
    sized = sizes is not None and any(eval_sizes(run) for run, _ in pairs)
    columns = run_columns(spec, sized)
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
        if sized:
            row["eval_size"] = _crop(run)
        out.append(row)
        for c in by_run.get(run.id, []):
            out.append({k: None for k in columns}
                       | codec_row(run, c, experiment, row["raw_bytes_per_image"]))
        if sized:
            out += [size_row(run, size, at_size.get((run.id, size)), experiment, columns)
                    for size in eval_sizes(run)]
    return out


def _recipe(run: Run) -> Recipe | None:
    try:
        return Recipe.model_validate((run.spec or {}).get("recipe"))
    except ValidationError:
        return None  # a run spec stored before recipes: its model names a preset


def size_row(run: Run, size: int, m: SizeMeasure | None, experiment: str,
             columns: Sequence[str]) -> dict[str, Any]:
    """The run evaluated at ``size`` px, as a results row (kind ``size``): its measures
    there (``eval_size_status`` measured); or, without them, ``unsupported`` with why
    (``models.catalog.size_problem``: its architecture cannot take the size), ``pending``
    (the run has not ended) or ``not measured`` (it ended without them), with the run's
    status."""
    row: dict[str, Any] = dict.fromkeys(columns)
    row.update({"run_id": run.id, "experiment": experiment, "kind": "size",
                "model": run.model, "dataset": run.dataset, "latent_dim": run.latent_dim,
                "rd_lambda": run.rd_lambda, "seed": run.seed, "lr": run.lr,
                "status": run.status.value, "eval_size": size})
    if m is not None:
        row.update({head: getattr(m, name) for head, name in SIZE_MEASURES.items()})
        row["eval_size_status"] = "measured"
        return row
    recipe = _recipe(run)
    if recipe is None and run.model in VARIANTS:
        recipe = VARIANTS[run.model].recipe
    problem = size_problem(recipe, _crop(run), size) if recipe is not None else None
    if problem is not None:
        row.update({"eval_size_status": "unsupported", "eval_size_note": problem})
    elif run.status.finished:
        row.update({"eval_size_status": "not measured",
                    "eval_size_note": f"the run {run.status.value} without measures at "
                                      f"{size} px"})
    else:
        row.update({"eval_size_status": "pending",
                    "eval_size_note": f"the run is {run.status.value}"})
    return row


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
    if r.get("kind") == "size":
        return f"{title} at {r['eval_size']} px"
    if r.get("kind") != "codec":
        return title
    codec = CODEC_TITLES.get(r["codec"], r["codec"])
    size = "n/a" if r["bytes_per_image"] is None else f"{r['bytes_per_image']:.0f} B"
    note = {"below_range": ", smallest file above target",
            "above_range": ", largest file below target"}.get(r["codec_status"] or "", "")
    return f"{codec} @ {size} ({title}'s size{note})"
