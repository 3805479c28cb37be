import numpy as np
import pytest

from sst_tf import sampling


def _data(n=230, classes=6, d=8, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    # Class-dependent centres plus noise, so k-means clusters mix classes a bit.
    centres = rng.normal(size=(classes, d)) * 2.0
    emb = (centres[labels] + rng.normal(size=(n, d))).astype(np.float32)
    return emb, labels


def _brute_targets(emb, labels, mask, k):
    """Per valid row: the k nearest other valid same-class rows, ties -> lower index."""
    b = len(labels)
    out = np.full((b, k), -1, np.int64)
    for a in range(b):
        if not mask[a]:
            continue
        cands = [j for j in range(b) if j != a and mask[j] and labels[j] == labels[a]]
        dists = [float(((emb[a].astype(np.float64) - emb[j]) ** 2).sum()) for j in cands]
        order = sorted(range(len(cands)), key=lambda i: (dists[i], cands[i]))
        for slot, i in enumerate(order[:k]):
            out[a, slot] = cands[i]
    return out


def _triplets(labels, targets, mask):
    """Explicit (a, t, i) triplets of one batch, imposters = valid other-class rows."""
    out = []
    for a in range(len(labels)):
        if not mask[a]:
            continue
        for t in targets[a]:
            if t < 0:
                continue
            for i in range(len(labels)):
                if mask[i] and labels[i] != labels[a]:
                    out.append((a, int(t), i))
    return out


@pytest.mark.parametrize("name", ["local", "random"])
def test_plan_invariants(name):
    emb, labels = _data()
    b, k = 32, 3
    s = sampling.make_sampler(name, labels, b, num_targets=k, seed=3, drop_empty=False)
    s.refresh(emb, epoch=0)
    plan = s.plan(0)
    assert plan.indices.shape == (plan.num_batches, b)
    assert plan.targets.shape == (plan.num_batches, b, k)
    assert plan.mask.shape == (plan.num_batches, b)
    seen = []
    for row, tgt, mask in zip(plan.indices, plan.targets, plan.mask, strict=True):
        assert mask.any()
        # Valid rows first, padding rows after; padding repeats real members.
        n = int(mask.sum())
        assert mask[:n].all() and not mask[n:].any()
        assert set(row[n:]) <= set(row[:n])
        y = labels[row]
        for a in range(b):
            for t in tgt[a]:
                if t < 0:
                    continue
                assert mask[a], "a padding row has targets"
                assert mask[t], "a target is a padding row"
                assert t != a, "an anchor is its own target"
                assert y[t] == y[a], "a target has another class"
        # Targets are the nearest same-class members by the refreshed embeddings.
        np.testing.assert_array_equal(tgt, _brute_targets(emb[row], y, mask, k))
        # The triplet check used for statistics agrees with explicit enumeration.
        assert sampling.batch_has_triplet(y, tgt, mask) == bool(_triplets(y, tgt, mask))
        for a, _, i in _triplets(y, tgt, mask):
            assert y[i] != y[a] and mask[i]
        seen.extend(row[:n].tolist())
    # An image appears at most once per epoch.
    assert len(seen) == len(set(seen))


@pytest.mark.parametrize("name", ["local", "random"])
def test_statistics_match_direct_count(name):
    emb, labels = _data(seed=1)
    b = 40
    s = sampling.make_sampler(name, labels, b, num_targets=2, seed=0, drop_empty=False)
    s.refresh(emb)
    plan = s.plan(0)
    used = set()
    fill, classes, empty = [], [], 0
    for row, tgt, mask in zip(plan.indices, plan.targets, plan.mask, strict=True):
        used |= {int(i) for i, m in zip(row, mask, strict=True) if m}
        fill.append(sum(mask) / b)
        classes.append(len({int(labels[i]) for i, m in zip(row, mask, strict=True) if m}))
        empty += not _triplets(labels[row], tgt, mask)
    assert plan.stats["num_batches"] == plan.num_batches
    assert plan.stats["coverage"] == pytest.approx(len(used) / len(labels))
    assert plan.stats["mean_fill"] == pytest.approx(np.mean(fill))
    assert plan.stats["mean_classes_per_batch"] == pytest.approx(np.mean(classes))
    assert plan.stats["empty_batch_share"] == pytest.approx(empty / plan.num_batches)


def test_local_batches_are_kmeans_clusters():
    emb, labels = _data(n=300, seed=2)
    b = 25
    s = sampling.LocalSampler(labels, b, num_targets=2, seed=0, drop_empty=False)
    s.refresh(emb)
    plan = s.plan(0)
    clusters = s._clusters
    assert s.num_clusters == 300 // b
    sizes = np.bincount(clusters, minlength=s.num_clusters)
    assert plan.num_batches == int((sizes > 0).sum())
    for row, mask in zip(plan.indices, plan.mask, strict=True):
        members = row[mask]
        c = clusters[members]
        assert (c == c[0]).all(), "a batch mixes k-means clusters"
        size = sizes[c[0]]
        # Large clusters are subsampled to the batch size, small ones kept whole.
        assert len(members) == min(size, b)


def test_random_sampler_covers_everything():
    emb, labels = _data(n=101)
    s = sampling.RandomSampler(labels, 20, num_targets=2, seed=0, drop_empty=False)
    s.refresh(emb)
    plan = s.plan(5)
    assert plan.num_batches == 6
    assert plan.stats["coverage"] == 1.0
    assert sorted(plan.indices[plan.mask].tolist()) == list(range(101))


def test_random_sampler_without_targets_needs_no_embeddings():
    _, labels = _data(n=50)
    s = sampling.RandomSampler(labels, 10, compute_targets=False)
    assert not s.needs_embeddings
    s.refresh(None)
    plan = s.plan(0)
    assert (plan.targets == -1).all()


def test_plans_are_deterministic_and_vary_by_epoch():
    emb, labels = _data()
    plans = []
    for _ in range(2):
        s = sampling.LocalSampler(labels, 30, seed=7, drop_empty=False)
        s.refresh(emb, epoch=0)
        plans.append((s.plan(0), s.plan(1)))
    np.testing.assert_array_equal(plans[0][0].indices, plans[1][0].indices)
    np.testing.assert_array_equal(plans[0][0].targets, plans[1][0].targets)
    assert not np.array_equal(plans[0][0].indices, plans[0][1].indices)


def test_batches_without_triplet_are_dropped():
    # Two far-apart groups: one has a single class (no imposter), one is mixed.
    labels = np.array([0] * 10 + [1, 2] * 5)
    emb = np.concatenate([np.zeros((10, 2)), np.full((10, 2), 100.0)]).astype(np.float32)
    emb += np.random.default_rng(0).normal(size=emb.shape).astype(np.float32) * 0.01
    kept = sampling.LocalSampler(labels, 10, num_targets=2, seed=0)
    kept.refresh(emb)
    plan = kept.plan(0)
    assert plan.num_batches == 1
    assert set(labels[plan.indices[0][plan.mask[0]]]) == {1, 2}
    assert plan.stats["empty_batch_share"] == 0.5
    assert plan.stats["dropped_batches"] == 1
    assert plan.stats["coverage"] == 0.5


def test_bad_arguments():
    _, labels = _data(n=20)
    with pytest.raises(ValueError, match="batch_size"):
        sampling.LocalSampler(labels, 1)
    with pytest.raises(ValueError, match="num_targets"):
        sampling.LocalSampler(labels, 4, num_targets=0)
    s = sampling.LocalSampler(labels, 4)
    with pytest.raises(ValueError, match="embeddings"):
        s.refresh(np.zeros((19, 3), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        s.refresh(np.full((20, 3), np.nan, np.float32))
    with pytest.raises(RuntimeError, match="refresh"):
        sampling.LocalSampler(labels, 4).plan(0)
    with pytest.raises(ValueError, match="sampler"):
        sampling.make_sampler("nope", labels, 4)
