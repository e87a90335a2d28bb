"""What the code knows: probes and clusters of a run's latent codes (scikit-learn).

The representation-learning measures of an encoder (Alain & Bengio 2016, linear probes;
the k-NN and clustering evaluations of self-supervised learning, e.g. Wu et al. 2018,
Caron et al. 2018), on the float code the encoder gives each image:

- ``probe_knn_accuracy``: k-NN (k = 20, Euclidean) fitted on training-split codes,
  top-1 accuracy on the test split's codes.
- ``probe_linear_accuracy``: a logistic-regression probe (codes standardised with the
  training codes' mean and std, L2, lbfgs) fitted on training codes, top-1 on test codes.
- ``cluster_nmi``: k-means (k = the number of classes) on the test codes, normalised mutual
  information of its clusters with the labels (arithmetic mean normalisation).

Each is None for an unlabelled set (labels −1), or one too small for it. The training codes
are at most :data:`PROBE_TRAIN_IMAGES` images of the training split, drawn with the seed.

And a picture of the same test codes: :func:`code_projection`, their first two principal
components (PCA), at most :data:`PROJECTION_POINTS` of them with their labels, which the run
page draws coloured by class.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from models.architectures import Autoencoder
from models.data import DataSplits

PROBE_K = 20  # neighbours of the k-NN probe
PROBE_TRAIN_IMAGES = 5_000  # training images whose codes fit the probes (speed)
PROJECTION_POINTS = 2_000  # test codes drawn in the PCA scatter (a page stays light)


def probe_codes(train_codes: np.ndarray, train_labels: np.ndarray, test_codes: np.ndarray,
                test_labels: np.ndarray, *, n_classes: int | None = None, seed: int = 0
                ) -> dict[str, float | None]:
    """The three measures on codes: ``train_codes`` (N, D) with ``train_labels`` (N,)
    fit the probes; ``test_codes`` (M, D) with ``test_labels`` (M,) are scored and
    clustered into ``n_classes`` (default: the classes the labels show). Labels are class
    ids, −1 for unlabelled. Returns ``probe_knn_accuracy``,
    ``probe_linear_accuracy`` and ``cluster_nmi`` (accuracies in [0, 1], NMI in [0, 1]),
    each None when the labels are missing (any −1), the training codes have fewer than 2
    classes, or the test codes are fewer than the classes (k-means)."""
    from sklearn.cluster import KMeans
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import normalized_mutual_info_score
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    out: dict[str, float | None] = {"probe_knn_accuracy": None,
                                    "probe_linear_accuracy": None, "cluster_nmi": None}
    if len(test_labels) == 0 or (train_labels < 0).any() or (test_labels < 0).any():
        return out
    train_codes = np.asarray(train_codes, dtype=np.float64)
    test_codes = np.asarray(test_codes, dtype=np.float64)
    if len(np.unique(train_labels)) >= 2:
        knn = KNeighborsClassifier(n_neighbors=min(PROBE_K, len(train_codes)))
        knn.fit(train_codes, train_labels)
        out["probe_knn_accuracy"] = float(knn.score(test_codes, test_labels))
        linear = make_pipeline(StandardScaler(),
                               LogisticRegression(max_iter=1000, random_state=seed))
        linear.fit(train_codes, train_labels)
        out["probe_linear_accuracy"] = float(linear.score(test_codes, test_labels))
    classes = n_classes or len(np.unique(np.concatenate([train_labels, test_labels])))
    if 2 <= classes <= len(test_codes):
        clusters = KMeans(n_clusters=classes, n_init=10, random_state=seed).fit_predict(
            test_codes)
        out["cluster_nmi"] = float(normalized_mutual_info_score(test_labels, clusters))
    return out


def code_projection(codes: np.ndarray, labels: np.ndarray, *, seed: int = 0,
                    limit: int = PROJECTION_POINTS) -> dict[str, Any]:
    """The first two principal components of ``codes`` (N, D), fitted on all N codes
    (``sklearn.decomposition.PCA``, centred, not whitened), and at most ``limit`` of the
    projected codes, drawn without replacement with ``seed`` (all of them when N ≤ limit),
    in test-set order. ``labels`` (N,) are class ids, −1 for unlabelled.

    Returns a JSON-ready dict: ``x``, ``y`` (the codes' coordinates on components 1 and 2,
    in code units), ``label`` and ``index`` (the test image's position) per point,
    ``explained_variance_ratio`` (the two components' shares of the codes' variance, in
    [0, 1]), ``codes`` (N) and ``labelled`` (False when any label is −1). ValueError for
    fewer than 2 codes or codes of fewer than 2 dimensions (no plane to draw)."""
    from sklearn.decomposition import PCA

    codes = np.asarray(codes, dtype=np.float64)
    labels = np.asarray(labels)
    if codes.ndim != 2 or len(codes) < 2 or codes.shape[1] < 2:
        raise ValueError(f"a 2-D projection needs at least 2 codes of at least 2 dimensions, "
                         f"got codes of shape {codes.shape}")
    pca = PCA(n_components=2, random_state=seed)
    plane = pca.fit_transform(codes)  # (N, 2)
    index = np.arange(len(codes))
    if len(codes) > limit:
        index = np.sort(np.random.default_rng(seed).choice(len(codes), limit, replace=False))
    return {"x": plane[index, 0].tolist(), "y": plane[index, 1].tolist(),
            "label": labels[index].astype(int).tolist(), "index": index.tolist(),
            "explained_variance_ratio": pca.explained_variance_ratio_.tolist(),
            "codes": len(codes), "labelled": bool(len(labels) and (labels >= 0).all())}


def latent_probes(model: Autoencoder, data: DataSplits, *, seed: int = 0,
                  device: torch.device | str | None = None,
                  quantised: Callable[[torch.Tensor], torch.Tensor] | None = None,
                  test_codes: torch.Tensor | None = None
                  ) -> tuple[dict[str, float | None], dict[str, Any] | None]:
    """:func:`probe_codes` on ``model``'s float codes (``models.quantize.encode_latents``)
    of at most :data:`PROBE_TRAIN_IMAGES` training images (drawn with ``seed``) and of
    every test image; with ``quantised`` (float codes (N, D) → the codes the decoder gets
    back from the stream, (N, D): ``models.compression.quantised_codes``), the same three
    measures of those codes too, named ``q_<measure>``; and the float test codes'
    :func:`code_projection` (drawn with ``seed``; None when there is no plane: fewer than
    2 test codes, or 1-D codes). ``test_codes`` (N, D), the float codes of ``data.test``
    already encoded (``models.compression.CompressionReport.codes``), spare encoding them
    again. Returns (the measures, the projection). ValueError when ``test_codes`` is not
    one code per test image."""
    from models.quantize import encode_latents

    train = data.train
    if len(train) > PROBE_TRAIN_IMAGES:
        pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
        train = train.subset(pick[:PROBE_TRAIN_IMAGES].sort().values)
    train_codes = encode_latents(model, train, device=device).numpy()
    if test_codes is None:
        test_codes = encode_latents(model, data.test, device=device)
    elif test_codes.ndim != 2 or len(test_codes) != len(data.test):
        raise ValueError(f"test_codes {tuple(test_codes.shape)} are not one code per test "
                         f"image ({len(data.test)})")
    codes = test_codes.numpy()  # (N, D)
    test_labels = data.test.labels.numpy()
    measures = probe_codes(train_codes, train.labels.numpy(), codes, test_labels,
                           n_classes=data.num_classes, seed=seed)
    if quantised is not None:
        q_measures = probe_codes(quantised(torch.from_numpy(train_codes)).numpy(),
                                 train.labels.numpy(),
                                 quantised(torch.from_numpy(codes)).numpy(),
                                 test_labels, n_classes=data.num_classes, seed=seed)
        measures.update({f"q_{name}": value for name, value in q_measures.items()})
    if len(codes) < 2 or codes.shape[1] < 2:
        return measures, None
    return measures, code_projection(codes, test_labels, seed=seed)
