"""The losses sst_tf shares with pytorch-metric-learning against its stored values.

`tests/data/pml_fixtures.npz` holds PML 2.9's loss values and gradients (in
float64) on random batches, made by `scripts/make_pml_fixtures.py` in a side
environment; here each loss is computed in float32 on the same inputs.
"""

import os

import numpy as np
import pytest
import tensorflow as tf

from sst_tf.losses import pairs, proxies, softmax_contrastive

FIXTURES = np.load(os.path.join(os.path.dirname(__file__), "data", "pml_fixtures.npz"))
FUNCTIONS = {
    "arcface": proxies.arcface_loss,
    "cosface": proxies.cosface_loss,
    "subcenter_arcface": proxies.subcenter_arcface_loss,
    "circle": softmax_contrastive.circle_loss,
    "supcon": softmax_contrastive.supcon_loss,
    "ntxent": softmax_contrastive.ntxent_loss,
    # PML's N pairs: one anchor and one positive per label, on its (default)
    # normalised or on raw embeddings.
    "npairs": lambda x, y, normalize=True, **kw: pairs.batch_npairs_loss(
        tf.math.l2_normalize(x, axis=1) if normalize else x, y, pairs="per_class", **kw),
}
CASES = sorted({tuple(k.split("/")[:2]) for k in FIXTURES.files if "/" in k})


def _case(name, case):
    prefix = f"{name}/{case}/"
    arrays = {k[len(prefix):]: FIXTURES[k] for k in FIXTURES.files if k.startswith(prefix)}
    params = {k[len("param/"):]: v.item() for k, v in arrays.items() if k.startswith("param/")}
    return arrays, params


def _value_and_grads(name, arrays, params, scale=1.0):
    fn = FUNCTIONS[name]
    x = tf.Variable(arrays["embeddings"].astype(np.float32) * np.float32(scale))
    y = tf.constant(arrays["labels"])
    weighted = "weights" in arrays
    if weighted:  # PML's W is [d, C * K] (column c * K + k); ours is [C * K, d]
        w = tf.Variable(arrays["weights"].T.astype(np.float32))
    with tf.GradientTape() as tape:
        value = fn(x, y, w, **params) if weighted else fn(x, y, **params)
    grads = tape.gradient(value, [x, w] if weighted else [x])
    return value, [tf.convert_to_tensor(g) for g in grads]  # gathers give IndexedSlices


@pytest.mark.parametrize("name,case", CASES)
def test_value_and_gradients_equal_pml(name, case):
    arrays, params = _case(name, case)
    value, grads = _value_and_grads(name, arrays, params)
    assert float(arrays["value"]) > 0  # the case has something to learn
    np.testing.assert_allclose(float(value), float(arrays["value"]), rtol=2e-5, atol=1e-6)
    scale = np.abs(arrays["grad_embeddings"]).max()
    np.testing.assert_allclose(grads[0].numpy(), arrays["grad_embeddings"], rtol=1e-3,
                               atol=1e-4 * scale)
    if "weights" in arrays:
        wscale = np.abs(arrays["grad_weights"]).max()
        np.testing.assert_allclose(grads[1].numpy(), arrays["grad_weights"].T, rtol=1e-3,
                                   atol=1e-4 * wscale)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
@pytest.mark.parametrize("scale", [1e-3, 1e3])
def test_finite_and_scale_free_at_extreme_embedding_scales(name, scale):
    """Cosine losses: the same value at embedding scales 1e-3 and 1e3, finite gradients."""
    arrays, params = _case(name, "defaults")
    value, grads = _value_and_grads(name, arrays, params, scale)
    assert np.isfinite(float(value))
    assert all(np.all(np.isfinite(g.numpy())) for g in grads)
    np.testing.assert_allclose(float(value), float(arrays["value"]), rtol=1e-4)


def test_padding_rows_and_unknown_classes_count_for_nothing():
    arrays, params = _case("arcface", "defaults")
    x, y, w = arrays["embeddings"], arrays["labels"], arrays["weights"].T
    full = float(proxies.arcface_loss(x, y, w, **params))
    junk_x = np.concatenate([x, np.full((2, x.shape[1]), 1e6)])
    junk_y = np.concatenate([y, [0, -1]])
    mask = np.r_[np.ones(len(y), bool), [False, True]]  # a padding row, a row without class
    padded = float(proxies.arcface_loss(junk_x, junk_y, w, sample_mask=mask, **params))
    np.testing.assert_allclose(padded, full, rtol=1e-6)
    for name in ("circle", "supcon", "ntxent", "npairs"):
        arrays, params = _case(name, "defaults")
        x, y = arrays["embeddings"], arrays["labels"]
        fn = FUNCTIONS[name]
        want = float(fn(x, y, **params))
        got = float(fn(np.concatenate([x, x[:1] * 7]), np.r_[y, y[0]],
                       sample_mask=np.r_[np.ones(len(y), bool), False], **params))
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_no_pair_gives_zero_loss_and_zero_gradients():
    x = tf.Variable(np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32))
    for name in ("circle", "supcon", "ntxent", "npairs"):
        for labels in ([0, 1, 2, 3], [5, 5, 5, 5]):  # no positive pair; no negative pair
            with tf.GradientTape() as tape:
                value = FUNCTIONS[name](x, labels)
            grad = tape.gradient(value, x)
            assert float(value) == 0.0, (name, labels)
            assert grad is None or not np.any(grad.numpy()), (name, labels)


def test_npairs_per_class_compiles_with_xla_and_takes_the_first_two_rows_of_a_class():
    """The fixed-size pair selection: the same value under XLA, and PML's pairs."""
    arrays, _ = _case("npairs", "defaults_uneven")
    x = tf.math.l2_normalize(arrays["embeddings"].astype(np.float32), axis=1)
    y = tf.constant(arrays["labels"])
    eager = float(pairs.batch_npairs_loss(x, y, pairs="per_class"))
    xla = tf.function(lambda a, b: pairs.batch_npairs_loss(a, b, pairs="per_class"),
                      jit_compile=True)
    np.testing.assert_allclose(float(xla(x, y)), eager, rtol=1e-5)
    anchors, partners = pairs._one_pair_per_class(
        tf.constant([7, 3, 7, 5, 3, 7, 9, 9]), tf.constant([True] * 6 + [False, True]))
    got = sorted(zip(anchors.numpy().tolist(), partners.numpy().tolist(), strict=True))
    assert got == [(0, 2), (1, 4)]  # class 5 has one row; class 9 one valid row
    empty = pairs._one_pair_per_class(tf.constant([1, 2]), tf.constant([True, True]))
    assert [t.shape[0] for t in empty] == [0, 0]
    with pytest.raises(ValueError, match="reference-set"):
        pairs.batch_npairs_loss(x, y, pairs="per_class", ref_embeddings=x, ref_labels=y)
    with pytest.raises(ValueError, match="pairs must be one of"):
        pairs.batch_npairs_loss(x, y, pairs="some")


def test_margin_softmax_layer_maps_labels_and_classifies():
    rng = np.random.default_rng(1)
    ids = np.array([3, 10, 42])
    layer = proxies.MarginSoftmax("subcenter_arcface", class_ids=ids, embedding_dim=4,
                                         seed=0)
    assert layer.class_weights.shape == (9, 4)  # 3 classes x 3 sub-centers
    x = rng.normal(size=(6, 4)).astype(np.float32)
    labels = np.array([3, 10, 42, 42, 3, 10])
    index = layer.class_index(labels).numpy()
    np.testing.assert_array_equal(index, [0, 1, 2, 2, 0, 1])
    want = proxies.subcenter_arcface_loss(x, index, layer.class_weights)
    np.testing.assert_allclose(float(layer(x, labels)), float(want), rtol=1e-6)
    logits = layer.logits(x).numpy()
    assert logits.shape == (6, 3) and np.all(np.abs(logits) <= layer.scale + 1e-4)
    clone = proxies.MarginSoftmax.from_config(layer.get_config())
    assert (clone.loss, clone.margin, clone.sub_centers) == ("subcenter_arcface", layer.margin, 3)
