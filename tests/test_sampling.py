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


# -- robust local sampling (mixed neighbourhoods, warm-up, diagnostics) ------------


def _paired_classes(batch_labels):
    _, counts = np.unique(batch_labels, return_counts=True)
    return int((counts >= 2).sum())


@pytest.mark.parametrize(
    "n,classes,b,share,min_classes,skew",
    [
        (300, 10, 32, 0.5, 4, False),
        (300, 10, 32, 1.0, 4, True),  # all-local request: the guarantee still holds
        (257, 3, 20, 0.5, 5, True),  # fewer classes than promised: capped at 3
        (101, 40, 16, 0.25, 3, False),  # many small classes, some singletons
        (64, 4, 64, 0.0, 2, False),  # one batch: random with the guarantee
    ],
)
def test_mixed_neighborhoods_invariants(n, classes, b, share, min_classes, skew):
    rng = np.random.default_rng(n + b)
    labels = rng.integers(0, classes, n)
    # Clusters: either unrelated to the labels or one class per cluster (the
    # look-alike batches of the paper's rule on a good embedding).
    num_clusters = max(1, n // b)
    clusters = labels % num_clusters if skew else rng.integers(0, num_clusters, n)
    groups = sampling.mixed_neighborhoods(clusters, labels, b, share, min_classes,
                                          np.random.default_rng(0))
    promised = sampling.effective_min_classes(labels, b, min_classes)
    _, counts = np.unique(labels, return_counts=True)
    assert promised == min(min_classes, int((counts >= 2).sum()), (b - 1) // 2)
    # Every image in some batch, none twice in a batch, no batch too large.
    assert set(np.concatenate(groups).tolist()) == set(range(n))
    for g in groups:
        assert 0 < len(g) <= b
        assert len(set(g.tolist())) == len(g)
        assert _paired_classes(labels[g]) >= promised
    # Each neighbourhood keeps min(size, local part) of its members together.
    local = min(round(share * b), b - 2 * promised)
    for c in np.unique(clusters):
        size = int((clusters == c).sum())
        best = max(int((clusters[g] == c).sum()) for g in groups)
        assert best >= min(size, local)
    # Images are repeated only if the guarantee needs them: never with no guarantee.
    free = sampling.mixed_neighborhoods(clusters, labels, b, share, 0, np.random.default_rng(0))
    assert sum(len(g) for g in free) == n


def test_mixed_neighborhoods_bad_arguments():
    labels = np.arange(10) % 2
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="local_share"):
        sampling.mixed_neighborhoods(labels, labels, 4, 1.5, 1, rng)
    with pytest.raises(ValueError, match="min_classes"):
        sampling.mixed_neighborhoods(labels, labels, 4, 0.5, -1, rng)
    with pytest.raises(ValueError, match="equal length"):
        sampling.mixed_neighborhoods(labels[:5], labels, 4, 0.5, 1, rng)
    with pytest.raises(ValueError, match="neighborhoods"):
        sampling.LocalSampler(labels, 4, neighborhoods="nope")
    with pytest.raises(ValueError, match="warmup_epochs"):
        sampling.LocalSampler(labels, 4, warmup_epochs=-1)


def test_mixed_local_sampler_plan_keeps_batch_invariants():
    emb, labels = _data(n=300, classes=6)
    b, k = 40, 3
    s = sampling.make_sampler("local", labels, b, num_targets=k, seed=1, drop_empty=False,
                              neighborhoods="mixed", local_share=0.5, min_classes=3)
    s.refresh(emb, epoch=0)
    plan = s.plan(0)
    assert plan.stats["coverage"] == 1.0
    assert plan.stats["min_paired_classes_per_batch"] >= 3
    for row, tgt, mask in zip(plan.indices, plan.targets, plan.mask, strict=True):
        n = int(mask.sum())
        assert _paired_classes(labels[row[:n]]) >= 3
        np.testing.assert_array_equal(tgt, _brute_targets(emb[row], labels[row], mask, k))


def test_warmup_epochs_are_random_then_local():
    emb, labels = _data(n=200, classes=5)
    s = sampling.LocalSampler(labels, 25, num_targets=2, seed=0, drop_empty=False,
                              neighborhoods="original", warmup_epochs=2)
    s.refresh(emb, epoch=0)
    assert s._clusters is None  # no k-means in warm-up
    warm = s.plan(0)
    assert warm.stats["warmup"] == 1.0 and warm.stats["coverage"] == 1.0
    # Refreshed in warm-up (refresh_every > 1), planned after it: clusters then.
    plan = s.plan(2)
    assert plan.stats["warmup"] == 0.0 and s._clusters is not None
    for row, mask in zip(plan.indices, plan.mask, strict=True):
        c = s._clusters[row[mask]]
        assert (c == c[0]).all()


def test_composition_statistics_match_direct_computation():
    emb, labels = _data(n=120, classes=4, seed=5)
    b, k = 30, 2
    s = sampling.LocalSampler(labels, b, num_targets=k, seed=0, drop_empty=False)
    s.refresh(emb)
    plan = s.plan(0)
    paired, members, largest, anchors, rows, imp_share = [], [], [], 0, 0, []
    d_at, d_ai = [], []
    for row, tgt, mask in zip(plan.indices, plan.targets, plan.mask, strict=True):
        idx = [int(i) for i, m in zip(row, mask, strict=True) if m]
        y = labels[idx]
        paired.append(_paired_classes(y))
        members.append(len(idx) / len(set(y.tolist())))
        largest.append(max((y == c).sum() for c in set(y.tolist())) / len(idx))
        for a in range(len(row)):
            if not mask[a]:
                continue
            rows += 1
            ts = [int(t) for t in tgt[a] if t >= 0]
            if not ts:
                continue
            anchors += 1
            imps = [i for i in range(len(row)) if mask[i] and labels[row[i]] != labels[row[a]]]
            imp_share.append(len(imps) / (len(idx) - 1))
            e = emb[row].astype(np.float64)

            def dist(u, v, e=e):
                return float(((e[u] - e[v]) ** 2).sum())

            d_at.extend(dist(a, t) for t in ts)
            d_ai.extend(dist(a, i) for i in imps)
    st = plan.stats
    assert st["mean_paired_classes_per_batch"] == pytest.approx(np.mean(paired))
    assert st["min_paired_classes_per_batch"] == min(paired)
    assert st["mean_members_per_class"] == pytest.approx(np.mean(members))
    assert st["largest_class_share"] == pytest.approx(np.mean(largest))
    assert st["anchor_share"] == pytest.approx(anchors / rows)
    assert st["imposter_share"] == pytest.approx(np.mean(imp_share))
    assert st["target_distance"] == pytest.approx(np.mean(d_at), rel=1e-6)
    assert st["imposter_distance"] == pytest.approx(np.mean(d_ai), rel=1e-6)
    assert st["distance_ratio"] == pytest.approx(np.mean(d_at) / np.mean(d_ai), rel=1e-6)
    assert "sst_at_refresh" not in st  # no diagnostic of a loss that may not be trained


@pytest.mark.parametrize(
    "n,classes,b,k",
    [
        (300, 10, 40, 4),  # 10 classes, 10 per batch
        (257, 30, 32, 5),  # more classes than fit: class neighbourhoods
        (90, 3, 64, 8),  # fewer classes than P: capped at 3
        (120, 50, 20, 2),  # many tiny classes, singletons among them
    ],
)
def test_class_neighborhoods_invariants(n, classes, b, k):
    rng = np.random.default_rng(n)
    labels = rng.integers(0, classes, n)
    centres = rng.normal(size=(classes, 4)) * 3.0
    emb = centres[labels] + rng.normal(size=(n, 4))
    groups = sampling.class_neighborhoods(emb, labels, b, k, np.random.default_rng(1))
    ids, counts = np.unique(labels, return_counts=True)
    size = dict(zip(ids.tolist(), counts.tolist(), strict=True))
    p = min(b // k, int((counts >= 2).sum()))
    k = max(k, b // p)
    assert set(np.concatenate(groups).tolist()) == set(range(n))
    multi_class_batches = 0
    for g in groups:
        assert 0 < len(g) <= b
        assert len(set(g.tolist())) == len(g)
        y = labels[g]
        full = [c for c in set(y.tolist()) if (y == c).sum() >= min(k, size[c]) >= 2]
        if all(size[c] == 1 for c in y.tolist()):
            continue  # a batch of leftover images of one-image classes
        multi_class_batches += 1
        assert len(full) >= p
    assert multi_class_batches > 0
    with pytest.raises(ValueError, match="members_per_class"):
        sampling.class_neighborhoods(emb, labels, b, 1, rng)


def test_class_neighborhoods_group_nearest_classes():
    # Classes on a line: 0..15 at positions 0..15 (x 10). With P = 2 classes per
    # batch, a batch pairs its seed class with the nearest class that has
    # images left: the gaps are far below those of random pairs (about 5.7).
    labels = np.repeat(np.arange(16), 6)
    emb = (labels[:, None] * 10.0 + np.random.default_rng(0).normal(size=(96, 2))).astype(
        np.float32)
    groups = sampling.class_neighborhoods(emb, labels, 12, 6, np.random.default_rng(0))
    gaps = []
    for g in groups:
        present = sorted(set(labels[g].tolist()))
        assert len(present) == 2
        gaps.append(present[1] - present[0])
    assert gaps[0] == 1  # the first batch: seed class and an adjacent one
    assert np.mean(gaps) <= 2.0, gaps


def test_classes_local_sampler_needs_no_kmeans():
    emb, labels = _data(n=200, classes=5)
    s = sampling.make_sampler("local", labels, 20, num_targets=2, seed=0,
                              neighborhoods="classes", members_per_class=4)
    s.refresh(emb)
    assert s._clusters is None
    plan = s.plan(0)
    assert plan.stats["coverage"] == 1.0
    assert plan.stats["min_paired_classes_per_batch"] == 5
