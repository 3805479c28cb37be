"""Run by tests/test_negatives.py in a subprocess (two logical CPU devices).

For every loss: each replica gets half of a batch (its own neighbourhood and
target table), `negatives.global_negatives` makes its loss the global batch's;
the loss divided by 2 and the gradients summed over the replicas (as the
trainer's step does) must equal one device's loss and gradients on the whole
batch, the target tables of the halves shifted into it. Also the `fit` path:
`MetricLoss(..., global_negatives=True)` under the strategy, times the
replicas, equals the whole batch's loss (losses without weights of their
own). Prints one JSON line per loss.
"""

import json

import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from sst_tf import fit, loss_registry, losses, negatives  # noqa: E402
from sst_tf.config import LOSSES  # noqa: E402

strategy = tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"])
rng = np.random.default_rng(0)
HALF, DIM, K = 8, 3, 2
x = rng.normal(size=(2 * HALF, 4)).astype(np.float32)
# Each half holds 4 classes x 2 images; classes 0 and 1 appear in both halves.
y = np.array([0, 0, 1, 1, 2, 2, 3, 3, 0, 0, 1, 1, 4, 4, 5, 5], np.int32)
mask = np.ones(2 * HALF, bool)
mask[-1] = False  # a padding row in the second half
local_t = np.full((2 * HALF, K), -1, np.int32)
for i in range(2 * HALF):  # the other image of the pair, in the half's own rows
    local_t[i, 0] = (i % HALF) ^ 1
whole_t = np.where(local_t >= 0, local_t + (np.arange(2 * HALF) // HALF * HALF)[:, None], -1)
with strategy.scope():
    w = tf.Variable(rng.normal(size=(4, DIM)).astype(np.float32))
    layers = {"proxy_anchor": losses.ProxyAnchor(class_ids=np.unique(y), embedding_dim=DIM,
                                                 seed=0)}
    for margin_loss in loss_registry.MARGIN_LOSSES:
        layers[margin_loss] = losses.MarginSoftmax(margin_loss, class_ids=np.unique(y),
                                                   embedding_dim=DIM, seed=0)


def loss_of(name):
    return losses.make_loss(name, loss_layer=layers.get(name))


def variables_of(name):
    return [w, *layers[name].trainable_variables] if name in layers else [w]


def replica_step(name, xs, ys, ts, ms):
    ctx = tf.distribute.get_replica_context()
    fn = negatives.global_negatives(loss_of(name))
    variables = variables_of(name)
    with tf.GradientTape() as tape:
        e = embed(name, xs)
        loss = fn(e, ys, ts, ms)
        scaled = loss / ctx.num_replicas_in_sync
    grads = ctx.all_reduce("sum", tape.gradient(scaled, variables))
    return grads, ctx.all_reduce("mean", loss)


def embed(name, xs):
    e = tf.matmul(xs, w)
    return tf.math.l2_normalize(e, axis=1) if name == "sst" else e


def local_step(name, xs, ys, ts, ms):  # the control: each replica's own half only
    return tf.distribute.get_replica_context().all_reduce(
        "mean", loss_of(name)(embed(name, xs), ys, ts, ms))


def fit_step(name, xs, ys, ts, ms):
    e = embed(name, xs)
    metric_loss = fit.MetricLoss(name, global_negatives=True)
    return tf.distribute.get_replica_context().all_reduce(
        "sum", metric_loss(fit.pack_targets(ys, ts, ms), e))


ds = strategy.experimental_distribute_dataset(
    tf.data.Dataset.from_tensor_slices((x, y, local_t, mask)).batch(2 * HALF))
batch = next(iter(ds))
for name in LOSSES:
    grads, loss = tf.function(lambda b, n=name: strategy.run(replica_step, args=(n, *b)))(batch)
    grads = [strategy.experimental_local_results(g)[0].numpy() for g in grads]
    loss = float(strategy.experimental_local_results(loss)[0])
    variables = variables_of(name)
    with tf.GradientTape() as tape:
        e = embed(name, x)
        whole = loss_of(name)(e, y, whole_t, mask)
    whole_grads = tape.gradient(whole, variables)
    rel = max(float(np.abs(g - gw.numpy()).max() / max(np.abs(gw.numpy()).max(), 1e-30))
              for g, gw in zip(grads, whole_grads, strict=True))
    line = {"loss": name, "loss_diff": abs(loss - float(whole)), "whole": float(whole),
            "grad_rel": rel, "grad_max": float(np.abs(whole_grads[0].numpy()).max())}
    local = tf.function(lambda b, n=name: strategy.run(local_step, args=(n, *b)))(batch)
    line["local_diff"] = abs(float(strategy.experimental_local_results(local)[0]) - float(whole))
    if name not in loss_registry.WEIGHTED_LOSSES:
        fitted = tf.function(lambda b, n=name: strategy.run(fit_step, args=(n, *b)))(batch)
        line["fit_diff"] = abs(float(strategy.experimental_local_results(fitted)[0])
                               - float(whole))
    print(json.dumps(line))
