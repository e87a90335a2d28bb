"use strict";
/* The gallery: a switch between reconstructions and absolute-error heatmaps, and a tile
   that opens large.

   Heatmaps are computed here from the tiles themselves (the stored uint8 pixels): per
   pixel, the mean over R, G, B of |reconstruction − input| / 255, coloured on one scale
   for the whole gallery (0 → black, the gallery's largest error → pale yellow), so rows
   compare fairly. Each heatmap has its tile's own size: square tiles at the crop, or a
   whole image at its own aspect ratio, scaled to fit. */
(function () {
  const gallery = document.querySelector(".gallery");
  if (!gallery) return;
  // An inferno-like ramp; the legend bar in app.css uses the same stops.
  const STOPS = [[0, 0, 4], [66, 10, 104], [147, 38, 103], [221, 81, 58], [252, 165, 10], [252, 255, 164]];

  function colour(t) {
    const x = Math.min(Math.max(t, 0), 1) * (STOPS.length - 1);
    const i = Math.min(Math.floor(x), STOPS.length - 2);
    const f = x - i;
    return STOPS[i].map((c, k) => Math.round(c + (STOPS[i + 1][k] - c) * f));
  }

  // The tile's own pixels (RGBA), at its natural size: { w, h, data }.
  async function pixels(img) {
    await img.decode();
    const w = img.naturalWidth, h = img.naturalHeight;
    const canvas = document.createElement("canvas");
    canvas.width = w;
    canvas.height = h;
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    ctx.drawImage(img, 0, 0);
    return { w, h, data: ctx.getImageData(0, 0, w, h).data };
  }

  const inputs = new Map();
  for (const fig of gallery.querySelectorAll("figure.inputs-row")) {
    inputs.set(fig.dataset.index, fig.querySelector("img.input"));
  }

  let heatmaps = null; // computed once, on first use
  async function computeHeatmaps() {
    if (heatmaps) return heatmaps;
    const cells = [...gallery.querySelectorAll("figure.recon-cell")];
    const inputPixels = new Map();
    for (const [index, img] of inputs) inputPixels.set(index, await pixels(img));
    const errors = [];
    let max = 0;
    for (const cell of cells) {
      const input = inputPixels.get(cell.dataset.index);
      const recon = await pixels(cell.querySelector("img.recon"));
      if (input.w !== recon.w || input.h !== recon.h) continue; // not the same image
      const a = input.data, b = recon.data;
      const e = new Float64Array(recon.w * recon.h);
      for (let p = 0; p < e.length; p++) {
        const o = 4 * p;
        e[p] = (Math.abs(a[o] - b[o]) + Math.abs(a[o + 1] - b[o + 1]) + Math.abs(a[o + 2] - b[o + 2])) / 3 / 255;
        if (e[p] > max) max = e[p];
      }
      errors.push([cell, e, recon.w, recon.h]);
    }
    const canvas = document.createElement("canvas");
    const ctx = canvas.getContext("2d");
    for (const [cell, e, w, h] of errors) {
      canvas.width = w;
      canvas.height = h;
      const image = ctx.createImageData(w, h);
      for (let p = 0; p < e.length; p++) {
        const [r, g, b] = colour(max > 0 ? e[p] / max : 0);
        image.data.set([r, g, b, 255], 4 * p);
      }
      ctx.putImageData(image, 0, 0);
      cell.querySelector("img.heat").src = canvas.toDataURL("image/png");
    }
    heatmaps = { max };
    const legend = document.querySelector("[data-role=legend]");
    if (legend) {
      legend.dataset.max = String(max);
      legend.querySelector("[data-role=max]").textContent = max.toFixed(3);
    }
    return heatmaps;
  }

  const buttons = document.querySelectorAll(".switch [data-view]");
  for (const button of buttons) {
    button.addEventListener("click", async () => {
      const error = button.dataset.view === "error";
      if (error) await computeHeatmaps();
      gallery.classList.toggle("show-error", error);
      for (const b of buttons) b.setAttribute("aria-pressed", String(b === button));
      const legend = document.querySelector("[data-role=legend]");
      if (legend) legend.hidden = !error;
    });
  }

  const dialog = document.querySelector("dialog.zoom");
  gallery.addEventListener("click", async (event) => {
    const tile = event.target.closest("button.tile");
    if (!tile || !dialog) return;
    const index = tile.dataset.index;
    const input = inputs.get(index);
    const cell = tile.closest("figure.recon-cell");
    const big = (role) => dialog.querySelector(`[data-role=${role}]`);
    big("input").src = input.src;
    big("input").alt = `Test image ${index}, enlarged`;
    big("recon-fig").hidden = big("heat-fig").hidden = !cell;
    if (cell) {
      await computeHeatmaps();
      const label = tile.dataset.label;
      const psnr = cell.dataset.psnr ? `${Number(cell.dataset.psnr).toFixed(2)} dB` : "∞ dB";
      big("recon").src = cell.querySelector("img.recon").src;
      big("recon").alt = `${label}: reconstruction of test image ${index}, enlarged`;
      big("heat").src = cell.querySelector("img.heat").src;
      big("heat").alt = `${label}: absolute error on test image ${index}, enlarged`;
      big("recon-caption").textContent = `Reconstruction · PSNR ${psnr}`;
      big("title").textContent = `${label} · test image ${index}`;
    } else {
      big("title").textContent = `Test image ${index}`;
    }
    dialog.showModal();
  });
})();
