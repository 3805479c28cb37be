import numpy as np
import pytest
from _clustered import gaussian_classes
from sklearn.cluster import kmeans_plusplus as sklearn_kmeans_plusplus

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


def _cost(x, centres):
    return float(((x[:, None, :] - centres[None]) ** 2).sum(-1).min(1).sum())


def test_kmeans_plusplus_distinct_points_and_cost_close_to_sklearn():
    x, _ = gaussian_classes(noise=2.0)
    ours, theirs = [], []
    for seed in range(3):
        centres, idx = kmeans.kmeans_plusplus(x, 100, seed=seed)
        assert len(np.unique(idx)) == 100  # distinct rows
        np.testing.assert_array_equal(centres, x[idx])
        ours.append(_cost(x, centres))
        theirs.append(_cost(x, sklearn_kmeans_plusplus(x, 100, random_state=seed)[0]))
    # Same greedy rule (2 + log k candidates): same cost up to the draw.
    assert np.mean(ours) == pytest.approx(np.mean(theirs), rel=0.03)
    # Plain k-means++ (one candidate) is measurably worse on this data.
    plain = [_cost(x, kmeans.kmeans_plusplus(x, 100, seed=s, n_local_trials=1)[0])
             for s in range(3)]
    assert np.mean(plain) > 1.03 * np.mean(ours)


def test_kmeans_plusplus_blocks_draw_from_the_current_d2():
    # Five points on a line; k=3 uses one pool of 3 proposals drawn from the D^2
    # of the first centre, so the third centre comes from the rejection step.
    x = np.array([[0.0], [0.5], [10.0], [10.5], [20.0]], np.float32)
    d = (x - x.T) ** 2
    exact, stale = {}, {}
    for i in range(5):
        d1 = d[i]
        for j in range(5):
            pj = d1[j] / d1.sum()
            d2 = np.minimum(d1, d[j])
            for m in range(5):
                if pj == 0 or m in (i, j):
                    continue
                key = frozenset((i, j, m))
                exact[key] = exact.get(key, 0.0) + pj * d2[m] / d2.sum() / 5
                # What a pool without the rejection step would draw.
                w = d1 * (np.arange(5) != j)
                stale[key] = stale.get(key, 0.0) + pj * w[m] / w.sum() / 5
    draws = 500
    seen = {}
    for seed in range(draws):
        key = frozenset(kmeans.kmeans_plusplus(x, 3, seed=seed, n_local_trials=1)[1].tolist())
        assert len(key) == 3
        seen[key] = seen.get(key, 0) + 1
    keys = set(exact) | set(seen)

    def tv(p, q):
        return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in keys)

    freq = {k: v / draws for k, v in seen.items()}
    assert tv(exact, stale) > 0.25  # the test can tell them apart
    assert tv(freq, exact) < 0.1, tv(freq, exact)


def test_chunked_equals_unchunked_and_seed_determinism():
    x, _ = gaussian_classes(n=300, classes=40, noise=2.0)
    one = kmeans.tf_kmeans(x, 40, seed=5, chunk_size=300)
    many = kmeans.tf_kmeans(x, 40, seed=5, chunk_size=7)
    default = kmeans.tf_kmeans(x, 40, seed=5)
    np.testing.assert_array_equal(one.labels, many.labels)
    np.testing.assert_array_equal(one.labels, default.labels)
    np.testing.assert_allclose(one.centers, many.centers, rtol=1e-5, atol=1e-6)
    assert one.n_iter == many.n_iter
    other = kmeans.tf_kmeans(x, 40, seed=6)
    assert not np.array_equal(one.labels, other.labels)


def test_empty_cluster_moves_to_the_farthest_point():
    x, y = _blobs(n_per=20, k=3)
    far = np.array([[500.0] * x.shape[1]], np.float32)  # a centre no point is near
    init = np.concatenate([x[[0, 20, 40]], far])
    x4 = np.concatenate([x, x[:1] + 100.0])  # one outlier, farthest from every centre
    r = kmeans.tf_kmeans(x4, 4, init=init)
    assert np.bincount(r.labels, minlength=4).min() >= 1  # no empty cluster at the end
    assert r.labels[-1] not in r.labels[:-1]  # the outlier has its own cluster
    np.testing.assert_allclose(r.centers[r.labels[-1]], x4[-1], atol=1e-4)
    assert _same_partition(r.labels[:-1], y)
    with pytest.raises(ValueError, match="init"):
        kmeans.tf_kmeans(x4, 4, init=init[:3])
