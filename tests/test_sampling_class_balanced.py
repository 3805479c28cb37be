"""Class-balanced sampler: P classes x K images per batch, each image at most once."""

import numpy as np
import pytest

from sst_tf import sampling


def make(labels, batch_size=12, k=3, **kw):
    s = sampling.make_sampler("class_balanced", np.asarray(labels), batch_size,
                              samples_per_class=k, compute_targets=False, **kw)
    s.refresh(None, 0)
    return s


def test_exact_p_by_k_batches_when_classes_divide():
    labels = np.repeat(np.arange(8), 6)  # 8 classes x 6 images, K = 3 -> 2 chunks each
    s = make(labels, batch_size=12, k=3)
    plan = s.plan(0)
    assert plan.num_batches == 4  # 16 chunks / 4 classes per batch
    assert plan.mask.all()
    for row in plan.indices:
        classes, counts = np.unique(labels[row], return_counts=True)
        assert len(classes) == 4 and np.all(counts == 3)
    used = plan.indices[plan.mask]
    assert len(np.unique(used)) == len(used) == len(labels)
    assert plan.stats["coverage"] == 1.0


@pytest.mark.parametrize("epoch", [0, 1, 2])
def test_uneven_classes_each_image_at_most_once(epoch):
    rng = np.random.default_rng(epoch)
    labels = np.repeat(np.arange(15), rng.integers(1, 12, size=15))
    s = make(labels, batch_size=20, k=4, seed=3)
    plan = s.plan(epoch)
    used = plan.indices[plan.mask]
    assert len(np.unique(used)) == len(used)  # never twice in an epoch
    assert plan.stats["coverage"] == pytest.approx(len(used) / len(labels))
    for row, m in zip(plan.indices, plan.mask, strict=True):
        classes, counts = np.unique(labels[row[m]], return_counts=True)
        assert len(classes) == 5  # exactly P classes
        assert np.all((counts >= 2) & (counts <= 4))  # K, or a short last chunk of >= 2
        assert m.sum() == counts.sum()
    # Unused images: singleton classes / single left-overs, or chunks of classes
    # left when fewer than P classes still had chunks.
    counts_all = np.bincount(labels)
    for c in np.flatnonzero(counts_all == 1):
        assert not np.isin(np.flatnonzero(labels == c), used).any()


def test_deterministic_per_epoch_and_different_across_epochs():
    labels = np.repeat(np.arange(10), 8)
    a, b = make(labels, seed=7), make(labels, seed=7)
    np.testing.assert_array_equal(a.plan(3).indices, b.plan(3).indices)
    assert not np.array_equal(a.plan(3).indices, a.plan(4).indices)


def test_targets_same_class_not_self_when_requested():
    labels = np.repeat(np.arange(6), 5)
    s = sampling.make_sampler("class_balanced", labels, 12, samples_per_class=4, num_targets=2,
                              compute_targets=True, seed=0)
    emb = np.random.default_rng(0).normal(size=(len(labels), 3)).astype(np.float32)
    s.refresh(emb, 0)
    plan = s.plan(0)
    for row, tgt, m in zip(plan.indices, plan.targets, plan.mask, strict=True):
        for a in np.flatnonzero(m):
            for t in tgt[a][tgt[a] >= 0]:
                assert t != a and m[t] and labels[row[t]] == labels[row[a]]


def test_bad_arguments_name_the_flag():
    labels = np.repeat(np.arange(4), 4)
    with pytest.raises(ValueError, match="samples_per_class"):
        make(labels, batch_size=8, k=1)
    with pytest.raises(ValueError, match="multiple"):
        make(labels, batch_size=10, k=4)
    with pytest.raises(ValueError, match="at least 2 classes"):
        make(labels, batch_size=4, k=4)
    with pytest.raises(ValueError, match="batch_size"):
        make(labels, batch_size=20, k=4)  # 5 classes needed, 4 exist
