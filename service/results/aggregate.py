"""Runs aggregated over their seeds: mean, sample std and n of each measure, and the rows
Welch's t-test cannot tell from the best."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from models.study import STUDY_MEASURES
from service.client.states import Status
from service.results.columns import AGGREGATED, TIED_BEST, aggregate_columns
from service.results.expect import experiment_verdict
from service.results.reference import reference_cells
from service.spec import ExperimentSpec

ALPHA = 0.05  # Welch's t-test, two-sided


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

    for m, better in TIED_BEST.items():
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
            row.update(reference_cells(model, dataset, means, spec.tolerance))
        if spec is not None and spec.expect:
            verdicts = [r["expect"] for r in members if r.get("status") != Status.pruned.value]
            row["expect"] = experiment_verdict(verdicts, len(verdicts))
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
