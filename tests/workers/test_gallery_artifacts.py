"""The gallery's artifacts: the fixed sample set, lossless strips, per-tile PSNR, and the
pipeline saving them for every run."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from models.data import ImageSet, load_dataset, to_float
from models.samples import read_strip, reconstruct_gallery, strip_png, tile_psnr, to_uint8
from workers.context import RunEnv
from workers.pipeline import LocalSteps, run_pipeline
from workers.spec import RunSpec
from workers.store import (
    CODE_PROJECTION,
    GALLERY_INPUTS,
    GALLERY_META,
    GALLERY_RECONSTRUCTIONS,
    MemoryStore,
)


class Shift(nn.Module):
    """Undoes ImageNet normalisation and adds a constant: a known, imperfect autoencoder."""

    def __init__(self, delta: float) -> None:
        super().__init__()
        self.delta = delta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        return x * std + mean + self.delta


def test_strip_layout_and_rounding_by_hand() -> None:
    x = torch.zeros(2, 3, 32, 32)
    x[0, 0, 0, 0] = 0.5  # 127.5 → 128 (round half to even would give 128 too)
    x[0, 1, 31, 31] = 1 / 255 * 0.49  # → 0
    x[1, 2, 5, 7] = 1.7  # clamped → 255
    x[1, 0, 0, 0] = -0.2  # clamped → 0
    png = strip_png(x)
    image = np.asarray(Image.open(io.BytesIO(png)))
    assert image.shape == (32, 64, 3) and image.dtype == np.uint8
    assert image[0, 0].tolist() == [128, 0, 0]
    assert image[31, 31].tolist() == [0, 0, 0]
    assert image[5, 32 + 7].tolist() == [0, 0, 255]  # tile 1 starts at x = 32
    assert int(image.sum()) == 128 + 255
    tiles = read_strip(png)
    assert tiles.shape == (2, 3, 32, 32) and torch.equal(tiles, to_uint8(x))


def test_tile_psnr_by_hand() -> None:
    a = torch.zeros(2, 3, 4, 4)
    b = a.clone()
    b[0] += 0.25  # exact in binary: MSE 1/16 → 10·log10(16) dB
    assert tile_psnr(a, b) == [10 * math.log10(16), None]


def test_the_fixed_sample_set_is_the_front_of_the_test_split_whatever_the_limit() -> None:
    small = load_dataset("synthetic", "/unused", train_limit=64, test_limit=8, seed=0)
    large = load_dataset("synthetic", "/unused", train_limit=128, test_limit=200, seed=3)
    model = Shift(0.0)
    a = reconstruct_gallery(model, small.test, 8, dataset="synthetic")
    b = reconstruct_gallery(model, large.test, 8, dataset="synthetic")
    assert a.inputs_png == b.inputs_png
    expected = to_uint8(to_float(large.test.images[:8]))
    assert torch.equal(read_strip(a.inputs_png), expected)


def test_gallery_holds_exactly_the_models_output_and_its_psnr() -> None:
    images = ImageSet(torch.full((5, 3, 32, 32), 100, dtype=torch.uint8),
                      torch.zeros(5, dtype=torch.long))
    gallery = reconstruct_gallery(Shift(0.2), images, 3, dataset="synthetic")
    inputs, recon = read_strip(gallery.inputs_png), read_strip(gallery.reconstructions_png)
    assert inputs.shape == recon.shape == (3, 3, 32, 32)
    assert torch.equal(inputs, torch.full_like(inputs, 100))
    assert torch.equal(recon, torch.full_like(recon, 151))  # 100/255 + 0.2 → 151/255
    meta = gallery.meta
    assert meta["count"] == 3 and meta["indices"] == [0, 1, 2]
    # MSE 0.04 in float: 10·log10(25) dB.
    assert meta["psnr_db"] == [pytest.approx(13.979400, abs=1e-5)] * 3
    assert meta["mse"] == [pytest.approx(0.04, rel=1e-5)] * 3
    # More samples asked than images: all of them.
    assert reconstruct_gallery(Shift(0.2), images, 64, dataset="synthetic").meta["count"] == 5


@pytest.mark.slow
def test_every_run_saves_its_gallery_and_its_tiles_are_the_saved_models_output() -> None:
    spec = RunSpec(model="baseline", dataset="synthetic", epochs=1, batch_size=32,
                   gallery_samples=5, lr_search={"method": "fixed"},
                   data={"train_limit": 64, "test_limit": 16},
                   classifier={"enabled": False}, pretrained=False,
                   resources={"gpus_per_run": 0, "cpus_per_run": 1})
    store = MemoryStore()
    env = RunEnv(data_root="/unused", weights_dir="/unused", allow_download=False)
    assert run_pipeline(spec, store, LocalSteps(env)), store.error
    meta = json.loads(store.artifacts[GALLERY_META])
    assert meta["count"] == 5 and meta["inputs"] == GALLERY_INPUTS
    assert meta["reconstructions"] == GALLERY_RECONSTRUCTIONS
    assert Image.open(io.BytesIO(store.artifacts[GALLERY_RECONSTRUCTIONS])).size == (160, 32)

    from models.recipes import build_model

    saved = torch.load(io.BytesIO(store.artifacts["model.pt"]), weights_only=False)
    model = build_model(saved["model"], latent_dim=saved["latent_dim"], pretrained=False)
    model.load_state_dict(saved["state"])
    model.eval()
    data = load_dataset("synthetic", "/unused", train_limit=64, test_limit=16, seed=0)
    x = to_float(data.test.images[:5])
    with torch.no_grad():
        out = model((x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
                    / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)).clamp(0, 1)
    assert torch.equal(read_strip(store.artifacts[GALLERY_RECONSTRUCTIONS]), to_uint8(out))
    assert torch.equal(read_strip(store.artifacts[GALLERY_INPUTS]), to_uint8(x))
    mse = ((out.double() - x.double()) ** 2).flatten(1).mean(1)
    assert meta["psnr_db"] == [pytest.approx(10 * math.log10(1 / m), abs=1e-4)
                               for m in mse.tolist()]

    # The codes' PCA: the saved model's test codes, projected by numpy's SVD here.
    from models.quantize import encode_latents

    projection = json.loads(store.artifacts[CODE_PROJECTION])
    codes = encode_latents(model, data.test, device="cpu").double().numpy()
    u, sv, _ = np.linalg.svd(codes - codes.mean(axis=0), full_matrices=False)
    assert projection["index"] == list(range(16)) and projection["labelled"]
    assert projection["label"] == data.test.labels.tolist()
    assert projection["explained_variance_ratio"] == pytest.approx(
        (sv[:2] ** 2 / (sv ** 2).sum()).tolist(), rel=1e-4)
    for axis, key in enumerate(("x", "y")):  # a component's sign is arbitrary
        got, want = np.asarray(projection[key]), u[:, axis] * sv[axis]
        np.testing.assert_allclose(got, np.sign(got @ want) * want, rtol=1e-4,
                                   atol=1e-4 * np.abs(want).max())
