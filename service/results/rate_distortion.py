"""An experiment's rate–distortion series: each model's measured points and each codec's
curve (``GET /experiments/{id}/rate_distortion``)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from models.catalog import VARIANTS
from service.results.rows import CODEC_TITLES

if TYPE_CHECKING:
    from service.persistence.tables import CodecResult, Measure, Run

RD_DEFINITIONS = {
    "bpp": "8 × bytes per image / (H × W) of the native image (784 MNIST, 1,024 CIFAR-10)",
    "bytes_per_image": "model: entropy-coded test-set stream / images (header included, "
                       "per-run side information apart); codec: mean whole file",
    "psnr": "split-level: 10·log10(1/MSE) of the MSE over all the decoded test images, in "
            "model space (3×32×32 in [0, 1]); the BD deltas are taken on it",
    "accuracy": "reference classifier's top-1 on the decoded images",
    "psnr_per_image": "per-image mean: the mean over test images of each decoded image's "
                      "PSNR (CompressAI's convention, the export's psnr; null for runs "
                      "measured before it)",
    "ms_ssim": "mean per-image MS-SSIM of the decoded images; null under 176 px a side",
    "grouping": "model points: runs grouped by (model, dataset, latent_dim, rd_lambda), "
                "means over the group (e.g. seeds)",
    "bd": "Bjøntegaard deltas of a model's curve against the anchor codec's (?anchor=), "
          "with the bjontegaard package (PCHIP interpolation of each curve's upper "
          "envelope: points sorted by bpp, each kept only if its PSNR beats every cheaper "
          "one), integrated over the overlapping range only. bd_rate_pct: mean rate "
          "difference in % at equal PSNR (negative: the model needs fewer bits), over "
          "psnr_range_db; bd_psnr_db: mean PSNR difference at equal log-rate, over "
          "bpp_range. null with a reason when a curve has fewer than 2 points or the "
          "ranges do not overlap; dropped: the points each curve lost before the fit (a "
          "tied rate, below a cheaper point's PSNR, no finite numbers), which every reason "
          "repeats",
}
BD_METHOD = "pchip"  # the bjontegaard package's interpolation (akima, pchip, cubic)


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
                "psnr_per_image": _mean([m.q_psnr_per_image for m in ms]),
                "ms_ssim": _mean([m.q_ms_ssim for m in ms]),
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
                   "ssim": c.ssim, "psnr_per_image": c.psnr_per_image, "ms_ssim": c.ms_ssim,
                   "accuracy": c.classifier_accuracy, "quality": c.quality,
                   "run_ids": []} for c in sorted(rows_, key=lambda c: c.bpp)]
        series.append({"kind": "codec", "name": codec, "title": CODEC_TITLES.get(codec, codec),
                       "dataset": dataset, "points": points})
    return series


def _envelope(points: Sequence[tuple[float | None, float | None]]
              ) -> tuple[list[tuple[float, float]], list[str]]:
    """The upper envelope of (bpp, psnr) points: finite, positive bpp, sorted by bpp, each
    kept only when its PSNR is above every cheaper point's (so both coordinates increase
    strictly, as the interpolation needs); and what was dropped before the fit, in words
    (points at a tied rate, below a cheaper point's PSNR, or without finite numbers)."""
    kept: list[tuple[float, float]] = []
    usable = [(float(b), float(p)) for b, p in points if b is not None and p is not None
              and math.isfinite(b) and math.isfinite(p) and b > 0]
    tied: list[float] = []
    dominated = 0
    for bpp, psnr in sorted(usable, key=lambda p: (p[0], -p[1])):
        if kept and bpp == kept[-1][0]:
            tied.append(bpp)  # a tied rate: the first (highest PSNR) is kept
        elif not kept or psnr > kept[-1][1]:
            kept.append((bpp, psnr))
        else:
            dominated += 1
    dropped = []
    if tied:
        rates = ", ".join(f"{b:.4g}" for b in dict.fromkeys(tied))
        dropped.append(f"{_points(len(tied))} at a tied rate ({rates} bit/px: the same bpp as "
                       "another point, whose higher PSNR is kept)")
    if dominated:
        dropped.append(f"{_points(dominated)} not above a cheaper point's PSNR")
    if len(points) > len(usable):
        dropped.append(f"{_points(len(points) - len(usable))} without a finite, positive bpp "
                       "and a finite PSNR")
    return kept, dropped


def _points(n: int) -> str:
    return f"{n} point{'s' * (n != 1)}"


def bjontegaard_delta(test: Sequence[tuple[float | None, float | None]],
                      anchor: Sequence[tuple[float | None, float | None]],
                      method: str = BD_METHOD) -> dict[str, Any]:
    """BD-rate and BD-PSNR of a ``test`` curve against an ``anchor`` curve, each a list of
    (bpp [bit/px], psnr [dB]) points, with the ``bjontegaard`` package (Bjøntegaard,
    VCEG-M33, 2001; PCHIP by default, as in its ``bd_rate``/``bd_psnr``).

    Each curve is reduced to its upper envelope (:func:`_envelope`); each delta is taken
    over the overlap of the two curves only (PSNR range for BD-rate, log-bpp range for
    BD-PSNR). Returns ``{"method", "bd_rate_pct", "psnr_range_db", "bd_rate_reason",
    "bd_psnr_db", "bpp_range", "bd_psnr_reason", "points": [test n, anchor n],
    "dropped"}``: a delta is None with its reason (fewer than 2 usable points, or no
    overlap), its range None; ``dropped`` says which points each curve lost before the fit
    (a tied rate, a lower PSNR than a cheaper point's, no finite numbers), and every reason
    says it too."""
    import bjontegaard as bd  # imports matplotlib: only when a delta is asked for

    (t, t_dropped), (a, a_dropped) = _envelope(test), _envelope(anchor)
    dropped = [f"{who}: {what} dropped" for who, whats in (("the model", t_dropped),
                                                            ("the anchor", a_dropped))
               for what in whats]
    out: dict[str, Any] = {"method": method, "bd_rate_pct": None, "psnr_range_db": None,
                           "bd_rate_reason": None, "bd_psnr_db": None, "bpp_range": None,
                           "bd_psnr_reason": None, "points": [len(t), len(a)],
                           "dropped": dropped}
    before = f" (before the fit, {'; '.join(dropped)})" if dropped else ""
    short = [f"{who} has {len(c)} usable point{'s' * (len(c) != 1)}"
             + (f" of {given}" if given != len(c) else "")
             for who, c, given in (("the model", t, len(test)), ("the anchor", a, len(anchor)))
             if len(c) < 2]
    if short:
        reason = "fewer than 2 points on the upper envelope: " + ", ".join(short) + before
        out["bd_rate_reason"] = out["bd_psnr_reason"] = reason
        return out
    rates_t, psnr_t = [p[0] for p in t], [p[1] for p in t]
    rates_a, psnr_a = [p[0] for p in a], [p[1] for p in a]
    lo, hi = max(psnr_t[0], psnr_a[0]), min(psnr_t[-1], psnr_a[-1])
    with warnings.catch_warnings():  # the overlap is reported, not warned about
        warnings.simplefilter("ignore")
        if hi > lo:
            out["bd_rate_pct"] = float(bd.bd_rate(rates_a, psnr_a, rates_t, psnr_t, method,
                                                  require_matching_points=False,
                                                  min_overlap=0))
            out["psnr_range_db"] = [lo, hi]
        else:
            out["bd_rate_reason"] = (
                f"PSNR ranges do not overlap: model {psnr_t[0]:.2f}–{psnr_t[-1]:.2f} dB, "
                f"anchor {psnr_a[0]:.2f}–{psnr_a[-1]:.2f} dB{before}")
        lo, hi = max(rates_t[0], rates_a[0]), min(rates_t[-1], rates_a[-1])
        if hi > lo:
            out["bd_psnr_db"] = float(bd.bd_psnr(rates_a, psnr_a, rates_t, psnr_t, method,
                                                 require_matching_points=False,
                                                 min_overlap=0))
            out["bpp_range"] = [lo, hi]
        else:
            out["bd_psnr_reason"] = (
                f"bpp ranges do not overlap: model {rates_t[0]:.3f}–{rates_t[-1]:.3f}, "
                f"anchor {rates_a[0]:.3f}–{rates_a[-1]:.3f} bit/px{before}")
    return out


def with_bd(series: list[dict[str, Any]], anchor: str) -> list[dict[str, Any]]:
    """``series`` (:func:`rate_distortion`'s) with ``bd`` on each model series: its
    :func:`bjontegaard_delta` against the ``anchor`` codec's curve of the same dataset
    (``anchor`` named in it), or both deltas None with the reason there is no such
    curve. Codec series get ``bd`` None."""
    curves = {s["dataset"]: s for s in series if s["kind"] == "codec" and s["name"] == anchor}
    out = []
    for s in series:
        bd: dict[str, Any] | None = None
        if s["kind"] == "model":
            curve = curves.get(s["dataset"])
            pts = [(p["bpp"], p["psnr"]) for p in s["points"]]
            if curve is None:
                reason = f"no {anchor} curve on {s['dataset']} (compression.codecs)"
                kept, dropped = _envelope(pts)
                bd = {"method": BD_METHOD, "bd_rate_pct": None, "psnr_range_db": None,
                      "bd_rate_reason": reason, "bd_psnr_db": None, "bpp_range": None,
                      "bd_psnr_reason": reason, "points": [len(kept), 0],
                      "dropped": [f"the model: {what} dropped" for what in dropped]}
            else:
                bd = bjontegaard_delta(pts, [(p["bpp"], p["psnr"]) for p in curve["points"]])
            bd = {"anchor": anchor, **bd}
        out.append({**s, "bd": bd})
    return out


def compressai_export(series: Sequence[dict[str, Any]], experiment_id: int
                      ) -> list[dict[str, Any]]:
    """``series`` (:func:`rate_distortion`'s) as the result files CompressAI writes and
    its plot utility reads (``python -m compressai.utils.eval_model`` /
    ``compressai.utils.plot``): ``{"name", "description", "results": {"bpp": [...],
    "psnr-rgb": [...], "ms-ssim-rgb": [...], "psnr": [...], "ms-ssim": [...]}}``, one per
    series, in CompressAI's per-image conventions: the PSNRs (dB) are the mean of per-image
    PSNRs (``psnr_per_image``), bpp [bit/px] the mean per image. ``psnr-rgb`` and
    ``ms-ssim-rgb`` are the keys eval_model writes since CompressAI 1.2.5 (its plot reads
    ``--metric psnr`` as ``psnr-rgb``); ``psnr`` (and ``ms-ssim``) the keys of earlier
    releases. Every list is aligned with ``bpp``. A point without a finite per-image PSNR
    (measured before it, or an exact decode) is left out; ``ms-ssim-rgb`` is null at a
    point whose MS-SSIM was not measured (images under 176 px a side), and the older
    ``ms-ssim`` is there only when every point kept has it (so an older CompressAI asked
    for it fails naming the metric, rather than plotting nulls)."""
    files = []
    for s in series:
        kept = [p for p in s["points"] if p.get("psnr_per_image") is not None
                and math.isfinite(p["psnr_per_image"]) and p["bpp"] is not None]
        psnr = [p["psnr_per_image"] for p in kept]
        ms = [p.get("ms_ssim") if p.get("ms_ssim") is not None
              and math.isfinite(p["ms_ssim"]) else None for p in kept]
        results: dict[str, list[float | None]] = {
            "bpp": [p["bpp"] for p in kept], "psnr": psnr, "psnr-rgb": list(psnr),
            "ms-ssim-rgb": ms}
        if kept and all(v is not None for v in ms):
            results["ms-ssim"] = list(ms)
        what = ("the images decoded from its entropy-coded stream, one point per latent "
                "size / λ (mean over seeds)") if s["kind"] == "model" else \
            "the codec's whole files, one point per quality"
        left = len(s["points"]) - len(kept)
        notes = [f"{left} point(s) without a finite per-image PSNR left out"] if left else []
        if "ms-ssim" not in results:
            notes.append("no ms-ssim (ms-ssim-rgb null where missing): images under 176 px "
                         "a side (or not measured)")
        files.append({
            "name": f"{s['title']} ({s['dataset']})",
            "description": (
                f"aelab experiment {experiment_id}, {s['dataset']} test split: "
                f"{s['title']} — {what}. bpp: 8 × bytes per image / native H×W; psnr: "
                "mean over images of each image's PSNR in the model's 3×32×32 [0, 1] "
                "space (CompressAI's eval_model convention)"
                + "".join(f"; {n}" for n in notes) + "."),
            "results": results})
    return files
