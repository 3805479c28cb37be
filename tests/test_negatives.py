"""sst_tf.negatives: the global batch over replicas and the cross-batch memory."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from sst_tf import loss_registry, losses, negatives
from sst_tf.config import LOSSES

HERE = os.path.dirname(os.path.abspath(__file__))


# -- global negatives on two logical CPUs -------------------------------------------


@pytest.mark.slow
def test_two_replicas_with_global_negatives_equal_one_device_for_every_loss():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(HERE), HERE]))
    out = subprocess.run([sys.executable, os.path.join(HERE, "_global_negatives_check.py")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = {r["loss"]: r for r in (json.loads(line) for line in out.stdout.splitlines()
                                   if line.startswith("{"))}
    assert set(rows) == set(LOSSES)
    for name, r in rows.items():
        assert r["whole"] > 0 and r["grad_max"] > 0, r
        assert r["loss_diff"] <= 1e-5 * r["whole"], r  # one device on the whole batch
        assert r["grad_rel"] <= 1e-5, r
        # The control: each replica on its own half is a different loss, so the
        # equality above is not an accident of the data. (A margin softmax is
        # a mean of per-row terms, with no negatives to gather: the halves'
        # mean differs from the whole only by the padding row's weighting.)
        if name not in loss_registry.MARGIN_LOSSES:
            assert r["local_diff"] > 1e-3 * r["whole"], r
        if name not in loss_registry.WEIGHTED_LOSSES:  # fit's MetricLoss, times the replicas
            assert r["fit_diff"] <= 1e-5 * r["whole"], r


def test_one_replica_global_batch_is_the_batch():
    e = tf.constant(np.arange(6, dtype=np.float32).reshape(3, 2))
    y, t, m = tf.constant([0, 0, 1]), tf.constant([[1], [0], [-1]]), tf.constant([True] * 3)
    for got, want in zip(negatives.gather_global_batch(e, y, t, m), (e, y, t, m), strict=True):
        np.testing.assert_array_equal(got.numpy(), want.numpy())
    fn = negatives.global_negatives(losses.make_loss("contrastive"))
    np.testing.assert_allclose(fn(e, y, t, m).numpy(),
                               losses.make_loss("contrastive")(e, y, t, m).numpy())


# -- the memory's queue --------------------------------------------------------------


def _batch(labels, dim=2, start=0.0):
    n = len(labels)
    e = start + np.arange(n * dim, dtype=np.float32).reshape(n, dim)
    return tf.constant(e), tf.constant(labels, tf.int32), tf.constant([True] * n)


def test_queue_is_newest_first_and_capped_at_its_size():
    mem = negatives.CrossBatchMemory(size=5, embedding_dim=2)
    assert mem.filled() == 0
    e1, y1, m1 = _batch([0, 1, 2])
    mem.update(e1, y1, m1)
    e2, y2, m2 = _batch([3, 4, 5], start=100.0)
    mem.update(e2, y2, m2)
    e, y, valid = (v.numpy() for v in mem.reference())
    np.testing.assert_array_equal(y, [3, 4, 5, 0, 1])  # the oldest row (label 2) dropped
    np.testing.assert_array_equal(e, np.concatenate([e2.numpy(), e1.numpy()[:2]]))
    assert valid.all() and mem.filled() == 5 and int(mem.steps.numpy()) == 2


def test_warmup_padding_and_non_finite_steps_never_enter_as_valid_rows():
    mem = negatives.CrossBatchMemory(size=8, embedding_dim=2, warmup_steps=2)
    e, y, m = _batch([0, 1, 2])
    mem.update(e, y, m)
    mem.update(e, y, m)
    assert mem.filled() == 0  # two warm-up steps
    mem.update(e, y, tf.constant([True, False, True]))  # a padding row
    assert mem.filled() == 2
    np.testing.assert_array_equal(mem.reference()[2].numpy()[:3], [True, False, True])
    bad = tf.constant([[np.nan, 1.0]] * 3, tf.float32)
    mem.update(bad, y, m, finite=tf.constant(False))  # a skipped step
    emb, _, valid = (v.numpy() for v in mem.reference())
    assert np.isfinite(emb).all() and not valid[:3].any() and mem.filled() == 2


def test_memory_arguments_are_checked():
    with pytest.raises(ValueError, match="memory size"):
        negatives.CrossBatchMemory(size=0, embedding_dim=2)
    with pytest.raises(ValueError, match="warm-up"):
        negatives.CrossBatchMemory(size=4, embedding_dim=2, warmup_steps=-1)


# -- reference-set forms -------------------------------------------------------------


def _neighbourhood_batch(seed=0, n=12, dim=4):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    y = np.repeat(np.arange(n // 3), 3).astype(np.int32)
    t = np.full((n, 2), -1, np.int32)
    for i in range(n):  # the two other images of the class
        t[i] = [j for j in range(3 * (i // 3), 3 * (i // 3) + 3) if j != i]
    m = np.ones(n, bool)
    m[-1] = False
    return x, y, t, m


@pytest.mark.parametrize("name", loss_registry.REFERENCE_LOSSES)
def test_reference_form_with_the_batch_as_reference_is_the_batch_loss(name):
    x, y, t, m = _neighbourhood_batch()
    if name == "sst":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    batch = losses.make_loss(name)(x, y, t, m).numpy()  # the registry's defaults
    ref = losses.make_reference_loss(name)(x, y, t, m, x, y, m, 0).numpy()
    if name == "npairs":  # the embeddings' L2 penalty (weight / 2 x mean |e|^2) stays out
        weight = loss_registry.spec("npairs").params["l2_penalty"]
        batch -= 0.5 * weight * (x[m].astype(np.float64) ** 2).sum(1).mean()
    assert batch > 0
    np.testing.assert_allclose(ref, batch, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(set(LOSSES) - set(loss_registry.REFERENCE_LOSSES)))
def test_losses_without_a_reference_form_are_refused_naming_those_with_one(name):
    with pytest.raises(ValueError, match=f"--loss={name} has no form.*multi_similarity"):
        losses.make_reference_loss(name)


def _numpy_triplet_hard(a, a_y, a_m, r, r_y, r_m, margin, self_offset=None):
    """Brute force, float64: each valid anchor's hardest positive and negative in r."""
    terms = []
    for i in np.flatnonzero(a_m):
        d = np.sqrt(((r.astype(np.float64) - a[i]) ** 2).sum(-1))
        cand = r_m.copy()
        if self_offset is not None:
            cand[self_offset + i] = False
        pos, neg = cand & (r_y == a_y[i]), cand & (r_y != a_y[i])
        assert pos.any() and neg.any()  # the data below give every anchor both
        terms.append(max(d[pos].max() - d[neg].min() + margin, 0.0))
    return np.mean(terms)


def test_memory_loss_against_a_numpy_brute_force_and_its_gradient():
    x, y, t, m = _neighbourhood_batch(seed=1)
    rng = np.random.default_rng(2)
    mem = negatives.CrossBatchMemory(size=20, embedding_dim=4)
    mem_x = rng.normal(size=(16, 4)).astype(np.float32)
    mem_y = np.tile(np.arange(4), 4).astype(np.int32)
    mem.update(mem_x, mem_y, np.array([True] * 15 + [False]))
    margin = loss_registry.spec("triplet_hard").margin
    base = losses.make_loss("triplet_hard")
    fn = negatives.with_memory(base, losses.make_reference_loss("triplet_hard"), mem, 0.5)
    xv = tf.Variable(x)
    with tf.GradientTape(persistent=True) as tape:
        total = fn(xv, y, t, m)
        alone = base(xv, y, t, m)
    e, ey, ev = (v.numpy() for v in mem.reference())
    ref = np.concatenate([x, e]), np.concatenate([y, ey]), np.concatenate([m, ev])
    want = alone.numpy() + 0.5 * _numpy_triplet_hard(x, y, m, *ref, margin, self_offset=0)
    np.testing.assert_allclose(total.numpy(), want, rtol=1e-5)
    # The memory term moves the anchors only: its gradient differs from the batch loss's.
    assert not np.allclose(tape.gradient(total, xv).numpy(), tape.gradient(alone, xv).numpy())


def test_an_empty_memory_adds_nothing():
    x, y, t, m = _neighbourhood_batch(seed=3)
    mem = negatives.CrossBatchMemory(size=20, embedding_dim=4, warmup_steps=5)
    base = losses.make_loss("multi_similarity")
    fn = negatives.with_memory(base, losses.make_reference_loss("multi_similarity"), mem)
    xv = tf.Variable(x)
    with tf.GradientTape(persistent=True) as tape:
        total, alone = fn(xv, y, t, m), base(xv, y, t, m)
    assert alone.numpy() > 0
    np.testing.assert_allclose(total.numpy(), alone.numpy(), rtol=1e-6)
    np.testing.assert_allclose(tape.gradient(total, xv).numpy(),
                               tape.gradient(alone, xv).numpy(), rtol=1e-6)
