from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import torch

from models.architectures import ConvAutoencoder, PixelShuffleAutoencoder
from models.data import normalize, to_float
from models.quantize import (
    SUPPORTED_BITS,
    LatentQuantizer,
    check_symbols,
    decode_latents,
    decode_symbols,
    encode_latents,
    quantize_images,
)


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
    return ConvAutoencoder(latent_dim=1000)


@pytest.mark.parametrize("bits", SUPPORTED_BITS)
def test_every_level_round_trips_exactly(bits: int) -> None:
    q = LatentQuantizer.fit(torch.randn(500, 40), bits)
    levels = torch.arange(2**bits).view(-1, 1)
    assert torch.equal(q.quantize(q.dequantize(levels)), levels)
    assert q.levels == 2**bits and q.side_info_bytes == 8


@pytest.mark.parametrize("bits", SUPPORTED_BITS)
def test_symbols_stay_in_range_and_error_is_half_a_step(bits: int) -> None:
    z = torch.randn(2000, 16)
    q = LatentQuantizer.fit(z, bits)
    s = q.quantize(z)
    assert s.dtype == torch.int64 and s.shape == z.shape
    assert int(s.min()) == 0 and int(s.max()) == 2**bits - 1  # the tails are clamped
    top = q.offset + (2**bits - 1) * q.scale
    inside = (z >= q.offset) & (z <= top)
    err = (q.dequantize(s) - z).abs()
    assert float(err[inside].max()) <= q.scale / 2 * (1 + 1e-5) + 1e-7
    assert torch.equal(s[z < q.offset], torch.zeros_like(s[z < q.offset]))
    assert torch.equal(s[z > top], torch.full_like(s[z > top], 2**bits - 1))


def test_fit_uses_robust_quantiles_so_outliers_do_not_stretch_the_range() -> None:
    z = torch.linspace(-1.0, 1.0, 100_001).view(-1, 1)
    z[:5] = -1e6  # 0.005 % outliers
    z[-5:] = 1e6
    q = LatentQuantizer.fit(z, 8)
    assert q.offset == pytest.approx(-0.998, abs=1e-3)
    assert q.offset + 255 * q.scale == pytest.approx(0.998, abs=1e-3)
    assert q.quantize(torch.tensor([-1e6, 1e6])).tolist() == [0, 255]


def test_as_dict_round_trips_exactly_through_json() -> None:
    q = LatentQuantizer.fit(torch.randn(300, 10) * 3.7 + 1.1, 6)
    back = LatentQuantizer.from_dict(json.loads(json.dumps(q.as_dict())))
    assert back == q
    z = torch.randn(50, 10)
    assert torch.equal(back.quantize(z), q.quantize(z))


def test_constant_latents_and_invalid_arguments() -> None:
    q = LatentQuantizer.fit(torch.full((10, 3), 2.5), 4)
    assert q.scale == 1.0 and q.offset == 2.5
    assert q.quantize(torch.full((2, 3), 2.5)).sum() == 0
    for bits in (0, 5, 7, 32, True, 8.0):
        with pytest.raises(ValueError, match="bits must be one of"):
            LatentQuantizer.fit(torch.randn(10, 2), bits)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty"):
        LatentQuantizer.fit(torch.randn(10), 8)
    with pytest.raises(ValueError, match="NaN"):
        LatentQuantizer.fit(torch.tensor([[0.0, float("nan")]]), 8)
    with pytest.raises(ValueError, match="scale"):
        LatentQuantizer(bits=8, offset=0.0, scale=0.0)
    with pytest.raises(ValueError, match=r"\[0, 15\]"):
        q.dequantize(torch.tensor([16]))
    with pytest.raises(ValueError, match=r"\[0, 15\]"):
        check_symbols(torch.tensor([[0, 16]]), 4)
    with pytest.raises(ValueError, match="integer"):
        check_symbols(torch.tensor([[0.0]]), 4)


def test_latents_are_the_encoder_of_the_normalised_batch(model, synthetic_splits) -> None:
    images = synthetic_splits.test.images[:40]
    model.train()
    z = encode_latents(model, synthetic_splits.test.subset(slice(0, 40)), batch_size=16)
    assert model.training  # mode restored
    model.eval()
    with torch.no_grad():
        expected = model.encoder(normalize(to_float(images)))
    assert z.shape == (40, 1000) and z.dtype == torch.float32
    assert torch.allclose(z, expected, atol=1e-5)


def test_symbols_decode_to_clamped_32px_rgb(model, synthetic_splits) -> None:
    train_z = encode_latents(model, synthetic_splits.train)
    q = LatentQuantizer.fit(train_z, 8)
    symbols = quantize_images(model, q, synthetic_splits.test.images[:20])
    assert symbols.shape == (20, 1000) and 0 <= int(symbols.min()) <= int(symbols.max()) <= 255
    images = decode_symbols(model, q, symbols, batch_size=7)
    assert images.shape == (20, 3, 32, 32) and images.dtype == torch.float32
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    assert torch.equal(images, decode_latents(model, q.dequantize(symbols), batch_size=7))
    # Another batch size may change float rounding in the layers, nothing more.
    other = decode_latents(model, q.dequantize(symbols), batch_size=20)
    assert torch.allclose(images, other, atol=1e-5)


def test_grey_28px_images_and_other_architectures() -> None:
    torch.manual_seed(0)
    model = PixelShuffleAutoencoder(latent_dim=64)
    grey = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    z = encode_latents(model, grey)
    assert z.shape == (5, 64)
    assert decode_latents(model, z).shape == (5, 3, 32, 32)
    with pytest.raises(ValueError, match="uint8"):
        encode_latents(model, grey.float())
    with pytest.raises(ValueError, match=r"\(N, 64\)"):
        decode_latents(model, torch.zeros(5, 65))


def test_a_16px_decoder_is_refused(model) -> None:
    small = ConvAutoencoder(latent_dim=1000)
    small.set_output_size(16)
    with pytest.raises(ValueError, match="decoder output"):
        decode_latents(small, torch.zeros(2, 1000))
