"""An experiment's rate–distortion series: each model's measured points and each codec's
curve (``GET /experiments/{id}/rate_distortion``)."""

from __future__ import annotations

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
