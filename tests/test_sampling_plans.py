import numpy as np

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
