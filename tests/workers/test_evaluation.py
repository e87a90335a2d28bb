"""A run's evaluation (workers.pipeline.evaluate_run) encodes its test images into codes
once: the stream and the probes read the same codes."""

from __future__ import annotations

import pytest
import torch


@pytest.mark.parametrize("variant", ["baseline", "factorized_prior"])
def test_the_test_codes_are_encoded_once_for_the_stream_and_the_probes(variant: str
                                                                      ) -> None:
    """Every call of the encoder outside a full forward (a forward reconstructs, it does
    not make codes) is recorded; the test split goes through it exactly once, and the
    probes measure the codes the stream was made of."""
    from models.data import load_dataset, normalize, to_float
    from models.recipes import build_model
    from models.training import TrainResult
    from workers.pipeline import evaluate_run
    from workers.spec import RunSpec

    torch.manual_seed(0)
    spec = RunSpec(model=variant, dataset="synthetic", latent_dim=8, epochs=1, batch_size=16,
                   pretrained=False, data={"train_limit": 32, "test_limit": 24},
                   classifier={"enabled": False}, compression={"codecs": []})
    data = load_dataset("synthetic", "/unused", train_limit=32, test_limit=24, seed=0)
    model = build_model(variant, latent_dim=8, pretrained=False)
    forward, inside = model.forward, [False]

    def marked_forward(x: torch.Tensor) -> torch.Tensor:
        inside[0] = True
        try:
            return forward(x)
        finally:
            inside[0] = False

    model.forward = marked_forward  # type: ignore[method-assign]
    encoded: list[torch.Tensor] = []
    model.encoder.register_forward_hook(
        lambda _m, args, _out: None if inside[0] else encoded.append(args[0].detach()))
    evaluation = evaluate_run(spec, TrainResult(model, [], 1.0), data, None, None)
    test_inputs = normalize(to_float(data.test.images, 32))
    assert sum(torch.equal(x, test_inputs) for x in encoded) == 1
    from models.probes import probe_codes
    from models.quantize import encode_latents

    codes = evaluation.compression.codes
    assert torch.equal(codes, encode_latents(model, data.test))
    m = evaluation.measures
    train_codes = encode_latents(model, data.train).numpy()
    expected = probe_codes(train_codes, data.train.labels.numpy(), codes.numpy(),
                           data.test.labels.numpy(), n_classes=data.num_classes, seed=0)
    assert (m.probe_knn_accuracy, m.probe_linear_accuracy, m.cluster_nmi) == (
        expected["probe_knn_accuracy"], expected["probe_linear_accuracy"],
        expected["cluster_nmi"])
