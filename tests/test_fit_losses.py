import keras
import numpy as np
import pytest
import tensorflow as tf

from sst_tf import fit, loss_registry, losses, pipeline, sampling
from sst_tf import model as model_lib

OPTS = pipeline.ImageOptions(16, 16, random_flip=False)


@pytest.fixture(scope="module")
def batches(tiny):
    """Two fixed sampler batches (images, packed y) of 20 rows with targets."""
    keras.utils.set_random_seed(0)
    model = model_lib.build_model("small_cnn", None, 8, image_size=16)
    sampler = sampling.make_sampler("local", tiny.train.labels, 20, num_targets=3, seed=0,
                                    neighborhoods="classes", members_per_class=4)
    source = fit.SamplerDataset(tiny.train, sampler, OPTS, steps_per_epoch=2)
    return list(source.dataset(model).as_numpy_iterator())


def _dataset(batches):
    return tf.data.Dataset.from_tensor_slices(
        tuple(np.stack(b) for b in zip(*batches, strict=True)))


def _fit(model, loss, batches, run_eagerly=False):
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loss, run_eagerly=run_eagerly)
    start = [w.copy() for w in model.get_weights()]
    ds = _dataset(batches)
    hist = model.fit(ds, epochs=1, verbose=0, shuffle=False)
    moved = max(float(np.abs(a - b).max()) for a, b in zip(model.get_weights(), start,
                                                            strict=True))
    return hist.history["loss"][0], moved


def test_pack_unpack_round_trip():
    labels = np.array([3, 1, -1])
    targets = np.array([[1, -1], [0, -1], [-1, -1]])
    mask = np.array([True, True, False])
    y = fit.pack_targets(labels, targets, mask)
    assert y.dtype == tf.int32 and y.shape == (3, 4)
    got = fit.unpack_targets(y)
    for a, b in zip(got, (labels, targets, mask), strict=True):
        np.testing.assert_array_equal(a.numpy(), b)
    with pytest.raises(ValueError, match="2 \\+ k"):
        fit.unpack_targets(np.zeros([3], np.int32))


@pytest.mark.parametrize("name", fit.LOSSES)
def test_each_loss_trains_inside_fit(name, batches):
    keras.utils.set_random_seed(0)
    model = model_lib.build_model("small_cnn", None, 8, image_size=16)
    images, y = batches[0]
    # The Keras loss equals the pure function of sst_tf.losses on the unpacked batch.
    emb = model(images, training=False)
    labels, targets, mask = fit.unpack_targets(y)
    want = fit.loss_function(name)(emb, labels, targets, mask)
    np.testing.assert_allclose(float(fit.MetricLoss(name)(y, emb)), float(want), rtol=1e-6)
    # Graph mode (as users run fit) for the losses over target tables; the others
    # eagerly (a graph build per loss is slow; the functions are traced elsewhere).
    loss, moved = _fit(model, fit.MetricLoss(name), batches,
                       run_eagerly=name not in fit.TARGET_LOSSES)
    assert np.isfinite(loss)
    assert moved > 0


def test_loss_matches_the_functions_and_masks_padding(batches):
    images, y = batches[0]
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(20, 8)).astype(np.float32)
    labels, targets, mask = fit.unpack_targets(y)
    # The registry's SST on unit vectors by default; the paper's form on raw ones.
    sst = loss_registry.spec("sst")
    np.testing.assert_allclose(
        float(fit.MetricLoss("sst")(y, emb)),
        float(losses.sst_loss(emb, labels, targets, mask, scale=sst.params["scale"],
                              imposters=sst.params["imposters"])), rtol=1e-6)
    np.testing.assert_allclose(
        float(fit.MetricLoss("sst", normalize=False)(y, emb)),
        float(losses.sst_loss(emb, labels, targets, mask)), rtol=1e-6)
    np.testing.assert_allclose(
        float(fit.MetricLoss("triplet", margin=0.7)(y, emb)),
        float(losses.triplet_loss(emb, labels, targets, margin=0.7, sample_mask=mask)),
        rtol=1e-6)
    # A masked-out row changes nothing, whatever its embedding.
    y2 = y.copy()
    y2[5, 1] = 0
    y2[:, 2:][y2[:, 2:] == 5] = -1
    e2 = emb.copy()
    e2[5] = 1e3
    ref = losses.sst_loss(np.delete(emb, 5, 0), np.delete(y[:, 0], 5),
                          _drop_row_targets(y[:, 2:], 5))
    np.testing.assert_allclose(float(fit.MetricLoss("sst", normalize=False)(y2, e2)),
                               float(ref), rtol=1e-5)


def test_npairs_scale_reaches_the_loss_and_its_config(batches):
    _, y = batches[0]
    emb = tf.math.l2_normalize(np.random.default_rng(1).normal(size=(20, 8)), axis=1)
    emb = tf.cast(emb, tf.float32)
    labels, _, mask = fit.unpack_targets(y)
    loss = fit.MetricLoss("npairs", params={"scale": 9.0})
    # On unit vectors, scaling the logits by 9 is scaling the vectors by 3; the
    # registry's L2 penalty on the (unit) embeddings adds l2_penalty / 2.
    penalty = 0.5 * loss_registry.spec("npairs").params["l2_penalty"]
    want = losses.batch_npairs_loss(emb * 3.0, labels, mask) + penalty
    np.testing.assert_allclose(float(loss(y, emb)), float(want), rtol=1e-5)
    assert abs(float(fit.MetricLoss("npairs")(y, emb)) - float(want)) > 0.1
    clone = fit.MetricLoss.from_config(loss.get_config())
    np.testing.assert_allclose(float(clone(y, emb)), float(want), rtol=1e-5)
    value = fit.LossValue("npairs", params={"scale": 9.0})
    value.update_state(y, emb)
    np.testing.assert_allclose(float(value.result()), float(want), rtol=1e-5)


def test_params_reach_the_loss_and_its_config(batches):
    from test_losses_baselines import ms_reference
    _, y = batches[0]
    emb = np.random.default_rng(2).normal(size=(20, 8)).astype(np.float32)
    labels, _, mask = fit.unpack_targets(y)
    params = {"alpha": 0.01, "beta": 40.0, "base": 0.77}
    want = ms_reference(emb, labels.numpy(), mask=mask.numpy(), **params)
    loss = fit.MetricLoss("multi_similarity", params=params)
    np.testing.assert_allclose(float(loss(y, emb)), want, rtol=1e-5)
    clone = fit.MetricLoss.from_config(loss.get_config())
    np.testing.assert_allclose(float(clone(y, emb)), want, rtol=1e-5)
    value = fit.LossValue("multi_similarity", params=params)
    value.update_state(y, emb)
    np.testing.assert_allclose(float(value.result()), want, rtol=1e-5)
    with pytest.raises(ValueError, match="no parameter delta"):
        fit.MetricLoss("multi_similarity", params={"delta": 0.1})


def _drop_row_targets(targets, row):
    t = np.delete(targets, row, 0)
    t = np.where(t == row, -1, t)
    return np.where(t > row, t - 1, t)


def test_mixed_precision_fit(batches):
    old = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(0)
        model = model_lib.build_model("small_cnn", None, 8, image_size=16)
        assert model.layers[2].compute_dtype == "float16"
        loss, moved = _fit(model, fit.MetricLoss("sst"), batches)
    finally:
        keras.config.set_dtype_policy(old)
    assert np.isfinite(loss) and moved > 0
    emb16 = tf.cast(tf.random.normal([20, 8]), tf.float16)
    assert fit.MetricLoss("sst")(batches[0][1], emb16).dtype == tf.float32


def _fit_moves_model_and_loss_weights(model, inner, batches, loss_weights):
    """One epoch of `model.fit` (2 steps, lr 1e-3) on a wrapper whose loss weights learn 10x.

    The wrapped model's weights move; Adam moves each of the loss's weights
    (`loss_weights()`) by about lr x multiplier per step.
    """
    before = loss_weights().numpy().copy()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), run_eagerly=True)  # graph: mirrored test
    start = [w.copy() for w in inner.get_weights()]
    hist = model.fit(_dataset(batches), epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(hist.history["loss"][0])
    assert any(not np.array_equal(a, b) for a, b in zip(inner.get_weights(), start, strict=True))
    step = np.abs(loss_weights().numpy() - before).max()
    assert 1e-2 < step <= 2 * 1e-3 * 10.0 * 1.01


def test_proxy_anchor_wrapper_trains_model_and_proxies(batches, tiny):
    keras.utils.set_random_seed(0)
    inner = model_lib.build_model("small_cnn", None, 8, image_size=16)
    model = fit.ProxyAnchorModel(inner, tiny.train.labels, seed=0, lr_multiplier=10.0)
    images, y = batches[0]
    emb = model(images)
    labels, _, mask = fit.unpack_targets(y)
    want = losses.proxy_anchor_loss(emb, labels, model.proxies, sample_mask=mask)  # ids 0..9
    np.testing.assert_allclose(float(model.compute_loss(y=y, y_pred=emb)), float(want),
                               rtol=1e-6)
    _fit_moves_model_and_loss_weights(model, inner, batches, lambda: model.proxies)
    np.testing.assert_array_equal(model.class_index([0, 9, 42]).numpy(), [0, 9, -1])


@pytest.mark.parametrize("loss", loss_registry.MARGIN_LOSSES)
def test_margin_softmax_wrapper_trains_model_and_class_weights(batches, tiny, loss):
    keras.utils.set_random_seed(0)
    inner = model_lib.build_model("small_cnn", None, 8, image_size=16)
    model = fit.MarginSoftmaxModel(inner, loss, tiny.train.labels, seed=0, lr_multiplier=10.0)
    images, y = batches[0]
    emb = model(images)
    labels, _, mask = fit.unpack_targets(y)
    head = model.head
    want = getattr(losses, f"{loss}_loss")(
        emb, head.class_index(labels), head.class_weights, margin=head.margin,
        scale=head.scale, sample_mask=mask,
        **({"sub_centers": head.sub_centers} if loss == "subcenter_arcface" else {}))
    np.testing.assert_allclose(float(model.compute_loss(y=y, y_pred=emb)), float(want),
                               rtol=1e-6)
    # Plain int labels (a classification data set) give the same value without padding.
    real = mask.numpy()
    np.testing.assert_allclose(
        float(model.compute_loss(y=labels[real], y_pred=tf.boolean_mask(emb, real))),
        float(want), rtol=1e-5)
    _fit_moves_model_and_loss_weights(model, inner, batches, lambda: head.class_weights)
    # The same head classifies: logits [B, training classes].
    logits = model.logits(images).numpy()
    assert logits.shape == (len(images), len(head.class_ids)) and np.isfinite(logits).all()
    again = fit.MarginSoftmaxModel.from_config(model.get_config())
    assert (again.head.loss, again.head.margin, again.head.sub_centers) == (
        loss, head.margin, head.sub_centers)


def test_unknown_and_proxy_anchor_names():
    for loss in loss_registry.MARGIN_LOSSES:
        with pytest.raises(ValueError, match="MarginSoftmaxModel"):
            fit.MetricLoss(loss)
    with pytest.raises(ValueError, match="ProxyAnchorModel"):
        fit.MetricLoss("proxy_anchor")
    with pytest.raises(ValueError, match="loss must be one of"):
        fit.MetricLoss("nope")
    loss = fit.MetricLoss("triplet", margin=0.3)
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    assert (again.loss, again.margin) == ("triplet", 0.3)
    with pytest.raises(ValueError, match="sample weights"):
        loss(np.zeros([2, 3], np.int32), np.zeros([2, 4], np.float32), sample_weight=[1, 1])


def test_loss_value_metric_and_the_trainers_optimizer(batches):
    keras.utils.set_random_seed(0)
    model = model_lib.build_model("small_cnn", None, 8, image_size=16)
    before = [v.numpy().astype(np.float64) for v in model.trainable_variables]
    wd, lr = 0.01, 1e-3
    opt = fit.optimizer_for_loss("triplet_hard", lr, weight_decay=wd)
    # The loss's learning-rate factor from the registry, as the trainer's step.
    spec = loss_registry.spec("triplet_hard")
    assert float(opt.learning_rate) == pytest.approx(lr * spec.lr_multiplier)
    model.compile(optimizer=opt, loss=fit.MetricLoss("sst"), metrics=[fit.LossValue("sst")],
                  run_eagerly=True)
    x, y = batches[0]
    with tf.GradientTape() as tape:
        loss = fit.MetricLoss("sst")(y, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    hist = model.fit(_dataset(batches[:1]), epochs=1, verbose=0, shuffle=False)
    assert hist.history["sst_loss"][0] == pytest.approx(float(loss), rel=1e-5)
    # Adam's first step from zero moments: rate x G / (|G| + eps / sqrt(1 - beta_2)),
    # with G = g + wd x w the gradient with the coupled decay.
    rate, eps = lr * spec.lr_multiplier, opt.epsilon / np.sqrt(1 - opt.beta_2)
    moved_by_decay = False
    for v, w0, g in zip(model.trainable_variables, before, grads, strict=True):
        g = g.numpy().astype(np.float64)
        full = g + wd * w0
        step = w0 - v.numpy()
        np.testing.assert_allclose(step, rate * full / (np.abs(full) + eps), rtol=1e-3,
                                   atol=1e-9)
        moved_by_decay |= not np.allclose(step, rate * g / (np.abs(g) + eps), rtol=1e-3)
    assert moved_by_decay
    with pytest.raises(ValueError, match="weight_decay"):
        fit.optimizer_for_loss("sst", lr, weight_decay=-1.0)
