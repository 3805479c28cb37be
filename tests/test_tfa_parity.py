"""Parity of the tensorflow-addons-compatible losses with tensorflow-addons 0.23.

Golden values and gradients come from `tests/data/tfa_fixtures.npz`, written once
by `scripts/make_tfa_fixtures.py` in a side environment with tensorflow-addons
0.23 / TF 2.15 (see docs/baselines.md). Values must agree to 1e-5 relative, gradients
to 1e-5 relative to the largest gradient entry.
"""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from sst_tf import losses

FIXTURES = os.path.join(os.path.dirname(__file__), "data", "tfa_fixtures.npz")
DATA = np.load(FIXTURES)
CASES = [str(c) for c in DATA["meta/cases"]]


def dot_similarity(x):
    """The callable distance recorded as "dot" (tfa's docstring example)."""
    return tf.linalg.matmul(x, x, transpose_b=True)


def case(name):
    get = lambda key: DATA[f"{name}/{key}"]  # noqa: E731
    metric = str(get("metric"))
    return dict(
        loss=str(get("loss")),
        labels=get("labels"),
        x=get("x"),
        margin=float(get("margin")),
        metric=dot_similarity if metric == "dot" else metric,
        soft=bool(get("soft")),
        value=get("value"),
        grad=get("grad"),
    )


def run(c, x, labels=None, sample_mask=None):
    """Our loss for a fixture case on input x (watched for gradients)."""
    labels = c["labels"] if labels is None else labels
    kw = {} if sample_mask is None else {"sample_mask": sample_mask}
    name = c["loss"]
    if name == "triplet_semihard_loss":
        return losses.triplet_semihard_loss(x, labels, c["margin"], c["metric"], **kw)
    if name == "triplet_hard_loss":
        return losses.triplet_hard_loss(x, labels, c["margin"], c["soft"], c["metric"], **kw)
    if name == "lifted_struct_loss":
        return losses.lifted_struct_loss(x, labels, c["margin"], **kw)
    if name == "npairs_loss":
        return losses.npairs_loss(x, labels)
    if name == "contrastive_loss":
        return losses.pairwise_contrastive_loss(x, labels, c["margin"])
    raise AssertionError(name)


def value_and_grad(c, x, **kw):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        v = run(c, x, **kw)
        total = tf.reduce_sum(v)
    return v.numpy(), tape.gradient(total, x).numpy()


def test_fixture_file_is_complete_and_small():
    assert os.path.getsize(FIXTURES) < 1_000_000
    kinds = {str(DATA[f"{c}/loss"]) for c in CASES}
    assert kinds == {"triplet_semihard_loss", "triplet_hard_loss", "lifted_struct_loss",
                     "npairs_loss", "contrastive_loss"}
    metrics = {str(DATA[f"{c}/metric"]) for c in CASES}
    assert {"L2", "squared-L2", "angular", "dot"} <= metrics
    assert str(DATA["meta/tensorflow_addons"]) == "0.23.0"


FINITE = [c for c in CASES if np.all(np.isfinite(DATA[f"{c}/value"]))]
NAN = [c for c in CASES if c not in FINITE]


@pytest.mark.parametrize("name", FINITE)
def test_value_and_gradient_match_tfa(name):
    c = case(name)
    v, g = value_and_grad(c, c["x"])
    np.testing.assert_allclose(v, c["value"], rtol=1e-5, atol=1e-7)
    scale = max(float(np.max(np.abs(c["grad"]))), 1e-6)
    np.testing.assert_allclose(g, c["grad"], rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize("name", NAN)
def test_where_tfa_gives_nan_we_give_zero(name):
    # tfa divides by a zero pair count (no positive pair) or takes log(0) (one
    # class only); the documented deviation is 0.0 with zero gradients.
    c = case(name)
    v, g = value_and_grad(c, c["x"])
    assert v == 0.0
    assert np.all(g == 0.0)


@pytest.mark.parametrize("loss", ["triplet_semihard_loss", "triplet_hard_loss",
                                  "lifted_struct_loss"])
def test_padding_rows_change_nothing(loss):
    name = next(n for n in FINITE if str(DATA[f"{n}/loss"]) == loss)
    c = case(name)
    rng = np.random.default_rng(0)
    pad = rng.normal(size=(3, c["x"].shape[1])).astype(np.float32) * 5
    x = np.concatenate([c["x"], pad])
    labels = np.concatenate([c["labels"], c["labels"][:3]])  # would pair with real rows
    mask = np.arange(len(x)) < len(c["x"])
    v, g = value_and_grad(c, x, labels=labels, sample_mask=mask)
    np.testing.assert_allclose(v, c["value"], rtol=1e-5)
    scale = float(np.max(np.abs(c["grad"])))
    np.testing.assert_allclose(g[: len(c["x"])], c["grad"], rtol=1e-5, atol=1e-5 * scale)
    assert np.all(g[len(c["x"]):] == 0.0)


def test_keras_loss_classes_match_functions_and_round_trip():
    semi = case(next(n for n in FINITE if str(DATA[f"{n}/loss"]) == "triplet_semihard_loss"
                     and str(DATA[f"{n}/metric"]) == "angular"))
    hard = case(next(n for n in FINITE if str(DATA[f"{n}/loss"]) == "triplet_hard_loss"
                     and bool(DATA[f"{n}/soft"])))
    lifted = case(next(n for n in FINITE if str(DATA[f"{n}/loss"]) == "lifted_struct_loss"))
    npairs = case(next(n for n in FINITE if str(DATA[f"{n}/loss"]) == "npairs_loss"))
    contr = case(next(n for n in FINITE if str(DATA[f"{n}/loss"]) == "contrastive_loss"))
    objs = [
        (losses.TfaTripletSemiHardLoss(semi["margin"], semi["metric"]), semi),
        (losses.TfaTripletHardLoss(hard["margin"], soft=True, distance_metric=hard["metric"]),
         hard),
        (losses.TfaLiftedStructLoss(lifted["margin"]), lifted),
        (losses.TfaNpairsLoss(), npairs),
        (losses.TfaContrastiveLoss(contr["margin"]), contr),
    ]
    for obj, c in objs:
        expected = np.mean(c["value"])  # ContrastiveLoss: mean over pairs, as tfa
        np.testing.assert_allclose(obj(c["labels"], c["x"]).numpy(), expected, rtol=1e-5)
        clone = keras.losses.deserialize(keras.losses.serialize(obj))
        assert type(clone) is type(obj)
        np.testing.assert_allclose(clone(c["labels"], c["x"]).numpy(), expected, rtol=1e-5)


def test_half_precision_inputs_computed_in_float32():
    c = case(next(n for n in FINITE if str(DATA[f"{n}/loss"]) == "triplet_semihard_loss"
                  and str(DATA[f"{n}/metric"]) == "L2"))
    x16 = tf.cast(c["x"], tf.bfloat16)
    v = losses.triplet_semihard_loss(x16, c["labels"], c["margin"])
    assert v.dtype == tf.float32
    ref = losses.triplet_semihard_loss(tf.cast(x16, tf.float32), c["labels"], c["margin"])
    np.testing.assert_allclose(v.numpy(), ref.numpy(), rtol=1e-6)


def test_compiles_with_xla():
    c = case(next(n for n in FINITE if str(DATA[f"{n}/loss"]) == "triplet_semihard_loss"))

    @tf.function(jit_compile=True)
    def f(x, labels):
        return (losses.triplet_semihard_loss(x, labels, c["margin"])
                + losses.triplet_hard_loss(x, labels) + losses.lifted_struct_loss(x, labels))

    eager = (losses.triplet_semihard_loss(c["x"], c["labels"], c["margin"])
             + losses.triplet_hard_loss(c["x"], c["labels"])
             + losses.lifted_struct_loss(c["x"], c["labels"]))
    np.testing.assert_allclose(f(c["x"], c["labels"]).numpy(), eager.numpy(), rtol=1e-5)


def test_bad_arguments_raise_naming_them():
    x = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match="distance_metric"):
        losses.triplet_semihard_loss(x, [0, 0, 1, 1], distance_metric="cosine")
    with pytest.raises(ValueError, match="labels"):
        losses.triplet_hard_loss(x, [0, 0, 1])
    with pytest.raises(ValueError, match="embeddings"):
        losses.lifted_struct_loss(x[0], [0, 0, 1, 1])
    with pytest.raises(ValueError, match="similarity_matrix"):
        losses.npairs_loss(x, [0, 1, 2, 3])


def test_keras_fit_with_tfa_style_loss():
    # The tfa recipe: model.compile(loss=TfaTripletSemiHardLoss()) and fit on (x, labels).
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 6)).astype(np.float32)
    y = np.repeat(np.arange(8), 4).astype(np.int32)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4),
                              keras.layers.UnitNormalization()])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=losses.TfaTripletSemiHardLoss())
    history = model.fit(x, y, batch_size=32, epochs=3, verbose=0, shuffle=False)
    first, last = history.history["loss"][0], history.history["loss"][-1]
    expected = losses.triplet_semihard_loss(model(x), y).numpy()
    assert np.isfinite(first) and last < first
    np.testing.assert_allclose(model.evaluate(x, y, batch_size=32, verbose=0), expected,
                               rtol=1e-5)
