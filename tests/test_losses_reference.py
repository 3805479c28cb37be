"""Losses with a reference set: anchors = a part of the batch, candidates = the whole batch."""

import numpy as np
import pytest
import tensorflow as tf

from sst_tf import losses


def _numpy_contrastive(x, y, margin):
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    same = y[:, None] == y[None, :]
    return np.where(same, d, np.maximum(margin - d, 0.0)).sum() / len(x)


def test_contrastive_halves_add_up_to_the_batch():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 3)).astype(np.float32)
    y = rng.integers(0, 3, size=10)
    xt = tf.Variable(x)
    with tf.GradientTape(persistent=True) as tape:
        whole = losses.contrastive_loss(xt, y, 0.5)
        parts = [losses.contrastive_parts(xt[s], y[s], 0.5, ref_embeddings=xt, ref_labels=y)
                 for s in (slice(0, 4), slice(4, 10))]
        total = sum(p[0] for p in parts)
        count = sum(p[1] for p in parts)
        split = total / count
    np.testing.assert_allclose(whole.numpy(), _numpy_contrastive(x.astype(np.float64), y, 0.5),
                               rtol=1e-5)
    np.testing.assert_allclose(split.numpy(), whole.numpy(), rtol=1e-6)
    np.testing.assert_allclose(tape.gradient(split, xt).numpy(),
                               tape.gradient(whole, xt).numpy(), rtol=1e-5, atol=1e-6)


def test_reference_mask_and_unchanged_default():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 2)).astype(np.float32)
    y = np.array([0, 0, 1, 1, 2, 2])
    default = losses.contrastive_loss(x, y, 0.5)
    as_ref = losses.contrastive_loss(x, y, 0.5, ref_embeddings=x, ref_labels=y)
    np.testing.assert_allclose(as_ref.numpy(), default.numpy(), rtol=1e-6)
    # A masked reference row takes no part: equal to the loss without that row as candidate.
    ref_mask = np.array([True] * 5 + [False])
    masked = losses.contrastive_loss(x, y, 0.5, ref_embeddings=x, ref_labels=y,
                                     ref_mask=ref_mask)
    fewer = losses.contrastive_loss(x, y, 0.5, ref_embeddings=x[:5], ref_labels=y[:5])
    np.testing.assert_allclose(masked.numpy(), fewer.numpy(), rtol=1e-6)


def test_reference_errors_name_the_argument():
    x = np.zeros((3, 2), np.float32)
    with pytest.raises(ValueError, match="ref_labels"):
        losses.contrastive_loss(x, [0, 1, 1], ref_embeddings=x)
    with pytest.raises(ValueError, match="dimension"):
        losses.contrastive_loss(x, [0, 1, 1], ref_embeddings=np.zeros((3, 4), np.float32),
                                ref_labels=[0, 1, 1])


def test_multi_similarity_halves_add_up_to_the_batch():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(12, 4)).astype(np.float32)
    y = np.repeat(np.arange(4), 3)
    mask = np.ones(12, bool)
    mask[5] = False
    xt = tf.Variable(x)
    with tf.GradientTape(persistent=True) as tape:
        whole = losses.multi_similarity_loss(xt, y, sample_mask=mask)
        parts = [losses.multi_similarity_parts(xt[lo:hi], y[lo:hi], sample_mask=mask[lo:hi],
                                               ref_embeddings=xt, ref_labels=y, ref_mask=mask,
                                               ref_offset=lo)
                 for lo, hi in ((0, 6), (6, 12))]
        split = sum(p[0] for p in parts) / sum(p[1] for p in parts)
    assert whole.numpy() > 0
    np.testing.assert_allclose(split.numpy(), whole.numpy(), rtol=1e-6)
    np.testing.assert_allclose(tape.gradient(split, xt).numpy(),
                               tape.gradient(whole, xt).numpy(), rtol=1e-5, atol=1e-7)
    # Without ref_offset the anchor itself counts as its own positive: a different value.
    no_offset = losses.multi_similarity_loss(x, y, ref_embeddings=x, ref_labels=y)
    assert not np.isclose(no_offset.numpy(), losses.multi_similarity_loss(x, y).numpy())


@pytest.mark.slow
def test_two_replicas_with_the_global_batch_equal_one_device():
    import json
    import os
    import subprocess
    import sys

    here = os.path.dirname(__file__)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(here), here]))
    out = subprocess.run([sys.executable, os.path.join(here, "_reference_mirrored_check.py")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert {r["loss"] for r in rows} == {"contrastive", "multi_similarity"}
    for r in rows:
        assert r["whole"] > 0, r
        assert r["loss_diff"] <= 1e-5 * r["whole"], r
        assert r["grad_rel"] <= 1e-5, r
