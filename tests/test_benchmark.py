"""scripts/benchmarks/nmi.py: the faiss competitor of section nmi_sop, on tiny clustered data."""

import numpy as np
import pytest
from _clustered import gaussian_classes
from _scripts import load_script
from sklearn.metrics import normalized_mutual_info_score

from sst_tf import kmeans

pytest.importorskip("faiss")
load_script("benchmark")  # puts scripts/ on the path
from benchmarks import nmi as BENCH  # noqa: E402


def test_faiss_from_our_seeding_matches_tf_kmeans_nmi_and_is_seeded():
    x, y = gaussian_classes()
    k = len(np.unique(y))
    nmi = {"tf": [], "faiss": []}
    for seed in range(2):
        nmi["tf"].append(normalized_mutual_info_score(
            y, kmeans.tf_kmeans(x, k, seed=seed, max_iter=300).labels))
        labels, inertia, _ = BENCH._faiss_kmeans(x, k, seed, "faiss (our k-means++)")
        nmi["faiss"].append(normalized_mutual_info_score(y, labels))
        again = BENCH._faiss_kmeans(x, k, seed, "faiss (our k-means++)")
        np.testing.assert_array_equal(again[0], labels)  # deterministic for a seed
        assert again[1] == inertia
    assert 0.8 < np.mean(nmi["tf"]) < 0.97  # not a trivially perfect clustering
    assert np.mean(nmi["faiss"]) == pytest.approx(np.mean(nmi["tf"]), abs=0.02)


def test_faiss_variants_return_nearest_centre_labels():
    x, y = gaussian_classes(n=300, classes=30)
    for variant in BENCH.NMI_SOP_VARIANTS[1:]:
        labels, inertia, n_iter = BENCH._faiss_kmeans(x, 30, 0, variant)
        assert labels.shape == y.shape and 0 <= labels.min() and labels.max() < 30
        centres = np.stack([x[labels == c].mean(0) for c in np.unique(labels)])
        # The inertia is the labels' squared distances to their centres (float64 check
        # against the cluster means holds once faiss has converged; bound it from below).
        sq = ((x - centres[np.searchsorted(np.unique(labels), labels)]) ** 2).sum()
        assert inertia >= sq * (1 - 1e-4) and n_iter >= 1
