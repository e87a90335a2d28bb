"""The factorized_prior variant (models.factorized_prior): its loss, its learned density,
its real bitstream, and rate falling with λ — trained on the offline synthetic set."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from models.architectures import Autoencoder
from models.compression import compress_run
from models.data import DataSplits, normalize, to_float
from models.factorized_prior import (
    STREAM_HEADER,
    EntropyBottleneck,
    FactorizedPriorAutoencoder,
    RateDistortionLoss,
    compress,
    compress_with_stats,
    decompress,
    decompress_symbols,
    latent_symbols,
    rate_bpp,
)
from models.training import TrainConfig, train
from tests.utils import REPO

LOW_LAMBDA, HIGH_LAMBDA = 1e-4, 0.0483  # far below, and the top of CompressAI's MSE grid


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def trained_model(splits: DataSplits, lmbda: float) -> FactorizedPriorAutoencoder:
    """The variant through the project's own trainer (TrainConfig → train)."""
    config = TrainConfig("factorized_prior", epochs=4, batch_size=16, lr=1e-2,
                         schedule="one_cycle", pretrained=False, augment=False, seed=0,
                         rd_lambda=lmbda)
    model = train(config, splits).model
    assert isinstance(model, FactorizedPriorAutoencoder)
    return model.eval()


@pytest.fixture(scope="module")
def trained(synthetic_splits) -> dict[float, FactorizedPriorAutoencoder]:
    return {lmbda: trained_model(synthetic_splits, lmbda) for lmbda in (LOW_LAMBDA,
                                                                          HIGH_LAMBDA)}


def test_rate_falls_as_lambda_falls_in_the_real_stream(trained, synthetic_splits) -> None:
    test = synthetic_splits.test
    bytes_per_image = {}
    for lmbda, model in trained.items():
        report = compress_run(model, synthetic_splits, dataset="synthetic", codecs=())
        stream = compress(model, test)
        assert report.stream == stream
        bytes_per_image[lmbda] = report.measures["bytes_per_image"]
        assert bytes_per_image[lmbda] == len(stream) / len(test)
        # The stream is close to the learned density's estimate of the same symbols.
        with torch.no_grad():
            lik = model.entropy_bottleneck.likelihood(latent_symbols(model, test).float())
        estimate = float(-torch.log2(lik).sum()) / 8 / len(test)
        assert abs(bytes_per_image[lmbda] - estimate) <= 0.02 * estimate + 16
    assert bytes_per_image[LOW_LAMBDA] < 0.9 * bytes_per_image[HIGH_LAMBDA], bytes_per_image


def test_bitstream_round_trips_and_decoded_images_are_the_measured_ones(
        trained, synthetic_splits) -> None:
    model = trained[HIGH_LAMBDA]
    test = synthetic_splits.test
    symbols = latent_symbols(model, test)
    stream, clamped = compress_with_stats(model, test)
    assert stream[:2] == b"FP" and STREAM_HEADER.unpack_from(stream)[2:] == (128, 1000)
    assert torch.equal(decompress_symbols(model.entropy_bottleneck, stream), symbols)
    assert clamped == 0
    images = decompress(model, stream)
    with torch.no_grad():  # the eval forward rounds the latent: it is the decoded image
        forward = model(normalize(to_float(test.images)))
    assert torch.equal(images, forward)
    report = compress_run(model, synthetic_splits, dataset="synthetic", codecs=())
    assert torch.equal(report.decoded, images)
    assert report.measures["q_mse"] == pytest.approx(
        float((images - to_float(test.images)).double().pow(2).mean()), rel=1e-9)
    assert report.measures["quant_bits"] is None and report.meta["coder"] == "factorized_prior"


def test_symbols_outside_the_tables_are_clamped_and_counted() -> None:
    torch.manual_seed(0)
    bottleneck = EntropyBottleneck(4).eval()
    from models.factorized_prior import compress_symbols

    tables = bottleneck.coding_tables()
    symbols = torch.zeros(3, 4, dtype=torch.int64)
    symbols[0, 1] = int(tables.upper[1]) + 5
    stream, clamped = compress_symbols(bottleneck, symbols, tables)
    decoded = decompress_symbols(bottleneck, stream)
    assert clamped == 1 and int(decoded[0, 1]) == int(tables.upper[1])
    assert torch.equal(decoded[1:], symbols[1:])


def test_noise_in_training_rounding_in_eval_and_resumable_noise() -> None:
    torch.manual_seed(0)
    bottleneck = EntropyBottleneck(8)
    z = torch.randn(32, 8) * 3
    z_tilde, lik = (t.detach() for t in bottleneck.train()(z))
    assert 0 < float((z_tilde - z).abs().max()) <= 0.5
    assert float(lik.min()) >= 1e-9 and float(lik.max()) <= 1
    copy = EntropyBottleneck(8)
    copy.load_state_dict(bottleneck.state_dict())  # noise counter travels with the state
    assert torch.equal(bottleneck(z)[0], copy.train()(z)[0])
    assert torch.equal(bottleneck.eval()(z)[0], torch.round(z))


class _NoHostRead(torch.Tensor):
    """A tensor that fails when read on the host (on CUDA such a read waits for the GPU)."""

    def __int__(self) -> int:
        raise AssertionError("a device value was read on the host")

    def item(self) -> float:
        raise AssertionError("a device value was read on the host")


def test_a_training_step_reads_no_device_value_and_keeps_the_counter() -> None:
    """On CUDA, reading the noise counter each step (``int()``, ``.item()``) would wait for
    the GPU's queue: a step uses host copies (refreshed when a state dict is loaded) and
    only writes the buffer, so the state dict still carries the count."""
    bottleneck = EntropyBottleneck(8).train()
    expected = EntropyBottleneck(8)
    expected.load_state_dict(bottleneck.state_dict())
    for name in ("noise_seed", "noise_step"):
        setattr(bottleneck, name,
                torch.Tensor._make_subclass(_NoHostRead, getattr(bottleneck, name)))
    z = torch.randn(4, 8)
    for _ in range(2):
        assert torch.equal(bottleneck(z)[0], expected.train()(z)[0])
    assert int(torch.Tensor(bottleneck.state_dict()["noise_step"])) == 2


def test_loss_is_rate_plus_lambda_distortion_of_the_last_forward() -> None:
    torch.manual_seed(0)
    model = FactorizedPriorAutoencoder(latent_dim=64)
    assert isinstance(model, Autoencoder)
    loss_fn = RateDistortionLoss(0.01)
    target = torch.rand(4, 3, 32, 32)
    out = model(normalize(target))
    with pytest.raises(RuntimeError, match="bind"):
        loss_fn(out, target)
    loss_fn.bind(model)
    loss = loss_fn(out, target)
    bpp = -torch.log2(model.last_likelihoods).sum() / (4 * 32 * 32)
    assert torch.allclose(loss, bpp + 0.01 * 255**2 * torch.nn.functional.mse_loss(out, target))
    assert torch.allclose(rate_bpp(model.last_likelihoods, 4 * 1024), bpp)
    loss.backward()
    assert model.entropy_bottleneck.matrices[0].grad is not None
    with pytest.raises(RuntimeError, match="last forward"):
        loss_fn(out[:2], target[:2])
    with pytest.raises(TypeError):
        RateDistortionLoss(0.01).bind(torch.nn.Linear(2, 2))


DECOMPRESS_IN_A_FRESH_PROCESS = textwrap.dedent("""
    import sys
    from pathlib import Path
    import torch
    from models.factorized_prior import FactorizedPriorAutoencoder, decompress

    folder = Path(sys.argv[1])
    torch.set_num_threads(int(sys.argv[2]))
    model = FactorizedPriorAutoencoder()
    model.load_state_dict(torch.load(folder / "model.pt"))
    model.eval()
    torch.save(decompress(model, (folder / "stream.bin").read_bytes()),
               folder / "images.pt")
""")


def test_a_fresh_process_decodes_the_stream(trained, synthetic_splits, tmp_path: Path
                                            ) -> None:
    model = trained[LOW_LAMBDA]
    torch.save(model.state_dict(), tmp_path / "model.pt")
    stream = compress(model, synthetic_splits.test)
    (tmp_path / "stream.bin").write_bytes(stream)
    subprocess.run([sys.executable, "-c", DECOMPRESS_IN_A_FRESH_PROCESS, str(tmp_path),
                    str(torch.get_num_threads())], cwd=REPO, check=True, timeout=300)
    assert torch.equal(torch.load(tmp_path / "images.pt"), decompress(model, stream))


@pytest.mark.parametrize("method", ["range_test", "fixed"])
def test_the_variant_runs_through_the_run_contract(method: str) -> None:
    """The one pipeline (preflight → phase 1 → LR search → training → evaluation) with a
    λ from the spec; evaluation codes its own bitstream and stores it."""
    from workers.context import RunEnv
    from workers.pipeline import LocalSteps, run_pipeline
    from workers.spec import RunSpec
    from workers.store import MemoryStore

    spec = RunSpec(model="factorized_prior", dataset="synthetic", rd_lambda=0.01, epochs=2,
                   batch_size=16, pretrained=False, data={"train_limit": 64, "test_limit": 16},
                   lr_search={"method": method, "range_test_steps": 10},
                   classifier={"enabled": False}, compression={"codecs": ["jpeg"]})
    store = MemoryStore()
    env = RunEnv(data_root="/unused", weights_dir="/unused", allow_download=False)
    assert run_pipeline(spec, store, LocalSteps(env)), store.error
    m = store.measures
    assert m is not None and m.rd_lambda == 0.01 and m.quant_bits is None
    assert m.bytes_per_image == len(store.artifacts["latents-test.bin"]) / 16
    assert [e.phase for e in store.epochs] == ["phase1", "phase2"]
    assert [c.codec for c in store.codecs if c.kind == "matched"] == ["jpeg"]
