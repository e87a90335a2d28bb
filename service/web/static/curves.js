"use strict";
/* Charts with uPlot (vendored): the runs' per-epoch curves overlaid, phase boundaries
   marked, and one LR-search chart per run. Data: the page's #curves-data JSON. */
(function () {
  const source = document.getElementById("curves-data");
  if (!source || typeof uPlot === "undefined") return;
  const runs = JSON.parse(source.textContent);
  const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
    "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
  const colour = (i) => PALETTE[i % PALETTE.length];
  const dpr = () => window.devicePixelRatio || 1;
  const charts = [];

  function width(el) {
    return Math.max(240, Math.floor(el.getBoundingClientRect().width) - 4);
  }

  function fmt(v) {
    if (v == null) return "";
    const a = Math.abs(v);
    return a !== 0 && (a < 1e-3 || a >= 1e4) ? v.toExponential(2) : Number(v.toPrecision(4)).toString();
  }

  /* --- per-epoch curves ----------------------------------------------------------- */
  const box = document.querySelector(".epochs-chart");
  if (box) {
    const section = box.closest("section");
    const metricSelect = section.querySelector("[data-role=metric]");
    const logBox = section.querySelector("[data-role=log]");
    const withEpochs = runs.filter((r) => r.epochs.length);
    // Where a phase begins (between two epochs), for every run; labelled by phase.
    const boundaries = new Map();
    for (const r of withEpochs) {
      for (let k = 1; k < r.epochs.length; k++) {
        if (r.epochs[k].phase !== r.epochs[k - 1].phase) {
          const x = r.epochs[k].epoch - 0.5;
          boundaries.set(`${x}:${r.epochs[k].phase}`, { x, phase: r.epochs[k].phase });
        }
      }
    }
    const phaseLines = {
      hooks: {
        draw: [(u) => {
          const ctx = u.ctx;
          ctx.save();
          ctx.setLineDash([5 * dpr(), 4 * dpr()]);
          ctx.strokeStyle = "#8a94a6";
          ctx.fillStyle = "#5b6575";
          ctx.lineWidth = dpr();
          ctx.font = `${11 * dpr()}px system-ui, sans-serif`;
          let row = 0;
          for (const b of boundaries.values()) {
            const x = Math.round(u.valToPos(b.x, "x", true));
            ctx.beginPath();
            ctx.moveTo(x, u.bbox.top);
            ctx.lineTo(x, u.bbox.top + u.bbox.height);
            ctx.stroke();
            ctx.fillText(b.phase, x + 4 * dpr(), u.bbox.top + (12 + 13 * row++) * dpr());
          }
          ctx.restore();
        }],
      },
    };

    function build() {
      const metric = metricSelect.value;
      const xs = [...new Set(withEpochs.flatMap((r) => r.epochs.map((e) => e.epoch)))].sort((a, b) => a - b);
      const ys = withEpochs.map((r) => {
        const by = new Map(r.epochs.map((e) => [e.epoch, e[metric]]));
        return xs.map((x) => (by.has(x) ? by.get(x) : null));
      });
      const positive = ys.every((s) => s.every((v) => v == null || v > 0));
      const log = logBox.checked && positive;
      const opts = {
        width: width(box), height: window.innerWidth < 640 ? 240 : 320,
        plugins: [phaseLines],
        scales: { x: { time: false }, y: { distr: log ? 3 : 1 } },
        axes: [{ label: "epoch", incrs: [1, 2, 5, 10, 20, 50, 100] },
          { label: metricSelect.selectedOptions[0].textContent, size: 70, values: (u, t) => t.map(fmt) }],
        series: [{ label: "epoch" }, ...withEpochs.map((r, i) => ({
          label: r.label, stroke: colour(i), width: 2, spanGaps: false,
          points: { show: true, size: 5 }, value: (u, v) => fmt(v),
        }))],
      };
      box.replaceChildren();
      const chart = new uPlot(opts, [xs, ...ys], box);
      charts[0] = { chart, el: box };
    }

    if (withEpochs.length) {
      build();
      metricSelect.addEventListener("change", build);
      logBox.addEventListener("change", build);
    } else {
      section.querySelector("[data-role=no-epochs]").hidden = false;
    }
  }

  /* --- LR searches, one chart per run --------------------------------------------------- */
  const grid = document.querySelector(".lr-grid");
  if (grid) {
    runs.forEach((r, i) => {
      const card = document.createElement("figure");
      card.className = "chart lr-chart";
      card.dataset.runId = r.id;
      const title = document.createElement("h3");
      const chosen = r.trials.find((t) => t.chosen);
      const method = r.trials.length ? r.trials[0].method : null;
      title.textContent = `${r.label} · ${method || "no search yet"}` + (chosen ? ` · chosen ${fmt(chosen.lr)}` : "");
      card.appendChild(title);
      grid.appendChild(card);
      const scored = r.trials.filter((t) => t.loss != null && t.lr > 0);
      if (!scored.length) {
        const p = document.createElement("p");
        p.className = "muted small";
        p.textContent = method === "fixed" ? `Fixed LR ${fmt(chosen && chosen.lr)}: nothing was searched.`
          : "No LR-search trial with a loss recorded.";
        card.appendChild(p);
        return;
      }
      const trials = [...scored].sort((a, b) => a.lr - b.lr);
      const xs = trials.map((t) => t.lr);
      const c = colour(i);
      const only = (keep) => trials.map((t) => (keep(t) ? t.loss : null));
      const series = [{ label: "LR", value: (u, v) => fmt(v) }];
      const data = [xs];
      if (method === "range_test") {
        series.push({ label: "loss", stroke: c, width: 1.5, points: { show: false }, value: (u, v) => fmt(v) });
        data.push(trials.map((t) => t.loss));
      } else {
        series.push({ label: "trial", stroke: c, paths: () => null, value: (u, v) => fmt(v),
          points: { show: true, size: 8, fill: c, stroke: c } });
        data.push(only((t) => !t.stopped_early));
        series.push({ label: "stopped early", stroke: c, paths: () => null, value: (u, v) => fmt(v),
          points: { show: true, size: 8, fill: "#fff", stroke: c, width: 1.5 } });
        data.push(only((t) => t.stopped_early));
      }
      series.push({ label: method === "range_test" ? "suggested" : "chosen", stroke: "#111",
        paths: () => null, value: (u, v) => fmt(v),
        points: { show: true, size: 13, fill: "#f5c400", stroke: "#111", width: 1.5 } });
      data.push(only((t) => t.chosen));
      const positive = trials.every((t) => t.loss > 0);
      const holder = document.createElement("div");
      holder.setAttribute("role", "img");
      holder.setAttribute("aria-label", `${r.label}: loss against learning rate, ${method}`);
      card.appendChild(holder);
      const opts = {
        width: width(card), height: 220,
        scales: { x: { time: false, distr: 3 }, y: { distr: positive ? 3 : 1 } },
        axes: [{ label: "learning rate", values: (u, t) => t.map(fmt) },
          { label: "loss", size: 64, values: (u, t) => t.map(fmt) }],
        series,
      };
      charts.push({ chart: new uPlot(opts, data, holder), el: card });
    });
  }

  let pending = null;
  window.addEventListener("resize", () => {
    clearTimeout(pending);
    pending = setTimeout(() => {
      for (const { chart, el } of charts) {
        if (chart) chart.setSize({ width: width(el), height: chart.height });
      }
    }, 150);
  });
})();
