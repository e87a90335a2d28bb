"""Quantisation, entropy coding and the measured bytes of a run (models.quantize,
models.entropy, models.compression) on real small data (the synthetic set)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from models.architectures import ConvAutoencoder
from models.compression import FIT_IMAGES, compress_run, latent_coder
from models.entropy import (
    HEADER,
    LatentEntropyModel,
    bits_per_pixel,
    native_format,
    read_header,
)
from models.metrics import measure_outputs
from models.quantize import (
    SUPPORTED_BITS,
    LatentQuantizer,
    decode_symbols,
    encode_latents,
)
from tests.utils import REPO


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """Small tensors on 2 shared cores: one thread is as fast, and the float rounding is
    the same in the fresh process (which is given the same count)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model() -> ConvAutoencoder:
    torch.manual_seed(0)
    return ConvAutoencoder(latent_dim=1000).eval()


@pytest.fixture(scope="module")
def latents(model, synthetic_splits) -> tuple[torch.Tensor, torch.Tensor]:
    """(256, 1000) training and (128, 1000) test latents of the baseline architecture."""
    return (encode_latents(model, synthetic_splits.train),
            encode_latents(model, synthetic_splits.test))


@pytest.mark.parametrize("bits", SUPPORTED_BITS)
def test_quantiser_levels_range_and_error(bits: int) -> None:
    torch.manual_seed(bits)
    z = torch.randn(2000, 16) * 2.5 + 0.3
    q = LatentQuantizer.fit(z, bits)
    levels = torch.arange(2**bits).view(-1, 1)
    assert torch.equal(q.quantize(q.dequantize(levels)), levels)  # every level is a fixpoint
    s = q.quantize(z)
    assert s.dtype == torch.int64 and int(s.min()) == 0 and int(s.max()) == 2**bits - 1
    top = q.offset + (2**bits - 1) * q.scale
    inside = (z >= q.offset) & (z <= top)
    err = (q.dequantize(s).double() - z.double()).abs()[inside]
    assert float(err.max()) <= q.scale / 2 * (1 + 1e-4) + 1e-6  # + float32 rounding of ẑ
    back = LatentQuantizer.from_dict(json.loads(json.dumps(q.as_dict())))
    assert back == q and q.side_info_bytes == 8


def test_quantiser_refuses_bad_input() -> None:
    for bits in (0, 5, 7, 32, True):
        with pytest.raises(ValueError, match="bits must be one of"):
            LatentQuantizer.fit(torch.randn(10, 2), bits)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NaN"):
        LatentQuantizer.fit(torch.tensor([[0.0, float("nan")]]), 8)
    q = LatentQuantizer.fit(torch.randn(100, 3), 4)
    with pytest.raises(ValueError, match=r"\[0, 15\]"):
        q.dequantize(torch.tensor([16]))


@pytest.mark.parametrize("bits", SUPPORTED_BITS)
def test_quantize_entropy_code_decode_round_trips_exactly(latents, bits: int) -> None:
    train_z, test_z = latents
    q = LatentQuantizer.fit(train_z, bits)  # training latents only
    em = LatentEntropyModel.fit(q.quantize(train_z), bits)
    symbols = q.quantize(test_z)
    coded = em.compress(symbols)
    assert torch.equal(em.decode(coded.stream), symbols)
    assert read_header(coded.stream)[1:] == (bits, 128, 1000)
    assert coded.bytes_per_image == len(coded.stream) / 128
    assert (len(coded.stream) - HEADER.size) % 4 == 0
    assert coded.side_info_bytes == 2 * 1000 * 4
    # The model matters: coding beats fixed-length symbols, and a 4× wider model costs more.
    assert len(coded.stream) < 128 * 1000 * bits / 8
    wide = LatentEntropyModel(bits, em.loc, em.scale * 4)
    assert len(wide.encode(symbols)) > len(coded.stream)
    assert torch.equal(wide.decode(wide.encode(symbols)), symbols)
    back = LatentEntropyModel.from_dict(json.loads(json.dumps(em.as_dict())))
    assert back.encode(symbols) == coded.stream


def test_streams_of_another_model_or_shape_are_refused(latents) -> None:
    train_z, _ = latents
    q = LatentQuantizer.fit(train_z, 8)
    em = LatentEntropyModel.fit(q.quantize(train_z), 8)
    stream = em.encode(q.quantize(train_z[:4]))
    with pytest.raises(ValueError, match="this model is"):
        LatentEntropyModel.fit(q.quantize(train_z[:, :10]), 8).decode(stream)
    with pytest.raises(ValueError, match="magic"):
        em.decode(b"XX" + stream[2:])
    with pytest.raises(ValueError, match="dimensions"):
        em.encode(q.quantize(train_z[:4, :10]))


def test_native_formats_and_bits_per_pixel() -> None:
    mnist, cifar = native_format("mnist"), native_format("cifar10")
    assert (mnist.pixels, mnist.raw_bytes) == (784, 784)
    assert (cifar.pixels, cifar.raw_bytes) == (1024, 3072)
    assert bits_per_pixel(98, mnist.hw) == 1.0
    assert bits_per_pixel(cifar.raw_bytes, cifar.hw) == 24.0
    with pytest.raises(KeyError, match="unknown dataset"):
        native_format("imagenet")


@pytest.fixture(scope="module")
def report(model, synthetic_splits):
    return compress_run(model, synthetic_splits, dataset="synthetic", bits=8, codecs=())


def test_measures_are_of_the_images_decoded_from_the_stream(model, synthetic_splits,
                                                            report) -> None:
    test = synthetic_splits.test
    m = report.measures
    assert m["bytes_per_image"] == len(report.stream) / len(test) == \
        report.meta["bytes_per_image"]
    assert m["stream_bytes"] == len(report.stream)
    assert m["bpp"] == 8 * m["bytes_per_image"] / 1024 and m["raw_bytes_per_image"] == 3072
    assert m["quant_bits"] == 8 and m["side_info_bytes"] == 8 + 8000
    again = measure_outputs(report.decoded, test)
    assert m["q_mse"] == again.mse and m["q_ssim"] == again.ssim
    # The coder was fitted on the training split, never the test one.
    q, em = latent_coder(model, synthetic_splits.train, 8)
    assert report.meta["quantizer"] == q.as_dict()
    assert report.meta["entropy_model"] == em.as_dict()
    assert report.meta["fit_images"] == min(len(synthetic_splits.train), FIT_IMAGES)
    symbols = q.quantize(encode_latents(model, test))
    assert torch.equal(report.decoded, decode_symbols(model, q, symbols))


DECODE_IN_A_FRESH_PROCESS = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import torch
    from models.compression import decode_stream
    from models.data import load_dataset
    from models.metrics import measure_outputs
    from models.recipes import build_model

    folder = Path(sys.argv[1])
    torch.set_num_threads(int(sys.argv[2]))
    saved = torch.load(folder / "model.pt")
    model = build_model(saved["model"], latent_dim=saved["latent_dim"], pretrained=False)
    model.load_state_dict(saved["state"])
    model.eval()
    meta = json.loads((folder / "compression.json").read_text())
    stream = (folder / meta["stream"]).read_bytes()
    images = decode_stream(model, meta, stream)
    test = load_dataset("synthetic", "/unused", train_limit=256, test_limit=128, seed=0).test
    m = measure_outputs(images, test)
    torch.save({"images": images, "q_mse": m.mse, "q_psnr": m.psnr, "q_ssim": m.ssim,
                "bytes_per_image": len(stream) / len(images)}, folder / "decoded.pt")
""")


def test_a_fresh_process_decodes_the_stored_stream_to_the_measured_images(
        model, report, tmp_path: Path) -> None:
    weights = io.BytesIO()
    torch.save({"model": "baseline", "latent_dim": 1000, "state": model.state_dict()},
               weights)
    (tmp_path / "model.pt").write_bytes(weights.getvalue())
    (tmp_path / "compression.json").write_text(json.dumps(report.meta))
    (tmp_path / report.meta["stream"]).write_bytes(report.stream)
    subprocess.run([sys.executable, "-c", DECODE_IN_A_FRESH_PROCESS, str(tmp_path),
                    str(torch.get_num_threads())], cwd=REPO, check=True, timeout=300)
    out = torch.load(tmp_path / "decoded.pt")
    assert torch.equal(out["images"], report.decoded)
    assert out["q_mse"] == report.measures["q_mse"]
    assert out["q_psnr"] == report.measures["q_psnr"]
    assert out["q_ssim"] == report.measures["q_ssim"]
    assert out["bytes_per_image"] == report.measures["bytes_per_image"]


def test_fewer_bits_cost_fewer_bytes_and_more_distortion(model, synthetic_splits) -> None:
    r4 = compress_run(model, synthetic_splits, dataset="synthetic", bits=4, codecs=())
    r16 = compress_run(model, synthetic_splits, dataset="synthetic", bits=16, codecs=())
    assert r4.measures["bytes_per_image"] < r16.measures["bytes_per_image"]
    # 16 bits: the decoded images are the float model's but for rounding (and the few
    # values beyond the 0.01 % quantiles, clamped to the end levels).
    with torch.no_grad():
        from models.data import normalize, to_float

        float_out = model(normalize(to_float(synthetic_splits.test.images)))
    assert float((r16.decoded - float_out).abs().mean()) < 1e-4
    assert float((r4.decoded - float_out).abs().mean()) > \
        float((r16.decoded - float_out).abs().mean())
    assert np.isfinite(r4.measures["q_psnr"])
