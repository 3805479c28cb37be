"""sst_tf.losses.distances, reductions and reference: the pieces every loss is made of."""

import numpy as np
import pytest
import tensorflow as tf

from sst_tf import losses
from sst_tf.losses import distances, reductions, reference


def _numpy_distances(x, r):
    sq = ((x[:, None, :] - r[None, :, :]) ** 2).sum(-1)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    rn = r / np.linalg.norm(r, axis=1, keepdims=True)
    return sq, np.sqrt(sq), np.maximum(1.0 - xn @ rn.T, 0.0)


def test_every_distance_equals_float64_numpy_with_and_without_a_reference_set():
    rng = np.random.default_rng(0)
    x, r = rng.normal(size=(5, 3)), rng.normal(size=(7, 3))
    for ref in (None, r):
        want_sq, want_l2, want_cos = _numpy_distances(x, x if ref is None else ref)
        rt = None if ref is None else tf.constant(ref)
        np.testing.assert_allclose(
            distances.squared_euclidean(tf.constant(x), rt).numpy(), want_sq, rtol=1e-6)
        np.testing.assert_allclose(
            distances.distance_matrix(tf.constant(x), "L2", rt).numpy(),
            want_l2 * (1 - np.eye(5) if ref is None else 1), atol=1e-9)
        np.testing.assert_allclose(
            distances.distance_matrix(tf.constant(x), "angular", rt).numpy(), want_cos,
            atol=1e-9)
    # A batch inside its reference set: its own entries are exact zeros.
    inside = np.concatenate([r[:2], x, r[2:]])
    d = distances.euclidean(tf.constant(x), r=tf.constant(inside), ref_offset=2).numpy()
    assert (d[np.arange(5), 2 + np.arange(5)] == 0).all()
    with pytest.raises(ValueError, match="distance_metric"):
        distances.distance_matrix(tf.constant(x), "manhattan")


def test_reductions_of_empty_masks_are_zero_or_the_fallback_with_zero_gradients():
    v = tf.Variable([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = tf.constant([[True, False, True], [False, False, False]])
    with tf.GradientTape() as tape:
        out = [reductions.masked_max(v, mask, tf.constant([-1.0, -1.0])),
               reductions.masked_min(v, mask, tf.constant([-1.0, -1.0])),
               reductions.masked_logsumexp(v, mask, 1)]
        total = sum(tf.reduce_sum(o[:1]) for o in out)
    np.testing.assert_allclose(out[0].numpy(), [3.0, -1.0])
    np.testing.assert_allclose(out[1].numpy(), [1.0, -1.0])
    np.testing.assert_allclose(out[2].numpy()[0], np.log(np.exp(1) + np.exp(3)), rtol=1e-6)
    assert out[2].numpy()[1] == -1e30
    assert (tape.gradient(total, v).numpy()[1] == 0).all()  # the empty row
    assert float(reductions.safe_divide(tf.constant(3.0), tf.constant(0.0))) == 0.0
    assert float(reductions.masked_mean(v, mask, tf.constant(2.0))) == 2.0


def test_reference_arguments_follow_each_losss_signature():
    e, y, m = tf.zeros([2, 3]), tf.constant([0, 1]), tf.constant([True, True])
    # contrastive has no ref_offset (its self-pairs count for 0), the MS loss has one.
    assert set(reference.reference_arguments(losses.contrastive_loss, e, y, m, 0)) == {
        "ref_embeddings", "ref_labels", "ref_mask"}
    assert "ref_offset" in reference.reference_arguments(losses.multi_similarity_loss, e, y, m, 0)
    with pytest.raises(ValueError, match="no reference-set form"):
        reference.reference_arguments(losses.lifted_struct_loss, e, y, m)
    with pytest.raises(ValueError, match="ref_labels"):
        reference.reference_set(e, y, m, e, None, None)
