"""``photos`` on the CPU at a small budget: ``baseline`` and ``factorized_prior`` (two λ)
trained on crops of scikit-image's photographs, the three test photos coded whole and
measured against JPEG and WebP at the same bytes (the README's table).

    .venv/bin/python bench/photos_cpu.py --epochs 2 --crop 32 --out /tmp/photos-bench

Each run goes through the service's own pipeline (``workers.pipeline.run_pipeline`` with
a ``DirStore``); the Markdown table goes to stdout and ``<out>/table.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from workers.context import RunEnv
from workers.pipeline import LocalSteps, run_pipeline
from workers.spec import RunSpec
from workers.store import DirStore

RUNS = (("baseline", None), ("factorized_prior", 0.0018), ("factorized_prior", 0.0483))


def spec(model: str, rd_lambda: float | None, args: argparse.Namespace) -> RunSpec:
    return RunSpec.model_validate({
        "model": model, "dataset": "photos", "epochs": args.epochs,
        "batch_size": args.batch_size, "seed": 0, "pretrained": False,
        "rd_lambda": rd_lambda, "lr_search": {"method": "fixed", "lr": args.lr},
        "data": {"crop": args.crop, "validation": "test"},
        "resources": {"gpus_per_run": 0, "cpus_per_run": args.threads},
        "classifier": {"enabled": False}, "gallery_samples": 3,
        "compression": {"codecs": ["jpeg", "webp"]}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--crop", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--threads", type=float, default=2)
    parser.add_argument("--out", type=Path, default=Path("/tmp/aelab-photos-bench"))
    args = parser.parse_args()
    env = RunEnv(data_root="/unused", weights_dir="/unused", allow_download=False)
    lines = ["| method | bytes / image | bpp | PSNR (dB) | SSIM | train s |",
             "| --- | --- | --- | --- | --- | --- |"]
    for model, lam in RUNS:
        s = spec(model, lam, args)
        folder = args.out / s.label()
        folder.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        ok = run_pipeline(s, DirStore(folder, total_epochs=s.epochs), LocalSteps(env))
        if not ok:
            raise SystemExit(f"{s.label()} failed: {(folder / 'status.json').read_text()}")
        m = json.loads((folder / "measures.json").read_text())
        title = model if lam is None else f"{model} λ={lam:g}"
        lines.append(f"| {title} (quantised stream) | {m['bytes_per_image']:.0f} | "
                     f"{m['bpp']:.3f} | {m['q_psnr']:.2f} | {m['q_ssim']:.3f} | "
                     f"{m['training_time_s']:.0f} |")
        for c in m.get("codecs", []):
            if c["kind"] == "matched":
                lines.append(f"| {c['codec'].upper()} @ {title}'s size ({c['status']}) | "
                             f"{c['bytes_per_image']:.0f} | {c['bpp']:.3f} | "
                             f"{c['psnr']:.2f} | {c['ssim']:.3f} | |")
        print(f"{s.label()}: {time.perf_counter() - started:.0f} s", flush=True)
    table = "\n".join(lines)
    (args.out / "table.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
