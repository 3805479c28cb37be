"""Run by tests/test_losses_reference.py in a subprocess (two logical CPU devices).

Each replica's anchors (its half of the batch) meet the all-gathered global
batch as reference set; the loss R * total / (global count), scaled by 1/R and
with gradients summed over replicas, must equal one device's loss and gradient
on the whole batch. Prints one JSON line per loss: loss difference and max
gradient difference relative to the largest gradient.
"""

import json

import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from sst_tf import losses  # noqa: E402

strategy = tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"])
rng = np.random.default_rng(0)
x = rng.normal(size=(12, 3)).astype(np.float32)
y = np.repeat(np.arange(4), 3).astype(np.int32)
with strategy.scope():
    w = tf.Variable(rng.normal(size=(3, 3)).astype(np.float32))

PARTS = {
    "contrastive": lambda e, lab, ge, gy, off: losses.contrastive_parts(
        e, lab, 0.5, ref_embeddings=ge, ref_labels=gy),
    "multi_similarity": lambda e, lab, ge, gy, off: losses.multi_similarity_parts(
        e, lab, ref_embeddings=ge, ref_labels=gy, ref_offset=off),
}
WHOLE = {"contrastive": lambda e: losses.contrastive_loss(e, y, 0.5),
         "multi_similarity": lambda e: losses.multi_similarity_loss(e, y)}


def replica_step(name, xs, ys):
    ctx = tf.distribute.get_replica_context()
    r = ctx.num_replicas_in_sync
    with tf.GradientTape() as tape:
        e = tf.matmul(xs, w)
        ge, gy = ctx.all_gather(e, 0), ctx.all_gather(ys, 0)
        offset = ctx.replica_id_in_sync_group * tf.shape(e)[0]
        total, count = PARTS[name](e, ys, ge, gy, offset)
        loss = r * total / ctx.all_reduce("sum", tf.stop_gradient(count))
        scaled = loss / r
    return ctx.all_reduce("sum", tape.gradient(scaled, w)), ctx.all_reduce("mean", loss)


ds = strategy.experimental_distribute_dataset(
    tf.data.Dataset.from_tensor_slices((x, y)).batch(12))
batch = next(iter(ds))
for name in PARTS:
    g, loss = tf.function(lambda b, n=name: strategy.run(replica_step, args=(n, *b)))(batch)
    g = strategy.experimental_local_results(g)[0].numpy()
    loss = float(strategy.experimental_local_results(loss)[0])
    with tf.GradientTape() as tape:
        whole = WHOLE[name](tf.matmul(x, w))
    gw = tape.gradient(whole, w).numpy()
    print(json.dumps({"loss": name, "loss_diff": abs(loss - float(whole)),
                      "whole": float(whole),
                      "grad_rel": float(np.abs(g - gw).max() / np.abs(gw).max())}))
