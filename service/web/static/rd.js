"use strict";
/* The rate–distortion chart (uPlot, vendored): bpp on x, the chosen measure on y; each
   model a line through its points (latent sizes / λ), each codec a dashed line over its
   qualities. Data: the page's #rd-data JSON (the API's rate_distortion series). */
(function () {
  const source = document.getElementById("rd-data");
  const box = document.querySelector(".rd-chart");
  if (!source || !box || typeof uPlot === "undefined") return;
  const series = JSON.parse(source.textContent);
  if (!series.length) return;
  const select = document.querySelector("[data-role=metric]");
  const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];
  const CODEC = { jpeg: "#7f7f7f", webp: "#17becf", avif: "#bcbd22" };
  const num = (v) => (typeof v === "number" && Number.isFinite(v) ? v : null);
  const fmt = (v) => (v == null ? "" : Number(v.toPrecision(4)).toString());

  function label(s) { // a model with one point: say which latent size / λ it is
    if (s.kind === "codec" || s.points.length !== 1) return s.title;
    const p = s.points[0];
    return p.rd_lambda != null ? `${s.title} λ=${p.rd_lambda}` : `${s.title} (${p.latent_dim})`;
  }

  function build() {
    const metric = select.value;
    // uPlot wants one shared, ascending x: the union of every series' bpp.
    const xs = [...new Set(series.flatMap((s) => s.points.map((p) => p.bpp)))].sort((a, b) => a - b);
    const ys = series.map((s) => {
      const by = new Map(s.points.map((p) => [p.bpp, num(p[metric])]));
      return xs.map((x) => (by.has(x) ? by.get(x) : null));
    });
    let m = 0;
    const opts = {
      width: Math.max(260, box.clientWidth), height: window.innerWidth < 640 ? 260 : 380,
      scales: { x: { time: false } },
      axes: [{ label: "bits per native pixel (bpp)" },
        { label: select.selectedOptions[0].textContent, size: 60 }],
      series: [{ label: "bpp", value: (u, v) => fmt(v) }, ...series.map((s) => {
        const codec = s.kind === "codec";
        const stroke = codec ? (CODEC[s.name] || "#444") : PALETTE[m++ % PALETTE.length];
        return { label: label(s), stroke, width: codec ? 1.5 : 2.5, spanGaps: true,
          dash: codec ? [6, 4] : undefined, value: (u, v) => fmt(v),
          points: { show: true, size: codec ? 5 : 8, fill: codec ? "#fff" : stroke, stroke } };
      })],
    };
    box.replaceChildren();
    new uPlot(opts, [xs, ...ys], box);
  }
  build();
  select.addEventListener("change", build);
  window.addEventListener("resize", () => { clearTimeout(build.t); build.t = setTimeout(build, 150); });
})();
