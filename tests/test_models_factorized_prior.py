from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from models.architectures import Autoencoder
from models.data import DataSplits, batch_indices, normalize, to_float
from models.factorized_prior import (
    PMF_PRECISION_BITS,
    STREAM_HEADER,
    EntropyBottleneck,
    FactorizedPriorAutoencoder,
    RateDistortionLoss,
    build_factorized_prior,
    compress,
    compress_symbols,
    decompress,
    decompress_symbols,
    latent_symbols,
    measure_compression,
    rate_bpp,
)

REPO = Path(__file__).resolve().parents[1]
LOW_LAMBDA, HIGH_LAMBDA = 0.0018, 0.0483  # CompressAI's scale: the ends of a typical grid


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """Small tensors: one thread is as fast and avoids OpenMP oversubscription when the
    machine's cores are shared (two spinning threads can be 10–30× slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def train(splits: DataSplits, lmbda: float, *, epochs: int = 4, batch_size: int = 16,
          lr: float = 1e-2, seed: int = 0) -> FactorizedPriorAutoencoder:
    """A short run in the style of models.training.TrainingSession.step: the loss is
    called with the model's output and the target only."""
    torch.manual_seed(seed)
    model = build_factorized_prior()
    loss_fn = RateDistortionLoss(lmbda).bind(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99),
                                  weight_decay=0.01)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in batch_indices(len(splits.train), batch_size, shuffle=True, drop_last=True,
                                 generator=generator):
            target = to_float(splits.train.images[idx])
            out = model(normalize(target))
            loss = loss_fn(out.float(), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def trained(synthetic_splits) -> dict[float, FactorizedPriorAutoencoder]:
    return {lmbda: train(synthetic_splits, lmbda) for lmbda in (LOW_LAMBDA, HIGH_LAMBDA)}


def test_rate_falls_as_lambda_falls_in_the_real_stream(trained, synthetic_splits) -> None:
    test = synthetic_splits.test
    bpp = {}
    for lmbda, model in trained.items():
        stream = compress(model, test)
        bpp[lmbda] = 8 * len(stream) / (len(test) * 32 * 32)  # synthetic: 32 × 32 native
        measures, _ = measure_compression(model, test)
        assert measures.stream_bytes == len(stream)
        assert measures.bpp == bpp[lmbda]
        # the stream is within 1 % of the learned density's estimate (integer tables,
        # header and coder state make the difference)
        assert abs(measures.bpp - measures.estimated_bpp) <= 0.01 * measures.estimated_bpp
    assert bpp[LOW_LAMBDA] < 0.9 * bpp[HIGH_LAMBDA], bpp


def test_compress_decompress_round_trip_is_exact(trained, synthetic_splits) -> None:
    model = trained[HIGH_LAMBDA]
    test = synthetic_splits.test
    symbols = latent_symbols(model, test)
    stream = compress(model, test)
    assert stream[:2] == b"FP" and STREAM_HEADER.unpack_from(stream)[2:] == (128, 1000)
    assert torch.equal(decompress_symbols(model.entropy_bottleneck, stream), symbols)
    images = decompress(model, stream)
    assert images.shape == (128, 3, 32, 32)
    with torch.no_grad():  # eval forward rounds the latent: it is the decoded image
        forward = model(normalize(to_float(test.images)))
    assert torch.equal(images, forward)
    measures, reconstructions = measure_compression(model, test)
    assert torch.equal(reconstructions, images)
    assert measures.mse == pytest.approx(
        float((images.double() - to_float(test.images).double()).pow(2).mean()), rel=1e-12)


def test_escaped_symbols_round_trip_exactly() -> None:
    torch.manual_seed(0)
    bottleneck = EntropyBottleneck(6).eval()
    tables = bottleneck.coding_tables()
    symbols = torch.randint(-3, 4, (50, 6))
    symbols[0] = torch.tensor([2**31 - 1, -(2**31), 10**6, -(10**6), 5000, 0])
    symbols[7, 2] = int(tables.lower[2]) - 1  # one below the table
    symbols[9, 3] = int(tables.lower[3] + tables.table_symbols[3])  # one above it
    stream = compress_symbols(bottleneck, symbols, tables)
    assert torch.equal(decompress_symbols(bottleneck, stream), symbols)
    with pytest.raises(ValueError, match="int32"):
        compress_symbols(bottleneck, torch.full((1, 6), 2**31))
    with pytest.raises(ValueError, match="dimensions"):
        decompress_symbols(EntropyBottleneck(5), stream)


def test_tables_are_the_learned_density(trained) -> None:
    bottleneck = trained[LOW_LAMBDA].entropy_bottleneck
    tables = bottleneck.coding_tables()
    assert len(tables.counts) == 1000 and tables.lower.shape == (1000,)
    for d in (0, 499, 999):
        counts = tables.counts[d]
        total = counts.sum()
        assert abs(total - 2**PMF_PRECISION_BITS) <= len(counts)  # rounding, ≥ 1 each
        s = torch.arange(int(tables.lower[d]), int(tables.lower[d]) + len(counts) - 1)
        z = torch.zeros(len(s), 1000)
        z[:, d] = s.float()
        with torch.no_grad():
            lik = bottleneck.likelihood(z)[:, d].double()
        table_p = torch.from_numpy(counts[:-1]) / 2**PMF_PRECISION_BITS
        assert torch.allclose(table_p, lik, atol=2e-6)


def test_bottleneck_noise_in_training_and_rounding_in_eval() -> None:
    torch.manual_seed(0)
    bottleneck = EntropyBottleneck(8)
    z = torch.randn(32, 8) * 3
    bottleneck.train()
    z_tilde, lik = (t.detach() for t in bottleneck(z))
    assert 0 < float((z_tilde - z).abs().max()) <= 0.5
    assert lik.shape == (32, 8) and float(lik.min()) >= 1e-9 and float(lik.max()) <= 1
    # the noise is a function of the state dict: a restored copy draws the same noise
    copy = EntropyBottleneck(8)
    copy.load_state_dict(bottleneck.state_dict())
    assert torch.equal(bottleneck(z)[0], copy.train()(z)[0])
    bottleneck.eval()
    z_hat, _ = bottleneck(z)
    assert torch.equal(z_hat, torch.round(z))


def test_model_is_an_autoencoder_and_its_loss_reads_the_last_forward() -> None:
    torch.manual_seed(0)
    model = build_factorized_prior(latent_dim=64)
    assert isinstance(model, Autoencoder) and model.latent_dim == 64
    loss_fn = RateDistortionLoss(0.01)
    assert list(loss_fn.modules()) == [loss_fn] and not loss_fn.state_dict()
    target = torch.rand(4, 3, 32, 32)
    out = model(normalize(target))
    assert out.shape == (4, 3, 32, 32)
    assert 0 <= float(out.detach().min()) <= float(out.detach().max()) <= 1
    assert model.last_likelihoods is not None and model.last_likelihoods.shape == (4, 64)
    with pytest.raises(RuntimeError, match="bind"):
        loss_fn(out, target)
    loss_fn.bind(model)
    loss = loss_fn(out, target)
    expected_bpp = -torch.log2(model.last_likelihoods).sum() / (4 * 32 * 32)
    expected = expected_bpp + 0.01 * 255**2 * torch.nn.functional.mse_loss(out, target)
    assert torch.allclose(loss, expected)
    assert torch.allclose(rate_bpp(model.last_likelihoods, 4 * 32 * 32), expected_bpp)
    loss.backward()
    assert model.encoder[0][0].weight.grad is not None
    assert model.entropy_bottleneck.matrices[0].grad is not None
    with pytest.raises(RuntimeError, match="last forward"):
        loss_fn(out[:2], target[:2])
    assert RateDistortionLoss(0.01, model).lmbda == 0.01
    with pytest.raises(TypeError):
        RateDistortionLoss(0.01).bind(torch.nn.Linear(2, 2))  # type: ignore[arg-type]


DECOMPRESS_IN_A_FRESH_PROCESS = textwrap.dedent("""
    import sys
    from pathlib import Path
    import torch
    from models.factorized_prior import build_factorized_prior, decompress_symbols

    folder = Path(sys.argv[1])
    torch.set_num_threads(int(sys.argv[2]))
    model = build_factorized_prior()
    model.load_state_dict(torch.load(folder / "model.pt"))
    symbols = decompress_symbols(model.entropy_bottleneck, (folder / "stream.bin").read_bytes())
    torch.save(symbols, folder / "symbols.pt")
""")


def test_a_fresh_process_decodes_the_stream(trained, synthetic_splits, tmp_path: Path) -> None:
    model = trained[LOW_LAMBDA]
    torch.save(model.state_dict(), tmp_path / "model.pt")
    (tmp_path / "stream.bin").write_bytes(compress(model, synthetic_splits.test))
    subprocess.run([sys.executable, "-c", DECOMPRESS_IN_A_FRESH_PROCESS, str(tmp_path),
                    str(torch.get_num_threads())], cwd=REPO, check=True, timeout=120)
    decoded = torch.load(tmp_path / "symbols.pt")
    assert torch.equal(decoded, latent_symbols(model, synthetic_splits.test))
    assert math.isfinite(float(decoded.float().abs().max()))
