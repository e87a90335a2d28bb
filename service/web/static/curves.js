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

  function width(el) { // the content box: a chart never overflows its card
    const style = getComputedStyle(el);
    const inner = el.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
    return Math.max(200, Math.floor(inner));
  }

  // Log axes over many decades: ticks and grid lines at powers of ten only, every other
  // one past six decades, so a small chart stays legible.
  function decades(u, axis, min, max) {
    const lo = Math.ceil(Math.log10(min) - 1e-9), hi = Math.floor(Math.log10(max) + 1e-9);
    const step = hi - lo > 6 ? 2 : 1;
    const out = [];
    for (let e = lo; e <= hi; e++) if (e % step === 0) out.push(10 ** e);
    return out;
  }

  function tick(v) { // axis labels: 1e-7, 0.001, 0.25, 10
    if (v == null) return "";
    const e = Math.log10(Math.abs(v));
    if (v !== 0 && Number.isInteger(Math.round(e * 1e9) / 1e9) && (e < -3 || e >= 4)) return `1e${Math.round(e)}`;
    return String(Number(v.toPrecision(3)));
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
          ctx.textAlign = "left";
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
          { label: metricSelect.selectedOptions[0].textContent, size: 70, values: (u, t) => t.map(tick) }],
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

  /* --- one run's page: its losses and, beside them, its GPU per epoch --------------------- */
  function epochChart(el, epochs, series, axes, scales) {
    const opts = {
      width: width(el.closest("section")), height: 220,
      scales: { x: { time: false }, ...scales },
      axes: [{ label: "epoch", incrs: [1, 2, 5, 10, 20, 50, 100] }, ...axes],
      series: [{ label: "epoch" }, ...series.map((s) => ({
        label: s.label, stroke: s.colour, scale: s.scale, width: 2, spanGaps: false,
        points: { show: true, size: 5 }, value: (u, v) => fmt(v),
      }))],
    };
    const data = [epochs.map((e) => e.epoch), ...series.map((s) => epochs.map((e) => e[s.key]))];
    charts.push({ chart: new uPlot(opts, data, el), el: el.closest("section") });
  }

  const lossBox = document.querySelector(".loss-chart");
  if (lossBox && runs.length && runs[0].epochs.length) {
    const epochs = runs[0].epochs;
    const positive = epochs.every((e) => e.train_loss > 0 && e.val_loss > 0);
    epochChart(lossBox, epochs, [
      { key: "train_loss", label: "training loss", colour: colour(0), scale: "y" },
      { key: "val_loss", label: "validation loss", colour: colour(1), scale: "y" },
    ], [{ label: "loss", size: 64, values: (u, t) => t.map(tick) }],
    { y: { distr: positive ? 3 : 1 } });
  }
  const gpuBox = document.querySelector(".gpu-chart");
  if (gpuBox && runs.length && runs[0].epochs.length) {
    epochChart(gpuBox, runs[0].epochs, [
      { key: "gpu_utilization_percent", label: "utilisation %", colour: colour(2), scale: "%" },
      { key: "gpu_memory_peak_mib", label: "peak memory MiB", colour: colour(4), scale: "MiB" },
    ], [{ label: "utilisation (%)", scale: "%", size: 56 },
      { label: "peak memory (MiB)", scale: "MiB", side: 1, size: 70, grid: { show: false },
        values: (u, t) => t.map(tick) }],
    { "%": { range: [0, 100] }, MiB: { range: (u, lo, hi) => [0, Math.max(1, hi) * 1.1] } });
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
      // The run's LR is the one it trained with (a range test's suggestion may fall
      // between sweep points, or be a tenth of the best one: fastai's fallback).
      const lr = r.lr != null ? r.lr : chosen && chosen.lr;
      title.textContent = `${r.label} · ${method || "no search yet"}` + (lr ? ` · chosen ${fmt(lr)}` : "");
      card.appendChild(title);
      grid.appendChild(card);
      const scored = r.trials.filter((t) => t.loss != null && t.lr > 0);
      if (!scored.length) {
        const p = document.createElement("p");
        p.className = "muted small";
        p.textContent = method === "fixed" ? `Fixed LR ${fmt(lr)}: nothing was searched.`
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
      const chosenLine = {
        hooks: {
          draw: [(u) => {
            if (!lr) return;
            const ctx = u.ctx;
            const x = Math.round(u.valToPos(lr, "x", true));
            ctx.save();
            ctx.setLineDash([4 * dpr(), 3 * dpr()]);
            ctx.strokeStyle = "#111";
            ctx.lineWidth = dpr();
            ctx.beginPath();
            ctx.moveTo(x, u.bbox.top);
            ctx.lineTo(x, u.bbox.top + u.bbox.height);
            ctx.stroke();
            ctx.fillStyle = "#111";
            ctx.font = `${11 * dpr()}px system-ui, sans-serif`;
            ctx.textAlign = x > u.bbox.left + u.bbox.width / 2 ? "right" : "left";
            ctx.fillText(`LR ${fmt(lr)}`, x + (ctx.textAlign === "left" ? 4 : -4) * dpr(),
              u.bbox.top + 12 * dpr());
            ctx.restore();
          }],
        },
      };
      const lo = Math.min(xs[0], lr || xs[0]);
      const hi = Math.max(xs[xs.length - 1], lr || 0);
      const opts = {
        width: width(card), height: 220, plugins: [chosenLine],
        scales: { x: { time: false, distr: 3, range: () => [lo / 2, hi * 2] },
          y: { distr: positive ? 3 : 1 } },
        axes: [{ label: "learning rate", values: (u, t) => t.map(tick), splits: decades, space: 24 },
          { label: "loss", size: 64, values: (u, t) => t.map(tick) }],
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
