import numpy as np
import pytest

from sst_tf import kmeans


def _blobs(n_per=60, k=8, d=6, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=20.0, size=(k, d))
    y = np.repeat(np.arange(k), n_per)
    x = centres[y] + rng.normal(size=(len(y), d))
    return x.astype(np.float32), y


def _same_partition(a, b):
    # Two labelings define the same partition iff the pair (a, b) has as many
    # distinct values as a alone and as b alone.
    pairs = len(set(zip(a.tolist(), b.tolist(), strict=True)))
    return pairs == len(np.unique(a)) == len(np.unique(b))


def test_tf_kmeans_recovers_separated_blobs():
    x, y = _blobs()
    r = kmeans.tf_kmeans(x, 8, seed=1, chunk_size=100)  # several chunks
    assert _same_partition(r.labels, y)
    # Independent check of the returned inertia and centres.
    centres = np.stack([x[r.labels == c].mean(0) for c in range(8)])
    np.testing.assert_allclose(r.centers, centres, rtol=1e-4, atol=1e-4)
    brute = ((x[:, None, :] - r.centers[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(r.labels, brute.argmin(1))
    np.testing.assert_allclose(r.inertia, brute.min(1).sum(), rtol=1e-4)


def test_tf_kmeans_matches_sklearn_inertia_and_is_seeded():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(600, 8)).astype(np.float32)  # no structure: a hard case
    tf_r = kmeans.kmeans(x, 12, method="tf", seed=0)
    sk = kmeans.kmeans(x, 12, method="sklearn", seed=0)
    # Different local optima are fine; within 5% of scikit-learn's inertia.
    assert tf_r.inertia <= 1.05 * sk.inertia
    again = kmeans.kmeans(x, 12, method="tf", seed=0)
    np.testing.assert_array_equal(tf_r.labels, again.labels)


def test_tf_kmeans_random_init_and_bad_input():
    x, y = _blobs(k=3)
    r = kmeans.tf_kmeans(x, 3, init="random", seed=0)
    assert r.labels.shape == y.shape and set(np.unique(r.labels)) <= {0, 1, 2}
    with pytest.raises(ValueError, match="n_clusters"):
        kmeans.tf_kmeans(x, 0)
    with pytest.raises(ValueError, match="method"):
        kmeans.kmeans(x, 3, method="faiss")
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        kmeans.tf_kmeans(bad, 3)
