"""The run page's picture of its codes: the test codes' 2-D PCA (``codes-pca.json``, saved
at evaluation by ``models.probes.code_projection``) as an inline SVG scatter coloured by
class, laid out here so the page needs no chart library and no script."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.persistence.artifacts import ArtifactError, ArtifactStore
from service.persistence.tables import Artifact
from workers.store import CODE_PROJECTION

# Category colours (matplotlib's tab10, as the curves use); classes past ten cycle.
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
UNLABELLED = "#2457c5"  # the page's accent: one colour when there are no classes
WIDTH, HEIGHT = 560, 400  # the SVG's user units (it scales to the card's width)
MARGIN = (12, 12, 44, 52)  # top, right, bottom, left: room for the axis labels


@dataclass(frozen=True)
class Point:
    cx: float
    cy: float
    colour: str
    label: int  # class id, −1 unlabelled
    index: int  # the test image's position


@dataclass(frozen=True)
class Scatter:
    points: list[Point]
    legend: list[tuple[str, str]]  # (class name, colour); empty when unlabelled
    labelled: bool
    x_label: str
    y_label: str
    codes: int  # test codes the PCA was fitted on (points are at most 2,000 of them)
    width: int = WIDTH
    height: int = HEIGHT
    plot: tuple[float, float, float, float] = (MARGIN[3], MARGIN[0], WIDTH - MARGIN[1],
                                               HEIGHT - MARGIN[2])  # x0, y0, x1, y1


def _scale(values: list[float], lo_px: float, hi_px: float) -> list[float]:
    lo, hi = min(values), max(values)
    span = hi - lo if hi > lo else 1.0
    return [round(lo_px + (v - lo) / span * (hi_px - lo_px), 2) for v in values]


def layout(projection: dict[str, Any]) -> Scatter | None:
    """The scatter of a stored projection (``x``, ``y``, ``label``, ``index`` per point,
    ``explained_variance_ratio``, ``codes``, ``labelled``): points in SVG user units
    (y up), each coloured by its class; None when it holds no finite point."""
    xs, ys = projection["x"], projection["y"]
    labels, index = projection["label"], projection["index"]
    keep = [i for i in range(len(xs)) if math.isfinite(xs[i]) and math.isfinite(ys[i])]
    if not keep:
        return None
    labelled = bool(projection.get("labelled"))
    x0, y0, x1, y1 = MARGIN[3], MARGIN[0], WIDTH - MARGIN[1], HEIGHT - MARGIN[2]
    cx = _scale([xs[i] for i in keep], x0, x1)
    cy = _scale([ys[i] for i in keep], y1, y0)  # SVG's y grows downwards

    def colour(label: int) -> str:
        return PALETTE[label % len(PALETTE)] if labelled else UNLABELLED

    points = [Point(cx[k], cy[k], colour(labels[i]), labels[i], index[i])
              for k, i in enumerate(keep)]
    classes = sorted({p.label for p in points}) if labelled else []
    ratio = projection["explained_variance_ratio"]
    return Scatter(points, [(f"class {c}", colour(c)) for c in classes], labelled,
                   f"PC 1 ({100 * ratio[0]:.1f} % of the variance)",
                   f"PC 2 ({100 * ratio[1]:.1f} % of the variance)", int(projection["codes"]))


def read_scatter(session: Session, artifacts: ArtifactStore, run_id: int) -> Scatter | None:
    """The run's stored code projection laid out, or None when it has none (not evaluated
    yet, evaluated whole) or it cannot be read."""
    stored = session.scalars(select(Artifact).where(
        Artifact.run_id == run_id, Artifact.name == CODE_PROJECTION)).first()
    if stored is None:
        return None
    try:
        return layout(json.loads(artifacts.read(stored.uri)))
    except (ArtifactError, FileNotFoundError, OSError, ValueError, KeyError, TypeError,
            IndexError):
        return None
