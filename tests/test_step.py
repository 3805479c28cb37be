"""sst_tf.step: the per-replica step, built and called without the epoch loop."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from sst_tf import losses, step
from sst_tf import model as model_lib


def _batch(seed=0, b=12, side=8, k=2):
    rng = np.random.default_rng(seed)
    images = tf.constant(rng.uniform(0, 255, (b, side, side, 3)), tf.float32)
    labels = tf.constant(np.repeat(np.arange(b // 3), 3), tf.int32)
    targets = np.full((b, k), -1, np.int32)
    for a in range(b):  # the other members of its class
        targets[a] = [j for j in range(3 * (a // 3), 3 * (a // 3) + 3) if j != a][:k]
    mask = tf.constant(np.arange(b) < b - 1)  # last row is padding
    return images, labels, tf.constant(targets), mask


def _adam_first_step(lr, g):
    """Keras Adam's first update for gradient g (beta_2 0.999, epsilon 1e-7), in float64."""
    g = np.asarray(g, np.float64)
    return -lr * g / (np.abs(g) + 1e-7 / math.sqrt(1 - 0.999))


def _build(lr=1e-2, **kw):
    keras.utils.set_random_seed(3)
    model = model_lib.build_model("small_cnn", None, 6, image_size=8)
    backbone, head = model_lib.variable_groups(model)
    loss_fn = losses.make_loss("sst", normalize=False)  # the paper's form
    return model, step.TrainStep(model, loss_fn, backbone, head, lr=lr, **kw)


def test_one_step_applies_adam_to_every_group_from_the_loss_it_reports():
    model, s = _build(lr=1e-2, head_lr_multiplier=10.0)
    batch = _batch()
    before = [v.numpy().copy() for v in s.backbone_vars + s.head_vars]
    with tf.GradientTape() as tape:  # the same loss and gradients, computed here
        loss = losses.sst_loss(model(batch[0], training=True), batch[1], batch[2],
                               sample_mask=batch[3])
    grads = tape.gradient(loss, s.backbone_vars + s.head_vars)
    got, embeddings = s(*batch)
    assert float(got) == pytest.approx(float(loss), rel=1e-5)
    assert embeddings.shape == (12, 6)
    assert int(s.backbone_optimizer.iterations) == int(s.head_optimizer.iterations) == 1
    # Adam's first step, computed here: backbone at lr, head at 10 x lr.
    nb = len(s.backbone_vars)
    for i, (v, g, old) in enumerate(zip(s.backbone_vars + s.head_vars, grads, before,
                                        strict=True)):
        lr = 1e-2 * (10.0 if i >= nb else 1.0)
        np.testing.assert_allclose(v.numpy() - old, _adam_first_step(lr, g.numpy()),
                                   rtol=1e-3, atol=1e-6)


def test_a_non_finite_gradient_changes_nothing_and_returns_nan():
    model, s = _build()

    def poisoned(embeddings, labels, targets, mask):
        return losses.sst_loss(embeddings, labels, targets, sample_mask=mask) * math.inf

    s.loss_fn = poisoned
    before = [v.numpy().copy() for v in model.trainable_variables]
    got, _ = s(*_batch())
    assert math.isnan(float(got))
    assert int(s.head_optimizer.iterations) == 0 and int(s.backbone_optimizer.iterations) == 0
    for v, old in zip(model.trainable_variables, before, strict=True):
        np.testing.assert_array_equal(v.numpy(), old)


def test_coupled_weight_decay_and_learning_rate_scaling():
    _, s = _build(lr=1e-3, weight_decay=0.5)
    # With zero gradients only the decay acts: Adam sees 0.5 x v.
    zeros = [tf.zeros_like(v) for v in s.backbone_vars + s.head_vars]
    before = [v.numpy().copy() for v in s.backbone_vars + s.head_vars]
    s.apply_gradients(zeros)
    for v, old in zip(s.backbone_vars + s.head_vars, before, strict=True):
        np.testing.assert_allclose(v.numpy() - old, _adam_first_step(1e-3, 0.5 * old),
                                   rtol=1e-3, atol=1e-7)
    s.scale_learning_rates(0.5)
    assert s.learning_rates == pytest.approx((5e-4, 5e-4))


def test_float16_state_is_checkpointed_with_the_optimizers():
    _, s = _build(mixed_precision="float16")
    items = s.checkpoint_items()
    assert set(items) == {"backbone_optimizer", "head_optimizer", "loss_scale"}
    assert float(items["loss_scale"].scale.numpy()) == 2.0**15
