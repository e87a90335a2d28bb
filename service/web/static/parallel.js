"use strict";
/* Brushing the search's parallel coordinates: a drag along an axis keeps the runs whose
   value on that axis lies within the dragged range (several axes: within all of them).
   Lines outside are dimmed; the runs list and the results tables on the page show only the
   kept runs. A click without a drag clears that axis; "Show all runs" clears every axis.
   Positions are SVG user units (each line's y per axis comes in its data-ys). */
(function () {
  const svg = document.getElementById("parallel");
  if (!svg) return;
  const lines = [...svg.querySelectorAll(".pc-line")];
  const ys = new Map(lines.map((l) => [l, JSON.parse(l.dataset.ys || "{}")]));
  const brushes = new Map(); // axis name -> [low y, high y]
  const count = document.getElementById("pc-count");
  const clear = document.getElementById("pc-clear");
  const rows = () => document.querySelectorAll(
    "table.study tbody tr[data-run-id], ul.runs .run[data-run-id]");

  const toSvgY = (event) => {
    const point = svg.createSVGPoint();
    point.x = event.clientX;
    point.y = event.clientY;
    return point.matrixTransform(svg.getScreenCTM().inverse()).y;
  };

  function kept(line) {
    for (const [axis, [lo, hi]] of brushes) {
      const y = ys.get(line)[axis];
      if (y === undefined || y < lo || y > hi) return false;
    }
    return true;
  }

  function apply() {
    const keep = new Set();
    for (const line of lines) {
      const on = kept(line);
      line.classList.toggle("pc-dim", brushes.size > 0 && !on);
      if (on) keep.add(line.dataset.runId);
    }
    for (const row of rows()) row.hidden = brushes.size > 0 && !keep.has(row.dataset.runId);
    clear.hidden = brushes.size === 0;
    count.textContent = brushes.size ? `${keep.size} of ${lines.length} runs kept.` : "";
  }

  function draw(axis) {
    const rect = svg.querySelector(`.pc-brush[data-axis="${CSS.escape(axis)}"]`);
    const range = brushes.get(axis);
    rect.setAttribute("visibility", range ? "visible" : "hidden");
    if (range) {
      rect.setAttribute("y", range[0]);
      rect.setAttribute("height", Math.max(0, range[1] - range[0]));
    }
  }

  for (const area of svg.querySelectorAll(".pc-brush-area")) {
    const axis = area.dataset.axis;
    const top = Number(area.getAttribute("y"));
    const bottom = top + Number(area.getAttribute("height"));
    const clamp = (y) => Math.min(bottom, Math.max(top, y));
    let start = null;
    area.addEventListener("pointerdown", (event) => {
      event.preventDefault();
      area.setPointerCapture(event.pointerId);
      start = clamp(toSvgY(event));
    });
    area.addEventListener("pointermove", (event) => {
      if (start === null) return;
      const y = clamp(toSvgY(event));
      brushes.set(axis, [Math.min(start, y), Math.max(start, y)]);
      draw(axis);
      apply();
    });
    const end = (event) => {
      if (start === null) return;
      const range = brushes.get(axis);
      if (!range || range[1] - range[0] < 2) brushes.delete(axis); // a click clears
      start = null;
      if (event.pointerId !== undefined && area.hasPointerCapture(event.pointerId)) {
        area.releasePointerCapture(event.pointerId);
      }
      draw(axis);
      apply();
    };
    area.addEventListener("pointerup", end);
    area.addEventListener("pointercancel", end);
  }

  clear.addEventListener("click", () => {
    const axes = [...brushes.keys()];
    brushes.clear();
    axes.forEach(draw);
    apply();
  });
})();
