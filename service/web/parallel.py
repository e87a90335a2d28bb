"""The experiment page's picture of a search: parallel coordinates over the searched values
and the metric (one polyline per sample, coloured by the metric, the best drawn on top and
thicker), and the metric over sample order — laid out here as inline SVG, as the run
page's scatter (``service.web.scatter``), so the page needs no chart library."""

from __future__ import annotations

import math
from typing import Any

WIDTH, HEIGHT = 640, 280
MARGIN = (32, 64, 50, 64)  # top, right, bottom, left: room for the end labels
LOW, HIGH = (68, 119, 170), (238, 102, 119)  # worst → best metric colour


def _colour(t: float) -> str:
    r, g, b = (round(a + (b - a) * t) for a, b in zip(LOW, HIGH, strict=True))
    return f"#{r:02x}{g:02x}{b:02x}"


def _ends(values: list[Any]) -> tuple[str, str]:
    """The labels of an axis's bottom and top: its lowest and highest value (numbers to 3
    significant digits; others first and last in order)."""
    if not values:
        return "", ""
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if len(numbers) == len(values):
        return f"{min(numbers):.3g}", f"{max(numbers):.3g}"
    order = sorted({repr(v) for v in values})
    return order[0].strip("'"), order[-1].strip("'")


def _scale(values: list[Any]) -> Any:
    """Position in [0, 1] of a value on its axis (numbers linearly, or by log when the
    axis spans more than a decade of positive values; others by their order)."""
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if len(numbers) == len(values) and numbers:
        log = min(numbers) > 0 and max(numbers) / min(numbers) > 10
        f = math.log10 if log else (lambda x: x)
        lo, hi = f(min(numbers)), f(max(numbers))
        return lambda v: 0.5 if hi == lo else (f(v) - lo) / (hi - lo)
    order = sorted({repr(v) for v in values})
    return lambda v: 0.5 if len(order) < 2 else order.index(repr(v)) / (len(order) - 1)


def tooltip(sample: dict[str, Any], metric: str) -> str:
    """What hovering a sample's line or point says: ``run 7 (succeeded): q_psnr 27.5;
    latent_dim=281, lr=0.001368, bits=8`` (its sampled values; "not measured" without the
    metric, as for a pruned sample)."""
    m = sample["metric"]
    values = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in sample["values"].items() if v is not None)
    return (f"run {sample['run_id']} ({sample['status']}): {metric} "
            f"{'not measured' if m is None else format(m, '.4g')}"
            + (f"; {values}" if values else ""))


def parallel_coordinates(view: dict[str, Any] | None) -> dict[str, Any] | None:
    """Axes (name, x, the labels of its ``low`` and ``high`` ends) and one line per sample
    (run id, SVG points, colour, best, and ``ys``: its y on each axis it has a value on,
    what brushing an axis selects by) from the experiment's ``search`` view
    (``sampling.search_view``), in SVG user units; None for a grid experiment."""
    if not view or not view["samples"]:
        return None
    names = [*view["space"], view["metric"]]
    samples = view["samples"]
    top, right, bottom, left = MARGIN
    step = (WIDTH - left - right) / max(1, len(names) - 1)
    metrics = [s["metric"] for s in samples if s["metric"] is not None]
    on_axis = {n: [s["values"].get(n) for s in samples if s["values"].get(n) is not None]
               for n in view["space"]}
    on_axis[view["metric"]] = metrics
    axes = [{"name": n, "x": left + i * step, **dict(zip(("low", "high"), _ends(on_axis[n]),
                                                          strict=True))}
            for i, n in enumerate(names)]
    sign = 1 if view["mode"] == "max" else -1
    lo, hi = (min(metrics), max(metrics)) if metrics else (0.0, 0.0)
    best = (view.get("best") or {}).get("run_id")
    scales = {n: _scale([s["values"].get(n) for s in samples
                         if s["values"].get(n) is not None]) for n in view["space"]}
    scales[view["metric"]] = _scale(metrics) if metrics else (lambda v: 0.0)
    lines = []
    for s in samples:
        points, ys = [], {}
        for axis in axes:
            n = axis["name"]
            v = s["metric"] if n == view["metric"] else s["values"].get(n)
            if v is None:
                continue
            y = top + (1 - scales[n](v)) * (HEIGHT - top - bottom)
            points.append(f"{axis['x']:.1f},{y:.1f}")
            ys[n] = round(y, 1)
        m = s["metric"]
        t = 0.5 if m is None or hi == lo else (m - lo) / (hi - lo)
        t = t if sign > 0 else 1 - t
        lines.append({"run_id": s["run_id"], "points": " ".join(points),
                      "colour": "#999999" if m is None else _colour(t), "best": s["run_id"] == best,
                      "status": s["status"], "metric": m, "ys": ys,
                      "values": {n: s["values"].get(n) for n in view["space"]},
                      "tip": tooltip(s, view["metric"])})
    lines.sort(key=lambda line: line["best"])  # the best on top
    order = [{"x": left + i * (WIDTH - left - right) / max(1, len(samples) - 1),
              "y": top + (1 - scales[view["metric"]](s["metric"])) * (HEIGHT - top - bottom),
              "run_id": s["run_id"], "tip": tooltip(s, view["metric"])}
             for i, s in enumerate(samples) if s["metric"] is not None]
    return {"width": WIDTH, "height": HEIGHT, "axes": axes, "lines": lines, "best": best,
            "metric": view["metric"], "mode": view["mode"], "order": order,
            "bottom": HEIGHT - bottom, "top": top, "left": left, "right": right}
