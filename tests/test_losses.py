"""Losses vs an explicit-triplet reference (docs/method.md#losses) written here."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from sst_tf import losses


def explicit_triplets(labels, targets, mask):
    """Enumerates (a, t, i) exactly as docs/method.md#local-sampling and #losses define them."""
    b = len(labels)
    out = []
    for a in range(b):
        if not mask[a]:
            continue
        for t in targets[a]:
            if t < 0 or t >= b or t == a or not mask[t] or labels[t] != labels[a]:
                continue
            for i in range(b):
                if mask[i] and labels[i] != labels[a]:
                    out.append((a, int(t), i))
    return out


def sq(u, v):
    return float(np.sum((np.asarray(u, np.float64) - np.asarray(v, np.float64)) ** 2))


def np_sst(x, trip):
    if not trip:
        return 0.0
    vals = [np.logaddexp(0.0, sq(x[a], x[t]) - (sq(x[a], x[i]) + sq(x[t], x[i])) / 2)
            for a, t, i in trip]
    return float(np.mean(vals))


def np_triplet(x, trip, margin):
    if not trip:
        return 0.0
    return float(np.mean([max(0.0, sq(x[a], x[t]) + margin - sq(x[a], x[i])) for a, t, i in trip]))


def np_contrastive(x, labels, mask, margin):
    rows = [r for r in range(len(labels)) if mask[r]]
    if not rows:
        return 0.0
    total = 0.0
    for p, q in itertools.product(rows, rows):
        dd = sq(x[p], x[q])
        total += dd if labels[p] == labels[q] else max(0.0, margin - dd)
    return total / len(rows)


def gather_form(x, trip, kind, margin=0.2):
    """The original's form: gather embedding rows per triplet (TF, for gradients)."""
    if not trip:
        return tf.reduce_sum(x) * 0.0
    idx = np.asarray(trip)
    xa, xt, xi = (tf.gather(x, idx[:, j]) for j in range(3))
    d_at = tf.reduce_sum(tf.square(xa - xt), 1)
    d_ai = tf.reduce_sum(tf.square(xa - xi), 1)
    d_ti = tf.reduce_sum(tf.square(xt - xi), 1)
    if kind == "sst":
        return tf.reduce_mean(tf.math.softplus(d_at - (d_ai + d_ti) / 2))
    return tf.reduce_mean(tf.nn.relu(d_at + margin - d_ai))


def random_targets(rng, labels, mask, k):
    """A target table with valid entries, -1s, self, masked and wrong-class entries."""
    b = len(labels)
    t = rng.integers(-1, b, size=(b, k))
    for a in range(b):
        same = [j for j in range(b) if labels[j] == labels[a] and j != a]
        for j in range(k):
            if same and rng.random() < 0.7:
                t[a, j] = rng.choice(same)
    return t.astype(np.int32)


def make_batch(seed, b=13, d=5, k=3, kind="uneven"):
    rng = np.random.default_rng(seed)
    if kind == "uneven":
        labels = np.array([0] * 6 + [1] * 3 + [2] * 2 + [3] + [4] * (b - 12))
    elif kind == "singletons":
        labels = np.arange(b)
    elif kind == "single_class":
        labels = np.zeros(b, int)
    else:
        labels = rng.integers(0, 3, b)
    rng.shuffle(labels)
    x = rng.normal(size=(b, d)).astype(np.float32)
    mask = rng.random(b) > 0.25
    targets = random_targets(rng, labels, mask, k)
    return x, labels, targets, mask


CASES = [(s, kind, use_mask) for s, kind in enumerate(["uneven", "random", "singletons",
                                                        "single_class", "uneven", "random"])
         for use_mask in (False, True)]


@pytest.mark.parametrize("seed,kind,use_mask", CASES)
def test_sst_and_triplet_match_explicit_triplets(seed, kind, use_mask):
    x, labels, targets, mask = make_batch(seed, kind=kind)
    m = mask if use_mask else np.ones(len(labels), bool)
    trip = explicit_triplets(labels, targets, m)
    arg = m if use_mask else None
    got = losses.sst_loss(x, labels, targets, sample_mask=arg)
    assert got.dtype == tf.float32 and got.shape == ()
    np.testing.assert_allclose(got.numpy(), np_sst(x, trip), rtol=1e-5, atol=1e-6)
    got = losses.triplet_loss(x, labels, targets, margin=0.3, sample_mask=arg)
    np.testing.assert_allclose(got.numpy(), np_triplet(x, trip, 0.3), rtol=1e-5, atol=1e-6)
    if kind in ("singletons", "single_class"):
        assert not trip


@pytest.mark.parametrize("seed,use_mask", [(0, False), (1, True), (2, True)])
def test_contrastive_matches_pair_loop(seed, use_mask):
    x, labels, _, mask = make_batch(seed, kind="uneven")
    x = x * 0.3  # so that some different-label pairs fall inside the margin
    m = mask if use_mask else np.ones(len(labels), bool)
    got = losses.contrastive_loss(x, labels, margin=0.5, sample_mask=m if use_mask else None)
    np.testing.assert_allclose(got.numpy(), np_contrastive(x, labels, m, 0.5), rtol=1e-5)


@pytest.mark.parametrize("seed,kind", [(3, "uneven"), (4, "random"), (5, "uneven")])
@pytest.mark.parametrize("loss", ["sst", "triplet"])
def test_gradients_match_gather_form(seed, kind, loss):
    x_np, labels, targets, mask = make_batch(seed, kind=kind)
    trip = explicit_triplets(labels, targets, mask)
    assert trip
    x = tf.Variable(x_np)
    fn = losses.sst_loss if loss == "sst" else losses.triplet_loss
    with tf.GradientTape(persistent=True) as tape:
        dense = fn(x, labels, targets, sample_mask=mask)
        ref = gather_form(x, trip, loss)
    np.testing.assert_allclose(dense.numpy(), ref.numpy(), rtol=1e-5)
    g_ref = tf.convert_to_tensor(tape.gradient(ref, x)).numpy()
    np.testing.assert_allclose(tape.gradient(dense, x).numpy(), g_ref, rtol=1e-4, atol=1e-6)


def test_no_triplet_gives_zero_loss_and_zero_gradients():
    rng = np.random.default_rng(0)
    x = tf.Variable(rng.normal(size=(6, 4)).astype(np.float32))
    cases = [
        (np.zeros(6, int), np.array([[1], [0], [3], [2], [5], [4]])),  # single class
        (np.arange(6), np.full((6, 1), -1)),  # singletons
        (np.array([0, 0, 1, 1, 2, 2]), np.full((6, 2), -1)),  # no targets at all
    ]
    for labels, targets in cases:
        for fn in (losses.sst_loss, losses.triplet_loss):
            with tf.GradientTape() as tape:
                val = fn(x, labels, targets)
            g = tape.gradient(val, x)
            assert val.numpy() == 0.0
            assert np.all(g.numpy() == 0.0)
    # All rows masked.
    labels = np.array([0, 0, 1, 1, 2, 2])
    targets = np.array([[1], [0], [3], [2], [5], [4]])
    for fn in (losses.sst_loss, losses.triplet_loss):
        with tf.GradientTape() as tape:
            val = fn(x, labels, targets, sample_mask=np.zeros(6, bool))
        assert val.numpy() == 0.0 and np.all(tape.gradient(val, x).numpy() == 0.0)
    with tf.GradientTape() as tape:
        val = losses.contrastive_loss(x, labels, sample_mask=np.zeros(6, bool))
    assert val.numpy() == 0.0 and np.all(tape.gradient(val, x).numpy() == 0.0)


def test_hand_made_sst_value():
    # a=(0,0), t=(1,0) same class; imposter i=(0,2). D_at=1, D_ai=4, D_ti=5.
    x = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]], np.float32)
    labels = np.array([0, 0, 1])
    targets = np.array([[1], [-1], [-1]])
    want = np.log1p(np.exp(1.0 - (4.0 + 5.0) / 2))
    np.testing.assert_allclose(losses.sst_loss(x, labels, targets).numpy(), want, rtol=1e-6)
    # Triplet loss: max(0, 1 + 0.2 - 4) = 0; with margin 3.5 it is 0.5.
    assert losses.triplet_loss(x, labels, targets).numpy() == 0.0
    np.testing.assert_allclose(losses.triplet_loss(x, labels, targets, margin=3.5).numpy(), 0.5)


def test_padding_rows_are_ignored_whatever_they_contain():
    x, labels, targets, _ = make_batch(7, kind="uneven")
    mask = np.ones(len(labels), bool)
    ref = losses.sst_loss(x, labels, targets).numpy()
    # Append padding rows with huge values, same labels as real rows, pointing at real rows.
    xp = np.concatenate([x, np.full((3, x.shape[1]), 50.0, np.float32)])
    lp = np.concatenate([labels, labels[:3]])
    tp = np.concatenate([targets, np.zeros((3, targets.shape[1]), np.int32)])
    mp = np.concatenate([mask, np.zeros(3, bool)])
    got = losses.sst_loss(xp, lp, tp, sample_mask=mp).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-6)


@pytest.mark.parametrize("dtype", [tf.bfloat16, tf.float16])
def test_low_precision_inputs_computed_in_float32(dtype):
    x, labels, targets, mask = make_batch(8, kind="uneven")
    xl = tf.cast(x, dtype)
    x32 = tf.cast(xl, tf.float32).numpy()  # the same values, exactly
    trip = explicit_triplets(labels, targets, mask)
    for fn, ref in ((losses.sst_loss, np_sst(x32, trip)),
                    (losses.triplet_loss, np_triplet(x32, trip, 0.2))):
        got = fn(xl, labels, targets, sample_mask=mask)
        assert got.dtype == tf.float32
        np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5, atol=1e-6)
    assert losses.contrastive_loss(xl, labels).dtype == tf.float32


def test_stable_for_large_norms():
    x, labels, targets, mask = make_batch(9, kind="uneven", d=16)
    x = 100.0 * x / np.linalg.norm(x, axis=1, keepdims=True)
    x = tf.Variable(x.astype(np.float32))
    trip = explicit_triplets(labels, targets, mask)
    for fn, kind in ((losses.sst_loss, "sst"), (losses.triplet_loss, "triplet")):
        with tf.GradientTape(persistent=True) as tape:
            val = fn(x, labels, targets, sample_mask=mask)
            ref = gather_form(x, trip, kind)
        g = tape.gradient(val, x).numpy()
        assert np.isfinite(val.numpy()) and np.all(np.isfinite(g))
        # Distances ~1e4: float32 cancellation in ||a||^2+||b||^2-2ab is ~1e-3 absolute.
        np.testing.assert_allclose(val.numpy(), ref.numpy(), rtol=1e-4, atol=1e-2)
        g_ref = tf.convert_to_tensor(tape.gradient(ref, x)).numpy()
        np.testing.assert_allclose(g, g_ref, rtol=1e-3, atol=1e-1)
    with tf.GradientTape() as tape:
        val = losses.contrastive_loss(x, labels)
    assert np.isfinite(val.numpy()) and np.all(np.isfinite(tape.gradient(val, x).numpy()))


def test_works_in_tf_function_with_dynamic_batch():
    x, labels, targets, mask = make_batch(10, kind="uneven")

    @tf.function(input_signature=[
        tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([None], tf.int64),
        tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None], tf.bool)])
    def f(a, b, c, d):
        return losses.sst_loss(a, b, c, d)

    trip = explicit_triplets(labels, targets, mask)
    np.testing.assert_allclose(f(x, labels.astype(np.int64), targets, mask).numpy(),
                               np_sst(x, trip), rtol=1e-5)


def test_bad_input_raises_naming_argument():
    x, labels, targets, mask = make_batch(11)
    with pytest.raises(ValueError, match="embeddings"):
        losses.sst_loss(x[0], labels, targets)
    with pytest.raises(ValueError, match="labels"):
        losses.sst_loss(x, labels[:-1], targets)
    with pytest.raises(ValueError, match="labels"):
        losses.contrastive_loss(x, labels[:, None])
    with pytest.raises(ValueError, match="target_neighbors"):
        losses.sst_loss(x, labels, targets[:, 0])
    with pytest.raises(ValueError, match="target_neighbors"):
        losses.triplet_loss(x, labels, targets[:-2])
    with pytest.raises(ValueError, match="sample_mask"):
        losses.sst_loss(x, labels, targets, sample_mask=mask[:-1])


def test_target_indices_outside_the_batch_are_refused():
    x = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
    y = np.array([0, 0, 1, 1, 2, 2])
    good = np.array([[1], [0], [3], [2], [5], [4]])
    assert float(losses.sst_loss(x, y, good)) > 0
    for bad in (99, 6, -5, -2):
        t = good.copy()
        t[2, 0] = bad
        with pytest.raises(ValueError, match=r"target_neighbors must hold batch row indices "
                                              r"in \[0, 6\) or -1"):
            losses.sst_loss(x, y, t)
        with pytest.raises(ValueError, match="target_neighbors"):
            losses.triplet_loss(x, y, t)
    t = good.copy()
    t[2, 0] = -1  # -1: no target, allowed
    assert np.isfinite(float(losses.sst_loss(x, y, t)))
