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

import numpy as np
from pydantic import ValidationError

from models.catalog import DATASETS, VARIANTS
from models.study import STUDY_MEASURES, source, study_original_accuracy, study_values
from service.client.schemas import ResultsTable
from service.persistence.tables import CodecResult, Measure, Run
from service.spec import Bound, ExperimentSpec, Tolerance

# Every row has bytes_per_image: a model row the measured stream of its test set / images
# (models.compression), a codec row (kind "codec", "JPEG @ 812 B") its mean whole-file size
# when matched to that run's bytes per image. bpp is over the native H × W; raw_bytes is the
# native uint8 image (784 B MNIST, 3,072 B CIFAR-10). q_* are measured on the images decoded
# from the stream (latent quantised to quant_bits); mae … classifier_accuracy of a model row
# are the float (unquantised) ones. nominal_compression_ratio is the old count of model-space
# values per latent value (3,072 / latent_dim): not a measured size.
COLUMNS = ("run_id", "experiment", "kind", "model", "codec", "dataset", "latent_dim",
           "rd_lambda", "seed", "mae", "mse", "psnr", "ssim", "classifier_accuracy",
           "original_accuracy", "quant_bits", "q_mse", "q_psnr", "q_ssim", "q_accuracy",
           "bytes_per_image", "bpp", "raw_bytes_per_image", "side_info_bytes", "codec_quality",
           "codec_status", "training_time_s", "search_time_s", "wall_time_s", "lr",
           "nominal_compression_ratio", "params", "status")
MEASURE_COLUMNS = ("mae", "mse", "psnr", "ssim", "classifier_accuracy", "original_accuracy",
                   "quant_bits", "q_mse", "q_psnr", "q_ssim", "q_accuracy", "bytes_per_image",
                   "bpp", "raw_bytes_per_image", "side_info_bytes", "training_time_s",
                   "search_time_s", "wall_time_s", "latent_dim", "params")
CODEC_TITLES = {"jpeg": "JPEG", "webp": "WebP", "avif": "AVIF"}
# With ``reference: "study"``: the study's value of each measure it reported, ours minus
# it, whether every one is reproduced within the spec's tolerance, and which were corrected.
REFERENCE_COLUMNS = (*(f"study_{m}" for m in STUDY_MEASURES),
                     *(f"diff_{m}" for m in STUDY_MEASURES), "reproduced", "study_note")
EXPECT_COLUMNS = ("expect", "expect_detail")  # PASSED/REGRESSED and the numbers behind it
# ``aggregate=seed``: mean, sample std (ddof=1) and n of each of these per group.
AGGREGATED = ("mae", "mse", "psnr", "ssim", "classifier_accuracy", "original_accuracy",
              "q_mse", "q_psnr", "q_ssim", "q_accuracy", "bytes_per_image", "bpp",
              "training_time_s", "search_time_s", "wall_time_s", "lr", "params")
# Quality measures and which way is better: Welch's test marks the tied-best per group.
BETTER = {"mae": "min", "mse": "min", "psnr": "max", "ssim": "max",
          "classifier_accuracy": "max"}
ALPHA = 0.05  # Welch's t-test, two-sided


NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def finite_or_token(value: Any) -> Any:
    """``value``, or its token (``NaN``/``Infinity``/``-Infinity``) when not finite."""
    if isinstance(value, float) and not math.isfinite(value):
        return NON_FINITE[str(value)]
    return value


@dataclass
class Table:
    """A results table and what its Markdown shows beyond the study's columns."""

    columns: list[str]
    rows: list[dict[str, Any]]
    aggregate: str | None = None  # "seed": one row per (model, dataset, latent size)
    reference: str | None = None  # the study's source, when the spec names it
    expect: str | None = None  # the experiment's verdict: PASSED, REGRESSED or None
    sweep: bool = False  # latent sizes or seeds vary: per-run rows say which


def _reference_cells(model: str, dataset: str, ours: dict[str, float | None],
                     tolerance: Tolerance) -> dict[str, Any]:
    """The study's values beside ``ours`` (a run's measures, or a group's means).

    ``reproduced`` is ``yes`` when every measure the study reported is within tolerance:
    MSE and MAE when |ours − study| ≤ tolerance × study; classifier accuracy when it is at
    most ``accuracy_points`` percentage points below the study's. ``None`` when nothing
    can be compared (the study did not run it, or the run has no measures yet)."""
    study = study_values(model, dataset)
    cells: dict[str, Any] = {c: None for c in REFERENCE_COLUMNS}
    verdicts = []
    notes = []
    for m, ref in study.items():
        cells[f"study_{m}"] = ref.value
        if ref.mark == "corrected":
            printed = "blank" if ref.published is None else f"{ref.published:g}"
            notes.append(f"{m} corrected from the notebooks (report: {printed})")
        value = ours.get(m)
        if value is None or not math.isfinite(value):
            continue
        cells[f"diff_{m}"] = value - ref.value
        if m == "classifier_accuracy":
            verdicts.append((ref.value - value) * 100 <= tolerance.accuracy_points + 1e-9)
        else:
            verdicts.append(abs(value - ref.value) <= getattr(tolerance, m) * ref.value)
    cells["reproduced"] = None if not verdicts else ("yes" if all(verdicts) else "no")
    cells["study_note"] = "; ".join(notes) or None
    return cells


def verdict(bounds: list[Bound], measures: dict[str, Any] | None
            ) -> tuple[str | None, str | None]:
    """(``PASSED``/``REGRESSED``, the numbers) of a run's measures against its bounds;
    (None, None) without bounds or before the run is evaluated."""
    if not bounds or measures is None:
        return None, None
    checks, ok = [], True
    for b in bounds:
        value = measures.get(b.measure)
        holds = value is not None and b.holds(float(value))
        ok = ok and holds
        shown = "n/a" if value is None else f"{value:.6g}"
        checks.append(f"{b.measure} {shown} {'meets' if holds else 'breaks'} "
                      f"{b.op} {b.value:g}")
    return ("PASSED" if ok else "REGRESSED"), "; ".join(checks)


def experiment_verdict(verdicts: list[str | None], expected: int) -> str | None:
    """REGRESSED once any run regressed; PASSED when all ``expected`` runs with bounds
    passed; None while some are pending (or none has bounds)."""
    if "REGRESSED" in verdicts:
        return "REGRESSED"
    if expected and verdicts.count("PASSED") == expected:
        return "PASSED"
    return None


def parse_spec(raw: dict[str, Any] | None) -> ExperimentSpec | None:
    """The stored experiment spec, or None where an old one no longer validates."""
    try:
        return ExperimentSpec.model_validate(raw or {})
    except ValidationError:
        return None


def rows(pairs: list[tuple[Run, Measure | None]], experiment: str = "",
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
                    "status": run.status.value, "rd_lambda": run.rd_lambda, "seed": run.seed})
        for key in MEASURE_COLUMNS:
            row[key] = getattr(m, key) if m is not None else None
        row["latent_dim"] = run.latent_dim
        row["nominal_compression_ratio"] = m.compression_ratio if m is not None else None
        if spec is not None and spec.reference == "study":
            row.update(_reference_cells(run.model, run.dataset, row, spec.tolerance))
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
                "latent_dim": run.latent_dim, "rd_lambda": run.rd_lambda, "mae": c.mae,
                "mse": c.mse, "psnr": c.psnr, "ssim": c.ssim,
                "classifier_accuracy": c.classifier_accuracy,
                "bytes_per_image": c.bytes_per_image, "bpp": c.bpp,
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


def _stats(values: list[float]) -> tuple[float | None, float | None, int]:
    """(mean, sample std with ddof=1, n) as numpy computes them; std needs n ≥ 2."""
    if not values:
        return None, None, 0
    array = np.asarray(values, dtype=np.float64)
    mean = float(np.mean(array))
    std = float(np.std(array, ddof=1)) if len(array) > 1 else None
    return mean, std, len(array)


def _tied_best(groups: list[dict[str, Any]], samples: list[dict[str, list[float]]]) -> None:
    """Mark ``{m}_tied_best`` on the rows of one (dataset, latent size) group: the best
    mean, and every row whose samples Welch's t-test (two-sided, scipy's ``ttest_ind``
    with ``equal_var=False``) cannot tell from the best's at α = 0.05. Where the test has
    no answer (n < 2 on either side, zero variance on both, non-finite values) only an
    equal mean ties."""
    from scipy.stats import ttest_ind

    for m, better in BETTER.items():
        means = [(r[f"{m}_mean"], i) for i, r in enumerate(groups)
                 if r[f"{m}_mean"] is not None and math.isfinite(r[f"{m}_mean"])]
        if not means:
            for r in groups:
                r[f"{m}_tied_best"] = None
            continue
        best_mean, best = (min if better == "min" else max)(means)
        for i, r in enumerate(groups):
            mean = r[f"{m}_mean"]
            if mean is None:
                r[f"{m}_tied_best"] = None
                continue
            tied = mean == best_mean
            a, b = samples[i][m], samples[best][m]
            if not tied and len(a) > 1 and len(b) > 1 and \
                    all(math.isfinite(v) for v in (*a, *b)):
                p = float(ttest_ind(a, b, equal_var=False).pvalue)
                tied = math.isfinite(p) and p >= ALPHA
            r[f"{m}_tied_best"] = tied


def aggregate_columns(spec: ExperimentSpec | None) -> list[str]:
    columns = ["experiment", "model", "dataset", "latent_dim", "rd_lambda", "runs", "seeds"]
    for m in AGGREGATED:
        columns += [f"{m}_mean", f"{m}_std", f"{m}_n"]
    columns += [f"{m}_tied_best" for m in BETTER]
    if spec is not None and spec.reference == "study":
        columns += REFERENCE_COLUMNS
    if spec is not None and spec.expect:
        columns += EXPECT_COLUMNS
    return columns


def aggregate(run_rows: list[dict[str, Any]], spec: ExperimentSpec | None = None
              ) -> list[dict[str, Any]]:
    """One row per (model, dataset, latent size) over its seeds, in the runs' order:
    mean, sample std (ddof = 1) and n of each measure over the runs that have it, the
    tied-best marks of each (dataset, latent size) group, the study's values beside the
    means, and REGRESSED when any of the group's runs regressed."""
    groups: dict[tuple[str, str, int, float | None], list[dict[str, Any]]] = {}
    for r in run_rows:
        if r.get("kind", "model") == "model":  # codec rows are not runs of a model
            groups.setdefault((r["model"], r["dataset"], r["latent_dim"], r["rd_lambda"]),
                              []).append(r)
    out: list[dict[str, Any]] = []
    samples: list[dict[str, list[float]]] = []
    for (model, dataset, latent, lam), members in groups.items():
        row: dict[str, Any] = {"experiment": members[0]["experiment"], "model": model,
                               "dataset": dataset, "latent_dim": latent, "rd_lambda": lam,
                               "runs": len(members),
                               "seeds": " ".join(str(r["seed"]) for r in members)}
        values: dict[str, list[float]] = {}
        for m in AGGREGATED:
            values[m] = [float(r[m]) for r in members if r[m] is not None]
            row[f"{m}_mean"], row[f"{m}_std"], row[f"{m}_n"] = _stats(values[m])
        if spec is not None and spec.reference == "study":
            means = {m: row[f"{m}_mean"] for m in STUDY_MEASURES}
            row.update(_reference_cells(model, dataset, means, spec.tolerance))
        if spec is not None and spec.expect:
            verdicts = [r["expect"] for r in members]
            row["expect"] = experiment_verdict(verdicts, len(members))
            row["expect_detail"] = "; ".join(
                f"seed {r['seed']}: {r['expect_detail']}" for r in members
                if r["expect"] == "REGRESSED") or None
        out.append(row)
        samples.append(values)
    for dataset, latent in dict.fromkeys((r["dataset"], r["latent_dim"]) for r in out):
        idx = [i for i, r in enumerate(out) if (r["dataset"], r["latent_dim"]) == (dataset,
                                                                                    latent)]
        _tied_best([out[i] for i in idx], [samples[i] for i in idx])
    columns = aggregate_columns(spec)
    return [{c: r.get(c) for c in columns} for r in out]


def run_columns(spec: ExperimentSpec | None) -> list[str]:
    columns = list(COLUMNS)
    if spec is not None and spec.reference == "study":
        columns += REFERENCE_COLUMNS
    if spec is not None and spec.expect:
        columns += EXPECT_COLUMNS
    return columns


def build(pairs: list[tuple[Run, Measure | None]], experiment: str = "",
          spec: ExperimentSpec | None = None, aggregate_by: str | None = None,
          codecs: Sequence[tuple[Run, CodecResult]] = ()) -> Table:
    """The results table of an experiment's runs: per run (each followed by its matched
    codec rows), or per group of seeds (model rows only)."""
    per_run = rows(pairs, experiment, spec, codecs)
    bounded = [r.get("expect") for r in per_run if r["kind"] == "model"
               and spec is not None and spec.bounds(r["model"], r["dataset"])]
    expect = experiment_verdict(bounded, len(bounded)) if spec and spec.expect else None
    reference = source() if spec is not None and spec.reference == "study" else None
    sweep = spec is not None and (len(spec.latent_sizes) > 1 or len(spec.seed_values) > 1)
    if aggregate_by == "seed":
        return Table(aggregate_columns(spec), aggregate(per_run, spec), "seed", reference,
                     expect, sweep)
    return Table(run_columns(spec), per_run, None, reference, expect, sweep)


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A CSV cell: text that a spreadsheet would run as a formula gets a ``'`` prefix;
    numbers stay numbers (a negative number is not text); None is an empty cell."""
    if value is None:
        return ""
    if isinstance(value, str):
        return "'" + value if value.startswith(FORMULA_START) else value
    return finite_or_token(value)


def to_csv(table: Table) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=table.columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: csv_cell(v) for k, v in row.items()} for row in table.rows)
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


def _pm(row: dict[str, Any], m: str, digits: int, duration: bool = False) -> str:
    """``mean ± std`` of an aggregated row (★ when tied-best); ``n/a`` without values."""
    mean, std = row[f"{m}_mean"], row[f"{m}_std"]
    show = _duration if duration else (lambda v: _num(v, digits))
    text = show(mean)
    if mean is not None and std is not None:
        text += f" ± {show(std)}"
    return text + (" ★" if row.get(f"{m}_tied_best") else "")


def _study_cell(value: float | None, diff: float | None, digits: int) -> str:
    if value is None:
        return "n/a"
    return _num(value, digits) + (f" ({diff:+.{digits}f})" if diff is not None else "")


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
    head = ["Method"]
    if agg:
        head += ["Latent", "n"]
    elif table.sweep:
        head += ["Latent", "Seed"]
    head += ["MAE", "MSE", "PSNR (dB)", "SSIM", "Classifier acc.", "Quantised PSNR (dB)",
             "Quantised acc.", "Bytes / image", "bpp", "Train time"]
    head += [] if agg else ["LR", "Status"]
    if ref:
        head += ["Study MAE (Δ)", "Study MSE (Δ)", "Study acc. (Δ)", "Reproduced"]
    if expect:
        head += ["Expect"]
    for dataset in dict.fromkeys(r["dataset"] for r in table.rows):
        ds_rows = [r for r in table.rows if r["dataset"] == dataset]
        key = "original_accuracy_mean" if agg else "original_accuracy"
        original = next((r[key] for r in ds_rows if r[key] is not None), None)
        parts.append(f"## {DATASETS[dataset].title if dataset in DATASETS else dataset}\n")
        parts.append("| " + " | ".join(head) + " |")
        parts.append("|" + "---|" * len(head))
        raw = DATASETS[dataset].channels * DATASETS[dataset].size ** 2 \
            if dataset in DATASETS else None
        raw_bpp = 8.0 * raw / DATASETS[dataset].size ** 2 if raw else None
        first = ["Original images"]
        if agg or table.sweep:
            first += ["", ""]
        first += ["n/a"] * 4 + [_num(original, 4)] + ["n/a"] * 2
        first += [f"{_num(raw, 0)} (raw uint8)", _num(raw_bpp, 1), "n/a"]
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
                cells += [_pm(r, "mae", 6), _pm(r, "mse", 6), _pm(r, "psnr", 2),
                          _pm(r, "ssim", 4), _pm(r, "classifier_accuracy", 4),
                          _pm(r, "q_psnr", 2), _pm(r, "q_accuracy", 4),
                          _pm(r, "bytes_per_image", 1), _pm(r, "bpp", 3),
                          _pm(r, "training_time_s", 0, duration=True)]
            else:
                if table.sweep:
                    cells += [str(r["latent_dim"]), str(r["seed"])]
                lr = "n/a" if r["lr"] is None else f"{r['lr']:.3g}"
                bits = f" ({r['quant_bits']}-bit)" if r.get("quant_bits") else ""
                status = r["status"] if r["kind"] == "model" else \
                    (r["codec_status"] or "").replace("_", " ")
                cells += [_num(r["mae"]), _num(r["mse"]), _num(r["psnr"], 2),
                          _num(r["ssim"], 4), _num(r["classifier_accuracy"], 4),
                          _num(r["q_psnr"], 2) + bits, _num(r["q_accuracy"], 4),
                          _num(r["bytes_per_image"], 1), _num(r["bpp"], 3),
                          _duration(r["training_time_s"]), lr, md_text(status)]
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
        parts.append("Bytes / image: a model's entropy-coded test-set stream / images (its "
                     "per-run side information apart); a codec's mean whole file, headers "
                     "included. bpp = 8 · bytes / native pixels. Quantised: decoded from "
                     "that stream. Codec distortion is measured on its output served like "
                     "the model's input.\n")
    return "\n".join(parts)


def to_json(table: Table, title: str = "", experiment_id: int = 0) -> str:
    safe = [{k: finite_or_token(v) for k, v in row.items()} for row in table.rows]
    return json.dumps(ResultsTable(
        experiment_id=experiment_id, columns=list(table.columns), rows=safe,
        aggregate=table.aggregate, reference=table.reference, expect=table.expect,
    ).model_dump(mode="json"), allow_nan=False)


@dataclass(frozen=True)
class Format:
    """A results format: its media type and how a table becomes its text."""

    media_type: str
    render: Callable[[Table, str, int], str]


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
