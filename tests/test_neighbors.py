"""Target-neighbour tables vs a brute-force loop (NumPy and eager tensors)."""

import numpy as np
import pytest
import tensorflow as tf

from sst_tf import neighbors


def brute_force(x, labels, k, mask):
    """Per row: same-class, unmasked, not self; sorted by (distance, index)."""
    b = len(labels)
    out = np.full((b, k), -1, np.int64)
    for a in range(b):
        if not mask[a]:
            continue
        cand = [(float(np.sum((x[a].astype(np.float64) - x[j]) ** 2)), j) for j in range(b)
                if j != a and mask[j] and labels[j] == labels[a]]
        cand.sort()
        for n, (_, j) in enumerate(cand[:k]):
            out[a, n] = j
    return out


def int_batch(seed, b=17, d=3, classes=4):
    """Small-integer embeddings: exact distances, many ties."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, size=(b, d)).astype(np.float32)
    labels = rng.integers(0, classes, b)
    labels[0] = classes + 5  # a singleton class
    mask = rng.random(b) > 0.2
    return x, labels, mask


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [1, 3, 8, 30])
def test_numpy_and_tf_match_brute_force_with_ties(seed, k):
    x, labels, mask = int_batch(seed)
    for m in (None, mask):
        want = brute_force(x, labels, k, np.ones(len(labels), bool) if m is None else m)
        got = neighbors.target_neighbors(x, labels, k, sample_mask=m)
        assert isinstance(got, np.ndarray) and got.dtype == np.int32 and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
        got_tf = neighbors.target_neighbors(  # eager tensors: converted
            tf.constant(x), tf.constant(labels), k, None if m is None else tf.constant(m))
        np.testing.assert_array_equal(got_tf, want)


def test_random_float_embeddings():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 8)).astype(np.float32)
    labels = rng.integers(0, 5, 40)
    want = brute_force(x, labels, 5, np.ones(40, bool))
    np.testing.assert_array_equal(neighbors.target_neighbors(x, labels, 5), want)
    np.testing.assert_array_equal(neighbors.target_neighbors(tf.constant(x), labels, 5), want)


def test_hand_made():
    x = np.array([[0.0], [1.0], [3.0], [0.5], [10.0]], np.float32)
    labels = np.array([0, 0, 0, 1, 0])
    got = neighbors.target_neighbors(x, labels, 2)
    np.testing.assert_array_equal(got, [[1, 2], [0, 2], [1, 0], [-1, -1], [2, 1]])
    # Tie: row 1 (at 1.0) is 1 away from rows 0 (0.0) and 2 (2.0): lower index first.
    x = np.array([[0.0], [1.0], [2.0]], np.float32)
    np.testing.assert_array_equal(neighbors.target_neighbors(x, [0, 0, 0], 1), [[1], [0], [1]])
    # Masked row 1: neither target nor anchor.
    got = neighbors.target_neighbors(x, [0, 0, 0], 2, sample_mask=[True, False, True])
    np.testing.assert_array_equal(got, [[2, -1], [-1, -1], [0, -1]])


def test_inside_tf_function_is_refused_with_a_reason():
    x, labels, mask = int_batch(3)

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32),
                                  tf.TensorSpec([None], tf.int64)])
    def online(e, y):
        return neighbors.target_neighbors(e, y, 4)

    with pytest.raises(ValueError, match="not inside tf.function"):
        online(x, labels.astype(np.int64))


def test_pairwise_squared_distances():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(6, 4))
    b = rng.normal(size=(3, 4))
    want = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(neighbors.pairwise_squared_distances(a, b), want, rtol=1e-10)
    got = neighbors.pairwise_squared_distances(tf.constant(a, tf.float32), tf.constant(b))
    assert got.dtype == tf.float32
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5)
    self_d = neighbors.pairwise_squared_distances(tf.constant(a * 100, tf.bfloat16))
    assert self_d.dtype == tf.float32
    assert np.all(np.diag(self_d.numpy()) == 0) and np.all(self_d.numpy() >= 0)


def test_bad_input_raises_naming_argument():
    x, labels, mask = int_batch(0)
    for arr in (lambda v: v, tf.constant):
        with pytest.raises(ValueError, match="embeddings"):
            neighbors.target_neighbors(arr(x[0]), arr(labels), 2)
        with pytest.raises(ValueError, match="labels"):
            neighbors.target_neighbors(arr(x), arr(labels[:-1]), 2)
        with pytest.raises(ValueError, match="sample_mask"):
            neighbors.target_neighbors(arr(x), arr(labels), 2, sample_mask=arr(mask[:-2]))
        with pytest.raises(ValueError, match="k"):
            neighbors.target_neighbors(arr(x), arr(labels), 0)
        with pytest.raises(ValueError, match="empty"):
            neighbors.target_neighbors(arr(x[:0]), arr(labels[:0]), 2)
        bad = x.copy()
        bad[2, 1] = np.nan
        with pytest.raises(ValueError, match="NaN"):
            neighbors.target_neighbors(arr(bad), arr(labels), 2)
    with pytest.raises(ValueError, match="k"):
        neighbors.target_neighbors(x, labels, 2.5)
