import numpy as np
import pytest

from sst_tf import sampling


def _plan(nb, b=4, k=2):
    return sampling.EpochPlan(
        indices=np.arange(nb * b).reshape(nb, b), targets=np.zeros((nb, b, k), np.int32),
        mask=np.ones((nb, b), bool), stats={})


def test_pad_plan_adds_masked_batches():
    plan = _plan(5)
    padded = sampling.pad_plan(plan, 4)
    assert padded.indices.shape[0] == 8 and padded.stats["padding_batches"] == 3
    assert not padded.mask[5:].any() and (padded.targets[5:] == -1).all()
    np.testing.assert_array_equal(padded.indices[:5], plan.indices)
    assert sampling.pad_plan(plan, 5) is plan


def test_plan_statistics_counts_coverage_fill_and_classes():
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    indices = np.array([[0, 1, 2, 2], [4, 5, 6, 4]])
    mask = np.array([[True, True, True, False], [True, True, True, False]])
    stats = sampling.plan_statistics(indices, mask, labels, len(labels))
    assert stats["num_batches"] == 2
    assert stats["coverage"] == 6 / 8  # images 0, 1, 2 and 4, 5, 6; padding rows do not count
    assert stats["mean_fill"] == 0.75
    assert stats["mean_classes_per_batch"] == 2.0


def test_repeat_views_puts_each_row_views_times_in_a_row():
    plan = sampling.EpochPlan(indices=np.arange(6).reshape(2, 3),
                              targets=np.full((2, 3, 2), -1, np.int32),
                              mask=np.array([[1, 1, 0], [1, 1, 1]], bool), stats={"x": 1.0})
    two = sampling.repeat_views(plan, 2)
    np.testing.assert_array_equal(two.indices, [[0, 0, 1, 1, 2, 2], [3, 3, 4, 4, 5, 5]])
    np.testing.assert_array_equal(two.mask[0], [1, 1, 1, 1, 0, 0])
    assert two.targets.shape == (2, 6, 2) and (two.targets == -1).all()
    assert two.stats == {"x": 1.0, "views": 2.0}
    assert sampling.repeat_views(plan, 1) is plan
    with pytest.raises(ValueError, match="target"):
        sampling.repeat_views(_plan(1), 2)  # targets 0: a target row


def test_make_sampler_with_views_plans_half_as_many_images_twice():
    labels = np.repeat(np.arange(6), 4)
    s = sampling.make_sampler("class_balanced", labels, 16, views=2, samples_per_class=2,
                              compute_targets=False, seed=0)
    s.refresh(None, 0)
    plan = s.plan(0)
    assert plan.indices.shape[1] == 16
    np.testing.assert_array_equal(plan.indices[:, ::2], plan.indices[:, 1::2])
    # 8 images per batch: 4 classes x 2 images, each twice.
    assert all(len(np.unique(labels[row])) == 4 for row in plan.indices)
    with pytest.raises(ValueError, match="multiple of views"):
        sampling.make_sampler("random", labels, 15, views=2, compute_targets=False)
    with pytest.raises(ValueError, match="target"):
        sampling.make_sampler("random", labels, 16, views=2, compute_targets=True)
