import numpy as np
import pytest

from sst_tf.sampling import neighborhoods


def _uneven_clusters(seed=0, d=8):
    """Clusters of very different sizes (some > B, many << B), as k-means gives."""
    rng = np.random.default_rng(seed)
    sizes = [130, 75, 41, 12, 9, 5, 3, 1, 60, 17]
    centres = rng.normal(scale=10.0, size=(len(sizes), d))
    clusters = np.repeat(np.arange(len(sizes)), sizes)
    x = centres[clusters] + rng.normal(size=(len(clusters), d))
    perm = rng.permutation(len(clusters))
    return x[perm], clusters[perm]


def _coverage_and_fill(groups, n, b):
    """(share of points in some group, mean group size / b), computed directly."""
    used = set()
    for g in groups:
        used.update(int(i) for i in g)
    return len(used) / n, sum(len(g) for g in groups) / (len(groups) * b)


def _spread(x, group):
    return ((x[group] - x[group].mean(0)) ** 2).sum(1).mean()


@pytest.mark.parametrize("b", [16, 32, 50, 118])
def test_balanced_is_a_partition_with_full_batches(b):
    x, clusters = _uneven_clusters()
    n = len(x)
    groups = neighborhoods.balanced_neighborhoods(x, clusters, b)
    flat = np.concatenate(groups)
    np.testing.assert_array_equal(np.sort(flat), np.arange(n))  # each image exactly once
    sizes = np.array([len(g) for g in groups])
    assert len(groups) == -(-n // b)
    assert (sizes == b).sum() >= len(groups) - 2 and sizes.max() <= b
    assert sizes.min() >= min(n, b // 2)
    coverage, fill = _coverage_and_fill(groups, n, b)
    assert coverage == 1.0 and fill == pytest.approx(n / (b * len(groups)))


def test_balanced_batches_are_local():
    x, clusters = _uneven_clusters(seed=1)
    b = 32
    groups = neighborhoods.balanced_neighborhoods(x, clusters, b)
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(x))
    random_groups = [perm[i:i + b] for i in range(0, len(x), b)]
    ours = np.mean([_spread(x, g) for g in groups])
    rand = np.mean([_spread(x, g) for g in random_groups])
    assert ours < 0.5 * rand
    # Every batch's members are nearer (on average) to their own centre than to
    # the centre of a random other batch.
    for i, g in enumerate(groups):
        j = (i + 1 + rng.integers(len(groups) - 1)) % len(groups)
        own = ((x[g] - x[g].mean(0)) ** 2).sum(1).mean()
        other = ((x[g] - x[groups[j]].mean(0)) ** 2).sum(1).mean()
        assert own < other


def test_original_rule_subsamples_and_keeps_small_clusters():
    x, clusters = _uneven_clusters()
    b = 50
    groups = neighborhoods.original_neighborhoods(clusters, b, np.random.default_rng(0))
    assert len(groups) == len(np.unique(clusters))
    for g in groups:
        assert len(np.unique(clusters[g])) == 1
        assert len(g) == min(b, (clusters == clusters[g[0]]).sum())
    coverage, fill = _coverage_and_fill(groups, len(x), b)
    n_kept = sum(min(b, (clusters == c).sum()) for c in np.unique(clusters))
    assert coverage == pytest.approx(n_kept / len(x)) and coverage < 1.0
    assert fill == pytest.approx(n_kept / (b * len(groups)))


def test_bad_arguments():
    x, clusters = _uneven_clusters()
    with pytest.raises(ValueError, match="neighborhoods"):
        neighborhoods.neighborhood_groups("greedy", x, clusters % 3, clusters, 8,
                                          np.random.default_rng(0))
    with pytest.raises(ValueError, match="clusters"):
        neighborhoods.neighborhood_groups("original", x, clusters % 3, None, 8,
                                          np.random.default_rng(0))
    with pytest.raises(ValueError, match="embeddings"):
        neighborhoods.balanced_neighborhoods(x[:5], clusters, 8)


@pytest.mark.parametrize("mode", ["classes", "mixed", "original", "balanced"])
def test_one_entry_point_matches_each_rule(mode):
    x, clusters = _uneven_clusters(seed=2)
    labels = clusters % 4
    kw = dict(members_per_class=5, local_share=0.5, min_classes=2)
    got = neighborhoods.neighborhood_groups(mode, x, labels, clusters, 20,
                                            np.random.default_rng(3), **kw)
    rng = np.random.default_rng(3)
    want = {
        "classes": lambda: neighborhoods.class_neighborhoods(x, labels, 20, 5, rng),
        "mixed": lambda: neighborhoods.mixed_neighborhoods(clusters, labels, 20, 0.5, 2, rng),
        "original": lambda: neighborhoods.original_neighborhoods(clusters, 20, rng),
        "balanced": lambda: neighborhoods.balanced_neighborhoods(x, clusters, 20),
    }[mode]()
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)
