"""SST loss options (scale, softmax over imposters) vs explicit-triplet references."""

import numpy as np
import pytest
import tensorflow as tf

from sst_tf import config, losses
from tests.test_losses import CASES, explicit_triplets, make_batch, sq


def pair_imposters(labels, targets, mask):
    """[(a, t, [imposters])] per valid (anchor, target slot), as the loss defines them."""
    b = len(labels)
    out = []
    for a in range(b):
        if not mask[a]:
            continue
        for t in targets[a]:
            if t < 0 or t >= b or t == a or not mask[t] or labels[t] != labels[a]:
                continue
            imps = [i for i in range(b) if mask[i] and labels[i] != labels[a]]
            if imps:
                out.append((a, int(t), imps))
    return out


def np_sst_options(x, labels, targets, mask, scale, imposters):
    """Reference written from the definition, one explicit triplet at a time."""
    pairs = pair_imposters(labels, targets, mask)
    if not pairs:
        return 0.0
    per_pair, per_triplet = [], []
    for a, t, imps in pairs:
        zs = [scale * (sq(x[a], x[t]) - (sq(x[a], x[i]) + sq(x[t], x[i])) / 2) for i in imps]
        per_triplet += [np.logaddexp(0.0, z) for z in zs]
        per_pair.append(np.logaddexp.reduce([0.0] + zs))
    return float(np.mean(per_triplet if imposters == "mean" else per_pair))


@pytest.mark.parametrize("seed,kind,use_mask", CASES)
@pytest.mark.parametrize("scale,imposters", [(1.0, "mean"), (4.0, "mean"), (1.0, "softmax"),
                                             (16.0, "softmax")])
def test_sst_options_match_explicit_triplets(seed, kind, use_mask, scale, imposters):
    x, labels, targets, mask = make_batch(seed, kind=kind)
    m = mask if use_mask else np.ones(len(labels), bool)
    got = losses.sst_loss(x, labels, targets, sample_mask=m if use_mask else None,
                          scale=scale, imposters=imposters)
    want = np_sst_options(x.astype(np.float64), labels, targets, m, scale, imposters)
    if scale == 1.0 and imposters == "mean":  # the paper's loss, also by explicit triplets
        trip = explicit_triplets(labels, targets, m)
        assert len(trip) == sum(len(p[2]) for p in pair_imposters(labels, targets, m))
    np.testing.assert_allclose(got.numpy(), want, rtol=2e-5, atol=1e-6)


def test_defaults_are_the_papers_loss():
    x, labels, targets, mask = make_batch(0)
    a = losses.sst_loss(x, labels, targets, sample_mask=mask)
    b = losses.sst_loss(x, labels, targets, sample_mask=mask, scale=1.0, imposters="mean")
    assert float(a) == float(b)


@pytest.mark.parametrize("imposters", ["mean", "softmax"])
def test_gradients_finite_on_collapsed_and_far_batches(imposters):
    """Identical rows (D = 0) and huge margins (s * z ~ 1e4) keep gradients finite."""
    x, labels, targets, mask = make_batch(3)
    for emb in (np.zeros_like(x), 100.0 * x):
        v = tf.Variable(emb)
        with tf.GradientTape() as tape:
            loss = losses.sst_loss(v, labels, targets, sample_mask=mask, scale=16.0,
                                   imposters=imposters)
        g = tape.gradient(loss, v)
        assert np.isfinite(loss.numpy()) and np.all(np.isfinite(g.numpy()))


def test_softmax_gradient_matches_finite_differences():
    x, labels, targets, mask = make_batch(1, d=3)
    x64 = tf.Variable(x.astype(np.float32))
    with tf.GradientTape() as tape:
        loss = losses.sst_loss(x64, labels, targets, sample_mask=mask, scale=2.0,
                               imposters="softmax")
    g = tape.gradient(loss, x64).numpy()
    eps = 1e-3
    base = x.astype(np.float64)
    for r, c in [(0, 0), (3, 1), (7, 2), (10, 0)]:
        up, dn = base.copy(), base.copy()
        up[r, c] += eps
        dn[r, c] -= eps
        fd = (np_sst_options(up, labels, targets, mask, 2.0, "softmax")
              - np_sst_options(dn, labels, targets, mask, 2.0, "softmax")) / (2 * eps)
        np.testing.assert_allclose(g[r, c], fd, rtol=1e-2, atol=1e-4)


def test_softmax_weights_hard_imposters_more_than_mean():
    """One close imposter among many far ones: softmax keeps its gradient, mean dilutes it."""
    labels = np.array([0, 0] + [1] * 20)
    x = np.zeros((22, 2), np.float32)
    x[1] = [0.1, 0.0]
    x[2] = [0.2, 0.0]  # the hard imposter
    x[3:] = [[5.0, 5.0 + j] for j in range(19)]
    targets = np.full((22, 1), -1, np.int32)
    targets[0, 0] = 1
    grads = {}
    for imp in ("mean", "softmax"):
        v = tf.Variable(x)
        with tf.GradientTape() as tape:
            loss = losses.sst_loss(v, labels, targets, scale=4.0, imposters=imp)
        grads[imp] = np.linalg.norm(tape.gradient(loss, v).numpy()[2])
    assert grads["softmax"] > 10 * grads["mean"]


def test_bad_options_are_refused():
    x, labels, targets, _ = make_batch(0)
    with pytest.raises(ValueError, match="scale"):
        losses.sst_loss(x, labels, targets, scale=0.0)
    with pytest.raises(ValueError, match="imposters"):
        losses.sst_loss(x, labels, targets, imposters="max")


def test_config_knows_the_same_imposter_modes():
    assert config.SST_IMPOSTERS == losses.SST_IMPOSTERS


def test_gradient_through_l2_normalisation_matches_finite_differences():
    """The model's L2 normalisation + SST, on nearly identical rows (an untrained
    from-scratch model's embeddings): the backpropagated gradient is exact."""
    import keras

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(6), 5)
    targets = np.array([[(i // 5) * 5 + (i + j + 1) % 5 for j in range(2)] for i in range(30)],
                       np.int32)
    h = 0.05 + 0.005 * rng.normal(size=(30, 8))
    mask = np.ones(30, bool)

    def reference(hv):  # float64, explicit triplets on the normalised rows
        u = hv / np.linalg.norm(hv, axis=1, keepdims=True)
        pairs = pair_imposters(labels, targets, mask)
        return np.mean([np.logaddexp(0.0, sq(u[a], u[t]) - (sq(u[a], u[i]) + sq(u[t], u[i])) / 2)
                        for a, t, imps in pairs for i in imps])

    v = tf.Variable(h.astype(np.float32))
    with tf.GradientTape() as tape:
        loss = losses.sst_loss(keras.layers.UnitNormalization(axis=-1)(v), labels, targets)
    g = tape.gradient(loss, v).numpy()
    for r, c in [(0, 0), (4, 3), (11, 7), (29, 2)]:
        up, dn = h.copy(), h.copy()
        up[r, c] += 1e-6
        dn[r, c] -= 1e-6
        fd = (reference(up) - reference(dn)) / 2e-6
        np.testing.assert_allclose(g[r, c], fd, rtol=1e-3, atol=1e-7)
