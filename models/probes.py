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
"""

from __future__ import annotations

import numpy as np
import torch

from models.architectures import Autoencoder
from models.data import DataSplits

PROBE_K = 20  # neighbours of the k-NN probe
PROBE_TRAIN_IMAGES = 5_000  # training images whose codes fit the probes (speed)


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


def latent_probes(model: Autoencoder, data: DataSplits, *, seed: int = 0,
                  device: torch.device | str | None = None) -> dict[str, float | None]:
    """:func:`probe_codes` on ``model``'s float codes (``models.quantize.encode_latents``)
    of at most :data:`PROBE_TRAIN_IMAGES` training images (drawn with ``seed``) and of
    every test image."""
    from models.quantize import encode_latents

    train = data.train
    if len(train) > PROBE_TRAIN_IMAGES:
        pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
        train = train.subset(pick[:PROBE_TRAIN_IMAGES].sort().values)
    train_codes = encode_latents(model, train, device=device).numpy()
    test_codes = encode_latents(model, data.test, device=device).numpy()
    return probe_codes(train_codes, train.labels.numpy(), test_codes,
                       data.test.labels.numpy(), n_classes=data.num_classes, seed=seed)
