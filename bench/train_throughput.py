"""Training throughput per variant: aelab's loop against a naive PyTorch loop.

aelab: the trainer's own epoch loop — uint8 splits placed on the device once, each
epoch's order and augmentation drawn at its start, batches sliced, resized and augmented
on the device, fused AdamW, channels-last and bf16 autocast on CUDA (``--precision``;
optionally torch.compile). Naive: a torchvision dataset with
per-sample PIL transforms behind a DataLoader, the same model, default AdamW.

    python bench/train_throughput.py                      # all variants, MNIST if present
    python bench/train_throughput.py --variants baseline --steps 60

Prints images/s for both, their ratio, the share of wall time outside forward/backward/
step, and memory. Runs unchanged on a GPU (CUDA is used when present).
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from models.catalog import VARIANTS
from models.data import ImageSet, is_available, load_dataset
from models.recipes import build_model, build_training_loss
from models.training import TrainConfig, TrainingSession, resolve_device


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def aelab_loop(config: TrainConfig, data, steps: int, warmup: int) -> tuple[float, float]:
    """(images/s, share of wall time outside the optimiser step) of the trainer's own
    epoch loop (``TrainingSession.epoch_batches``: the splits placed on the device once,
    each epoch's draws made at its start, batches made on the device). The step is
    forward + loss + backward + optimiser and scheduler step, synchronised on both sides;
    everything else — the epoch's draws, slicing, resizing, augmentation — is outside."""
    session = TrainingSession(config, data)
    phase = session.phases[-1]
    session.start_phase(phase)
    session.model.train()
    session.loss_fn.train()
    device = session.device
    step_time = 0.0
    done = 0
    start = 0.0
    while done < steps + warmup:
        for target in session.epoch_batches(phase.size):
            if done == warmup:
                sync(device)
                start, step_time = time.perf_counter(), 0.0
            sync(device)
            t0 = time.perf_counter()
            session.step(target)
            sync(device)
            step_time += time.perf_counter() - t0
            done += 1
            if done == steps + warmup:
                break
    wall = time.perf_counter() - start
    return steps * config.batch_size / wall, 1 - step_time / wall


class PILImages(Dataset):
    """What a straightforward port does: PIL images, transformed one at a time."""

    def __init__(self, images: ImageSet) -> None:
        arrays = images.images.permute(0, 2, 3, 1).numpy()
        self.images = [Image.fromarray(a.squeeze(-1) if a.shape[-1] == 1 else a)
                       for a in arrays]
        self.augment = transforms.Compose([
            transforms.Lambda(lambda im: im.convert("RGB")),
            transforms.Resize(32, interpolation=transforms.InterpolationMode.BILINEAR),
            transforms.RandomHorizontalFlip(), transforms.RandomVerticalFlip(),
            transforms.ColorJitter(brightness=0.2, contrast=0.2),
            transforms.ToTensor(),
        ])
        self.normalize = transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        target = self.augment(self.images[i])
        return self.normalize(target), target


def naive_loop(variant: str, data, batch_size: int, steps: int, warmup: int,
               device: torch.device) -> float:
    torch.manual_seed(0)
    model = build_model(variant, pretrained=False).to(device).train()
    loss_fn = build_training_loss(variant, pretrained=False, model=model).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loader = DataLoader(PILImages(data.train), batch_size=batch_size, shuffle=True,
                        drop_last=True)
    done, start = 0, 0.0
    while done < steps + warmup:
        for x, target in loader:
            if done == warmup:
                sync(device)
                start = time.perf_counter()
            x, target = x.to(device), target.to(device)
            loss = loss_fn(model(x), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            done += 1
            if done == steps + warmup:
                break
    sync(device)
    return steps * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--dataset", default=None, help="default: mnist if its files are "
                        "here, else synthetic")
    parser.add_argument("--data-root", default="~/.aelab/data")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--naive-steps", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                        help="TrainConfig.precision (auto: bf16 autocast on CUDA only)")
    args = parser.parse_args()

    root = Path(args.data_root).expanduser()
    dataset = args.dataset or ("mnist" if is_available("mnist", root) else "synthetic")
    data = load_dataset(dataset, root, validation="test", download=False)
    device = resolve_device(None)
    stored = data.train.images.numel() * 1 + data.test.images.numel()
    as_rgb32 = (len(data.train) + len(data.test)) * 3 * 32 * 32
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"{torch.get_num_threads()} threads")
    print(f"device {device} ({where}), "
          f"dataset {dataset}: {len(data.train)} train images, batch {args.batch_size}, "
          f"precision {args.precision}, "
          f"torch {torch.__version__}")
    print(f"dataset in memory: {stored / 2**20:.0f} MiB uint8 as stored "
          f"({as_rgb32 / 2**20:.0f} MiB as uint8 3×32×32, "
          f"{as_rgb32 * 4 / 2**20:.0f} MiB if it were float32 3×32×32)")
    header = (f"{'variant':<22}{'aelab img/s':>12}{'naive img/s':>12}{'ratio':>8}"
              f"{'outside step':>14}")
    print(header)
    print("-" * len(header))
    for variant in args.variants.split(","):
        config = TrainConfig(variant, batch_size=args.batch_size, pretrained=False,
                             compile=args.compile, augment=True,
                             precision=args.precision)
        fast, outside = aelab_loop(config, data, args.steps, args.warmup)
        naive = naive_loop(variant, data, args.batch_size, args.naive_steps, args.warmup,
                           device)
        print(f"{variant:<22}{fast:>12.0f}{naive:>12.0f}{fast / naive:>7.2f}×"
              f"{outside * 100:>13.1f}%", flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    print(f"peak RSS of this process: {peak:.0f} MiB", end="")
    if device.type == "cuda":
        print(f"; peak CUDA memory {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB",
              end="")
    print()


if __name__ == "__main__":
    main()
