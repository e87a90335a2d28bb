from __future__ import annotations

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
from models.entropy import (
    HEADER,
    FactorizedLatentModel,
    LatentStream,
    bits_per_pixel,
    native_format,
    read_header,
    zstd_decode,
    zstd_encode,
)
from models.quantize import (
    SUPPORTED_BITS,
    LatentQuantizer,
    decode_symbols,
    encode_latents,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """Small tensors: one thread is as fast and avoids OpenMP oversubscription when the
    machine's cores are shared (two spinning threads can be 10–30× slower)."""
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
    """Baseline-architecture latents: (256, 1000) training, (128, 1000) test."""
    return encode_latents(model, synthetic_splits.train), encode_latents(model,
                                                                         synthetic_splits.test)


def coded(latents, bits: int, **kw) -> tuple[LatentQuantizer, FactorizedLatentModel,
                                              torch.Tensor]:
    train_z, test_z = latents
    q = LatentQuantizer.fit(train_z, bits)  # training latents only
    em = FactorizedLatentModel.fit(q.quantize(train_z), bits, **kw)
    return q, em, q.quantize(test_z)


@pytest.mark.parametrize("family", ["gaussian", "laplace"])
@pytest.mark.parametrize("bits", SUPPORTED_BITS)
def test_quantize_code_decode_round_trips_exactly(latents, bits: int, family: str) -> None:
    _, em, symbols = coded(latents, bits, family=family)
    result = em.compress(symbols)
    assert torch.equal(em.decode(result.stream), symbols)
    n, d = symbols.shape
    assert result.n_images == n == 128
    assert result.stream_bytes == len(result.stream)
    assert result.bytes_per_image == len(result.stream) / n  # exact, header included
    assert (result.stream_bytes - HEADER.size) % 4 == 0
    assert read_header(result.stream)[1:] == (bits, n, d)
    # side info is the per-dimension model, reported apart: D locations + D scales, float32
    assert result.side_info_bytes == em.side_info_bytes == 2 * d * 4
    # the ANS payload is within 1 % (+ 8 bytes of coder state) of the model's ideal length
    # (constriction's fixed-point model differs slightly from the float density)
    payload_bits = 8 * (result.stream_bytes - HEADER.size)
    ideal = em.ideal_bits(symbols)
    assert ideal * 0.99 <= payload_bits <= ideal * 1.01 + 64
    assert result.stream_bytes < n * d * bits / 8  # entropy coding beats fixed-length


def test_float16_side_info_is_half_and_still_exact(latents) -> None:
    _, em32, symbols = coded(latents, 8)
    _, em16, _ = coded(latents, 8, param_dtype="float16")
    assert em16.side_info_bytes == 2 * 1000 * 2 == em32.side_info_bytes // 2
    assert em16.loc.dtype == np.float16
    assert torch.equal(em16.decode(em16.encode(symbols)), symbols)


def test_models_round_trip_through_json_and_refuse_other_streams(latents) -> None:
    _, em, symbols = coded(latents, 6, family="laplace", param_dtype="float16")
    back = FactorizedLatentModel.from_dict(json.loads(json.dumps(em.as_dict())))
    assert back.family == "laplace" and back.param_dtype == "float16"
    assert np.array_equal(back.loc, em.loc) and np.array_equal(back.scale, em.scale)
    stream = em.encode(symbols)
    assert back.encode(symbols) == stream
    assert torch.equal(back.decode(stream), symbols)
    _, other, _ = coded(latents, 8)
    with pytest.raises(ValueError, match="this model is"):
        other.decode(stream)
    with pytest.raises(ValueError, match="magic"):
        em.decode(b"XX" + stream[2:])
    with pytest.raises(ValueError, match="shorter"):
        em.decode(stream[:5])
    with pytest.raises(ValueError, match=r"\[0, 63\]"):
        em.encode(symbols + 64)
    with pytest.raises(ValueError, match="dimensions"):
        em.encode(symbols[:, :10])


def test_a_wider_model_costs_more_bits(latents) -> None:
    _, em, symbols = coded(latents, 8)
    wide = FactorizedLatentModel(8, "gaussian", em.loc, em.scale.astype(np.float64) * 4)
    assert len(wide.encode(symbols)) > len(em.encode(symbols))


def test_native_formats_and_bits_per_pixel() -> None:
    mnist, cifar, synth = (native_format(n) for n in ("mnist", "cifar10", "synthetic"))
    assert (mnist.channels, mnist.hw, mnist.pixels, mnist.raw_bytes) == (1, (28, 28), 784, 784)
    assert (cifar.channels, cifar.hw, cifar.pixels, cifar.raw_bytes) == (3, (32, 32), 1024, 3072)
    assert (synth.hw, synth.raw_bytes) == ((32, 32), 3072)
    assert bits_per_pixel(98, mnist.hw) == 1.0
    assert bits_per_pixel(128, cifar.hw) == 1.0
    assert bits_per_pixel(cifar.raw_bytes, cifar.hw) == 24.0  # raw RGB: 24 bpp
    assert bits_per_pixel(mnist.raw_bytes, mnist.hw) == 8.0  # raw grey: 8 bpp
    assert LatentStream(b"x" * 300, 3, 0).bits_per_pixel(cifar.hw) == 8 * 100 / 1024
    with pytest.raises(KeyError, match="unknown dataset"):
        native_format("imagenet")
    with pytest.raises(ValueError):
        bits_per_pixel(1.0, (0, 32))


@pytest.mark.parametrize("bits", [4, 16])
def test_zstd_reference_round_trips(latents, bits: int) -> None:
    pytest.importorskip("zstandard", reason="the optional zstd reference needs zstandard")
    _, _, symbols = coded(latents, bits)
    stream = zstd_encode(symbols, bits)
    assert torch.equal(zstd_decode(stream), symbols)
    assert read_header(stream)[1:] == (bits, 128, 1000)


DECODE_IN_A_FRESH_PROCESS = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import torch
    from models.architectures import ConvAutoencoder
    from models.entropy import FactorizedLatentModel
    from models.quantize import LatentQuantizer, decode_symbols

    folder = Path(sys.argv[1])
    torch.set_num_threads(int(sys.argv[3]))  # as the parent: same float rounding
    model = ConvAutoencoder(latent_dim=1000)
    model.load_state_dict(torch.load(folder / "model.pt"))
    out = {}
    for bits in json.loads(sys.argv[2]):
        meta = json.loads((folder / f"{bits}.json").read_text())
        em = FactorizedLatentModel.from_dict(meta["entropy"])
        q = LatentQuantizer.from_dict(meta["quantizer"])
        symbols = em.decode((folder / f"{bits}.bin").read_bytes())
        out[bits] = (symbols, decode_symbols(model, q, symbols, batch_size=64))
    torch.save(out, folder / "decoded.pt")
""")


def test_a_fresh_process_decodes_the_same_symbols_and_images(model, latents,
                                                             tmp_path: Path) -> None:
    torch.save(model.state_dict(), tmp_path / "model.pt")
    expected = {}
    for bits in SUPPORTED_BITS:
        q, em, symbols = coded(latents, bits)
        (tmp_path / f"{bits}.bin").write_bytes(em.encode(symbols))
        (tmp_path / f"{bits}.json").write_text(json.dumps(
            {"entropy": em.as_dict(), "quantizer": q.as_dict()}))
        expected[bits] = (symbols, decode_symbols(model, q, symbols, batch_size=64))
    subprocess.run([sys.executable, "-c", DECODE_IN_A_FRESH_PROCESS, str(tmp_path),
                    json.dumps(list(SUPPORTED_BITS)), str(torch.get_num_threads())],
                   cwd=REPO, check=True, timeout=120)
    decoded = torch.load(tmp_path / "decoded.pt")
    for bits in SUPPORTED_BITS:
        symbols, images = decoded[bits]
        assert torch.equal(symbols, expected[bits][0]), bits
        assert torch.equal(images, expected[bits][1]), bits
        assert images.shape == (128, 3, 32, 32)
