"""The run page's picture of its codes: the test codes' 2-D PCA (``codes-pca.json``, saved
at evaluation by ``models.probes.code_projection``) as an inline SVG scatter coloured by
class, laid out here so the page needs no chart library and no script."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.catalog import IMAGE_SIZE
from models.datasets import known_dataset_info
from service.persistence.artifacts import ArtifactError, ArtifactStore
from service.persistence.tables import Artifact, Run
from service.spec import Unmeasured, unmeasured
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


def layout(projection: dict[str, Any], classes: Sequence[str] = ()) -> Scatter | None:
    """The scatter of a stored projection (``x``, ``y``, ``label``, ``index`` per point,
    ``explained_variance_ratio``, ``codes``, ``labelled``): points in SVG user units
    (y up), each coloured by its class, the legend naming each class by ``classes`` (the
    dataset's class names, in label order; ``class <i>`` past them); None when it holds no
    finite point."""
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
    ratio = projection["explained_variance_ratio"]
    def name(label: int) -> str:
        return names[label] if 0 <= label < len(names) else f"class {label}"

    names = tuple(classes)
    legend = sorted({p.label for p in points}) if labelled else []
    return Scatter(points, [(name(c), colour(c)) for c in legend], labelled,
                   f"PC 1 ({100 * ratio[0]:.1f} % of the variance)",
                   f"PC 2 ({100 * ratio[1]:.1f} % of the variance)", int(projection["codes"]))


def read_scatter(session: Session, artifacts: ArtifactStore, run: Run
                 ) -> tuple[Scatter | None, str | None]:
    """The run's stored code projection laid out with its dataset's class names, or None
    and why the page has none (:func:`missing`, or its stored projection is unreadable or
    holds no finite point)."""
    stored = session.scalars(select(Artifact).where(
        Artifact.run_id == run.id, Artifact.name == CODE_PROJECTION)).first()
    if stored is None:
        return None, missing(run)
    info = known_dataset_info(run.dataset)
    try:
        scatter = layout(json.loads(artifacts.read(stored.uri)),
                         info.classes if info is not None else ())
    except (ArtifactError, FileNotFoundError, OSError, ValueError, KeyError, TypeError,
            IndexError):
        return None, "its stored projection could not be read"
    return (scatter, None) if scatter is not None else \
        (None, "its projection holds no finite point (the codes were not finite)")


def missing(run: Run) -> str:
    """Why a run has no code projection (``models.probes.latent_probes`` saves none for
    fewer than 2 test codes or 1-D codes; none when the data is evaluated whole, as tiles,
    ``service.spec.unmeasured``), in words."""
    m = run.measures
    if m is None:
        return "the run has not been evaluated"
    codes = next((u.reason for u in unmeasured_for(run) if u.need == "codes"), None)
    if codes is not None:
        return codes
    if m.n_images < 2:
        return (f"{m.n_images} test image{'s' * (m.n_images != 1)}, and a plane needs at least "
                "2 codes (data.test_limit)")
    if m.latent_dim < 2:
        return f"its codes have {m.latent_dim} value each, and a plane needs 2"
    return "the run was evaluated before the projection of its codes was stored"


def unmeasured_for(run: Run) -> list[Unmeasured]:
    """:func:`service.spec.unmeasured` under the run's own spec (its data.crop, classifier
    and test limit; a missing field: the default's)."""
    data, clf = run.spec.get("data") or {}, run.spec.get("classifier") or {}
    return unmeasured(run.dataset, crop=data.get("crop", IMAGE_SIZE),
                      classifier=bool(clf.get("enabled", True)),
                      test_limit=data.get("test_limit"))
