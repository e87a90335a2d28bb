"""What the code knows (models.probes): probes and clusters score a code by how much of the
label it holds."""

from __future__ import annotations

import numpy as np
import pytest

from models.probes import code_projection, probe_codes

CLASSES = 10


def _labels(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, CLASSES, size=n)


def test_codes_that_encode_the_label_score_one_and_random_codes_chance() -> None:
    rng = np.random.default_rng(0)
    train_y, test_y = _labels(600, rng), _labels(400, rng)
    # The label as a one-hot direction, scaled, plus noise in 6 more dimensions.
    def encode(y: np.ndarray) -> np.ndarray:
        return np.hstack([np.eye(CLASSES)[y] * 5.0, rng.normal(size=(len(y), 6)) * 0.3])

    perfect = probe_codes(encode(train_y), train_y, encode(test_y), test_y,
                          n_classes=CLASSES)
    assert perfect == {"probe_knn_accuracy": 1.0, "probe_linear_accuracy": 1.0,
                       "cluster_nmi": pytest.approx(1.0)}
    noise = probe_codes(rng.normal(size=(600, 16)), train_y, rng.normal(size=(400, 16)),
                        test_y, n_classes=CLASSES)
    # Chance is 0.1 (10 balanced classes); 400 test codes put 0.16 over 3 σ above it.
    assert noise["probe_knn_accuracy"] < 0.16 and noise["probe_linear_accuracy"] < 0.16
    assert noise["cluster_nmi"] < 0.05


def test_a_code_holding_half_the_classes_scores_half() -> None:
    """Codes that tell classes apart in pairs only ({0, 1}, {2, 3}, …): the probes can
    guess one of two, so about 0.5."""
    rng = np.random.default_rng(1)
    train_y, test_y = _labels(1000, rng), _labels(1000, rng)
    def encode(y: np.ndarray) -> np.ndarray:
        return np.eye(CLASSES // 2)[y // 2] * 5.0 + rng.normal(size=(len(y), 5)) * 0.3

    half = probe_codes(encode(train_y), train_y, encode(test_y), test_y, n_classes=CLASSES)
    assert half["probe_knn_accuracy"] == pytest.approx(0.5, abs=0.06)
    assert half["probe_linear_accuracy"] == pytest.approx(0.5, abs=0.06)


def test_unlabelled_or_too_few_images_give_none() -> None:
    rng = np.random.default_rng(2)
    codes = rng.normal(size=(50, 4))
    unlabelled = np.full(50, -1)
    assert probe_codes(codes, unlabelled, codes, unlabelled) == {
        "probe_knn_accuracy": None, "probe_linear_accuracy": None, "cluster_nmi": None}
    y = _labels(50, rng)
    few = probe_codes(codes, y, codes[:5], y[:5], n_classes=CLASSES)
    assert few["cluster_nmi"] is None and few["probe_knn_accuracy"] is not None


def _pca(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first two principal components by numpy's SVD: (N, 2) scores and the two
    components' shares of the variance."""
    centred = codes - codes.mean(axis=0)
    u, sv, _ = np.linalg.svd(centred, full_matrices=False)
    return u[:, :2] * sv[:2], sv[:2] ** 2 / (sv ** 2).sum()


def test_the_projection_is_the_codes_pca_on_at_most_limit_points_drawn_with_the_seed() -> None:
    rng = np.random.default_rng(3)
    y = _labels(300, rng)
    # Two strong directions (the label and a ramp) over noise in 30 dimensions.
    codes = rng.normal(size=(300, 30)) * 0.2
    codes[:, 0] += y * 2.0
    codes[:, 1] += np.linspace(-3, 3, 300)
    scores, ratio = _pca(codes)
    whole = code_projection(codes, y, seed=7)
    assert whole["index"] == list(range(300)) and whole["codes"] == 300 and whole["labelled"]
    assert whole["label"] == y.tolist()
    assert whole["explained_variance_ratio"] == pytest.approx(ratio.tolist(), rel=1e-6)
    for axis, key in enumerate(("x", "y")):  # a component's sign is arbitrary
        got = np.asarray(whole[key])
        sign = np.sign(got @ scores[:, axis])
        np.testing.assert_allclose(got, sign * scores[:, axis], rtol=1e-6, atol=1e-9)

    drawn = code_projection(codes, y, seed=7, limit=50)
    again = code_projection(codes, y, seed=7, limit=50)
    other = code_projection(codes, y, seed=8, limit=50)
    index = drawn["index"]
    assert len(index) == 50 == len(set(index)) and index == sorted(index)
    assert drawn == again and other["index"] != index
    assert drawn["x"] == pytest.approx([whole["x"][i] for i in index])  # fitted on all 300
    assert drawn["label"] == [int(y[i]) for i in index]


def test_unlabelled_codes_project_and_a_plane_needs_two_dimensions() -> None:
    rng = np.random.default_rng(4)
    out = code_projection(rng.normal(size=(20, 5)), np.full(20, -1))
    assert not out["labelled"] and set(out["label"]) == {-1} and len(out["x"]) == 20
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        code_projection(rng.normal(size=(20, 1)), np.zeros(20))


def test_the_quantised_twins_probe_the_codes_the_decoder_gets_back() -> None:
    """``quantised`` replaces the codes for the ``q_`` measures only: a quantiser that
    erases every code leaves no cluster to find (NMI 0) while the float codes keep theirs,
    and without one there are no ``q_`` measures."""
    import torch

    from models.data import load_dataset
    from models.probes import latent_probes
    from models.recipes import build_model

    torch.manual_seed(0)
    model = build_model("baseline", latent_dim=8, pretrained=False)
    data = load_dataset("synthetic", "/unused", train_limit=64, test_limit=40, seed=0)
    plain, _ = latent_probes(model, data, seed=0)
    assert not any(name.startswith("q_") for name in plain)
    both, _ = latent_probes(model, data, seed=0, quantised=torch.zeros_like)
    assert {k: v for k, v in both.items() if not k.startswith("q_")} == plain
    assert plain["cluster_nmi"] > 0.05 and both["q_cluster_nmi"] == pytest.approx(0.0)
    zeros_train, zeros_test = np.zeros((len(data.train), 8)), np.zeros((len(data.test), 8))
    expected = probe_codes(zeros_train, data.train.labels.numpy(), zeros_test,
                           data.test.labels.numpy(), n_classes=data.num_classes, seed=0)
    assert {f"q_{k}": v for k, v in expected.items()} == \
        {k: v for k, v in both.items() if k.startswith("q_")}
