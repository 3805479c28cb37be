"""Multi-Similarity and Proxy-Anchor losses against independent NumPy loops."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from sst_tf import losses


def normalize(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def ms_reference(x, labels, alpha=2.0, beta=50.0, base=0.5, eps=0.1, mask=None):
    """Multi-Similarity as the authors' loop: per anchor, mine, then two log-sum terms."""
    b = len(labels)
    mask = np.ones(b, bool) if mask is None else mask
    s = normalize(x.astype(np.float64)) @ normalize(x.astype(np.float64)).T
    total = 0.0
    for i in range(b):
        if not mask[i]:
            continue
        pos = [s[i, j] for j in range(b) if mask[j] and j != i and labels[j] == labels[i]]
        neg = [s[i, k] for k in range(b) if mask[k] and labels[k] != labels[i]]
        if not pos or not neg:
            continue
        mined_neg = [v for v in neg if v + eps > min(pos)]
        mined_pos = [v for v in pos if v - eps < max(neg)]
        if not mined_neg or not mined_pos:
            continue
        total += np.log(1 + sum(np.exp(-alpha * (v - base)) for v in mined_pos)) / alpha
        total += np.log(1 + sum(np.exp(beta * (v - base)) for v in mined_neg)) / beta
    return total / mask.sum()


def pa_reference(x, labels, proxies, alpha=32.0, delta=0.1, mask=None):
    """Proxy-Anchor as the paper's two sums over proxies."""
    b, c = len(labels), len(proxies)
    mask = np.ones(b, bool) if mask is None else mask
    s = normalize(x.astype(np.float64)) @ normalize(proxies.astype(np.float64)).T
    pos_sum, with_pos, neg_sum = 0.0, 0, 0.0
    for p in range(c):
        members = [i for i in range(b) if mask[i] and labels[i] == p]
        others = [i for i in range(b) if mask[i] and labels[i] != p]
        if members:
            with_pos += 1
            pos_sum += np.log(1 + sum(np.exp(-alpha * (s[i, p] - delta)) for i in members))
        neg_sum += np.log(1 + sum(np.exp(alpha * (s[i, p] + delta)) for i in others))
    return (pos_sum / with_pos if with_pos else 0.0) + neg_sum / c


def numeric_grad(f, x, h=1e-5):
    g = np.zeros_like(x, np.float64)
    for idx in np.ndindex(*x.shape):
        xp, xm = x.astype(np.float64).copy(), x.astype(np.float64).copy()
        xp[idx] += h
        xm[idx] -= h
        g[idx] = (f(xp) - f(xm)) / (2 * h)
    return g


def tape_grad(f, x):
    x = tf.constant(x, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        v = f(x)
    return v.numpy(), tape.gradient(v, x).numpy()


LAYOUTS = {
    "balanced": np.repeat(np.arange(4), 3),
    "uneven": np.array([0, 0, 0, 0, 0, 1, 1, 2, 3, 3, 4, 5]),
    "two": np.array([0, 1, 1, 1, 0, 0, 1, 0, 0, 1, 1, 1]),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("params", [{}, {"alpha": 1.0, "beta": 10.0, "base": 0.2, "epsilon": 0.3}])
def test_multi_similarity_matches_numpy(layout, params):
    labels = LAYOUTS[layout]
    rng = np.random.default_rng(len(layout) + len(params))
    x = (rng.normal(size=(len(labels), 5)) + 0.8 * labels[:, None] % 3).astype(np.float32)
    ref_kw = {k if k != "epsilon" else "eps": v for k, v in params.items()}
    expected = ms_reference(x, labels, **ref_kw)
    v, g = tape_grad(lambda e: losses.multi_similarity_loss(e, labels, **params), x)
    assert expected > 0
    np.testing.assert_allclose(v, expected, rtol=1e-5)
    g_ref = numeric_grad(lambda e: ms_reference(e, labels, **ref_kw), x)
    np.testing.assert_allclose(g, g_ref, rtol=1e-3, atol=1e-4 * np.abs(g_ref).max())


def test_multi_similarity_mining_drops_easy_pairs():
    # Two tight, far-apart clusters: every negative is far below min positive
    # similarity - epsilon, so nothing is mined and the loss is exactly 0.
    labels = np.array([0, 0, 0, 1, 1, 1])
    x = np.array([[1, 0.01], [1, -0.01], [1, 0.0], [-1, 0.01], [-1, -0.01], [-1, 0]], np.float32)
    assert ms_reference(x, labels) == 0.0
    v, g = tape_grad(lambda e: losses.multi_similarity_loss(e, labels), x)
    assert v == 0.0 and np.all(g == 0.0)


def test_multi_similarity_degenerate_batches_and_padding():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 4)).astype(np.float32)
    for labels in (np.zeros(6, int), np.arange(6)):  # no negative / no positive
        v, g = tape_grad(lambda e, y=labels: losses.multi_similarity_loss(e, y), x)
        assert v == 0.0 and np.all(g == 0.0)
    labels = np.array([0, 0, 1, 1, 2, 2, 0, 1])
    xp = np.concatenate([x, 10 * rng.normal(size=(2, 4)).astype(np.float32)])
    mask = np.arange(8) < 6
    v, g = tape_grad(lambda e: losses.multi_similarity_loss(e, labels, sample_mask=mask), xp)
    np.testing.assert_allclose(v, ms_reference(x, labels[:6]), rtol=1e-5)
    assert np.all(g[6:] == 0.0)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_proxy_anchor_matches_numpy(layout):
    labels = LAYOUTS[layout]
    num_classes = 7  # class 6 (and more) never in the batch
    rng = np.random.default_rng(len(layout))
    x = rng.normal(size=(len(labels), 5)).astype(np.float32)
    proxies = rng.normal(size=(num_classes, 5)).astype(np.float32)
    expected = pa_reference(x, labels, proxies)
    v, g = tape_grad(lambda e: losses.proxy_anchor_loss(e, labels, proxies), x)
    np.testing.assert_allclose(v, expected, rtol=1e-5)
    g_ref = numeric_grad(lambda e: pa_reference(e, labels, proxies), x)
    np.testing.assert_allclose(g, g_ref, rtol=1e-3, atol=1e-4 * np.abs(g_ref).max())
    # Gradient with respect to the proxies too.
    _, gp = tape_grad(lambda p: losses.proxy_anchor_loss(x, labels, p), proxies)
    gp_ref = numeric_grad(lambda p: pa_reference(x, labels, p), proxies)
    np.testing.assert_allclose(gp, gp_ref, rtol=1e-3, atol=1e-4 * np.abs(gp_ref).max())


def test_proxy_anchor_padding_and_other_hyperparameters():
    rng = np.random.default_rng(1)
    labels = np.array([0, 1, 1, 2, 2, 2, 0, 0])
    x = rng.normal(size=(8, 3)).astype(np.float32)
    proxies = rng.normal(size=(4, 3)).astype(np.float32)
    mask = np.arange(8) < 5  # row 5..7 are padding; class 0 keeps one member
    expected = pa_reference(x[:5], labels[:5], proxies, alpha=8.0, delta=0.3)
    v, g = tape_grad(
        lambda e: losses.proxy_anchor_loss(e, labels, proxies, 8.0, 0.3, sample_mask=mask), x)
    np.testing.assert_allclose(v, expected, rtol=1e-5)
    assert np.all(g[5:] == 0.0)


def test_proxy_anchor_layer_owns_checkpointed_proxies(tmp_path):
    layer = losses.ProxyAnchor(num_classes=5, embedding_dim=3, seed=0)
    np.testing.assert_array_equal(layer.class_index([0, 4, 5, -1]).numpy(), [0, 4, -1, -1])
    assert [v.shape for v in layer.trainable_variables] == [(5, 3)]
    rng = np.random.default_rng(2)
    x = rng.normal(size=(6, 3)).astype(np.float32)
    labels = np.array([0, 0, 1, 1, 4, 4])
    expected = pa_reference(x, labels, layer.proxies.numpy())
    np.testing.assert_allclose(layer(x, labels).numpy(), expected, rtol=1e-5)
    ckpt = tf.train.Checkpoint(loss_layer=layer)
    path = ckpt.save(str(tmp_path / "ckpt"))
    saved = layer.proxies.numpy().copy()
    layer.proxies.assign(tf.zeros_like(layer.proxies))
    ckpt.restore(path).assert_existing_objects_matched()
    np.testing.assert_array_equal(layer.proxies.numpy(), saved)
    clone = losses.ProxyAnchor.from_config(layer.get_config())
    assert (clone.num_classes, clone.alpha, clone.delta) == (5, layer.alpha, layer.delta)
    with pytest.raises(ValueError, match="num_classes"):
        losses.ProxyAnchor(num_classes=0, embedding_dim=3)
    with pytest.raises(ValueError, match="proxies"):
        losses.proxy_anchor_loss(x, labels, np.zeros((5, 4), np.float32))
    assert isinstance(layer, keras.layers.Layer)


def test_batch_npairs_matches_numpy():
    rng = np.random.default_rng(5)
    labels = np.array([0, 0, 1, 1, 1, 2, 3, 3, 0])
    x = rng.normal(size=(9, 4)).astype(np.float32)
    mask = np.arange(9) < 8
    total, rows = 0.0, 0
    for i in range(8):
        others = [j for j in range(8) if j != i]
        pos = [j for j in others if labels[j] == labels[i]]
        if not pos:
            continue
        logits = np.array([x[i] @ x[j] for j in others], np.float64)
        log_z = np.log(np.sum(np.exp(logits - logits.max()))) + logits.max()
        total += np.mean([log_z - x[i] @ x[j] for j in pos])
        rows += 1
    v, g = tape_grad(lambda e: losses.batch_npairs_loss(e, labels, sample_mask=mask), x)
    np.testing.assert_allclose(v, total / rows, rtol=1e-5)
    assert np.all(g[8] == 0.0)


def test_batch_pairwise_contrastive_matches_numpy():
    rng = np.random.default_rng(6)
    labels = np.array([0, 0, 1, 1, 2, 0, 1])
    x = rng.normal(size=(7, 3)).astype(np.float32) * 0.5
    mask = np.array([1, 1, 1, 1, 1, 1, 0], bool)
    vals = []
    for i in range(6):
        for j in range(i + 1, 6):
            d = np.linalg.norm(x[i].astype(np.float64) - x[j])
            vals.append(d**2 if labels[i] == labels[j] else max(0.7 - d, 0.0) ** 2)
    v, g = tape_grad(
        lambda e: losses.batch_pairwise_contrastive_loss(e, labels, 0.7, sample_mask=mask), x)
    np.testing.assert_allclose(v, np.mean(vals), rtol=1e-5)
    assert np.all(g[6] == 0.0)


def test_proxy_anchor_layer_maps_class_ids_to_proxies():
    layer = losses.ProxyAnchor(embedding_dim=3, class_ids=[30, 10, 20, 10], seed=1)
    assert layer.num_classes == 3
    idx = layer.class_index(np.array([10, 20, 30, 25, -1])).numpy()
    np.testing.assert_array_equal(idx, [0, 1, 2, -1, -1])
    rng = np.random.default_rng(4)
    x = rng.normal(size=(4, 3)).astype(np.float32)
    labels = np.array([10, 30, 30, 20])
    expected = pa_reference(x, np.array([0, 2, 2, 1]), layer.proxies.numpy())
    np.testing.assert_allclose(layer(x, layer.class_index(labels)).numpy(), expected, rtol=1e-5)
    clone = losses.ProxyAnchor.from_config(layer.get_config())
    assert clone.class_ids == [10, 20, 30]


def test_make_loss_params_replace_the_registry_values():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(12, 6)).astype(np.float32)
    labels = np.repeat(np.arange(4), 3)
    mask = np.ones(12, bool)
    none = np.zeros((12, 0), np.int32)
    # Musgrave et al.'s tuned Multi-Similarity values; epsilon stays the registry's.
    fn = losses.make_loss("multi_similarity", params={"alpha": 0.01, "base": 0.77})
    want = ms_reference(x, labels, alpha=0.01, base=0.77)
    np.testing.assert_allclose(float(fn(x, labels, none, mask)), want, rtol=1e-5)
    assert abs(want - ms_reference(x, labels)) > 1e-3  # the parameters matter here
    ref = losses.make_reference_loss("multi_similarity", params={"beta": 10.0})
    direct = losses.multi_similarity_loss(x, labels, beta=10.0, sample_mask=mask,
                                          ref_embeddings=x[:6], ref_labels=labels[:6],
                                          ref_mask=mask[:6])
    np.testing.assert_allclose(float(ref(x, labels, none, mask, x[:6], labels[:6], mask[:6],
                                         None)), float(direct), rtol=1e-6)
    with pytest.raises(ValueError, match="no parameter gamma; its parameters: alpha, beta"):
        losses.make_loss("multi_similarity", params={"gamma": 1.0})
    with pytest.raises(ValueError, match="--loss=triplet has no parameter alpha.*none"):
        losses.make_loss("triplet", params={"alpha": 1.0})
