"""Run by tests/test_fit_data.py in a subprocess (two logical CPU devices).

1. SamplerDataset under MirroredStrategy(["CPU:0", "CPU:1"]): each replica's
   slice of every step is one whole plan batch, in plan order.
2. One `fit` step with SGD under the strategy (each replica one batch, the
   loss divided by the replicas by MetricLoss) against one device stepping on
   the mean of the same two batch losses (gradients by hand), from the same
   weights. Also the proxy-anchor wrapper. Prints one JSON line.
"""

import json

import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
from _tiny_data import tiny_digits  # noqa: E402

from sst_tf import fit, pipeline, sampling  # noqa: E402
from sst_tf import model as model_lib  # noqa: E402

tiny = tiny_digits()
opts = pipeline.ImageOptions(16, 18, random_flip=False)
strategy = tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"])
out = {"replicas": strategy.num_replicas_in_sync}


def build():
    keras.utils.set_random_seed(1)
    return model_lib.build_model("small_cnn", None, 8, image_size=16)


# 1. Whole plan batches per replica.
with strategy.scope():
    mirrored = build()
sampler = sampling.make_sampler("local", tiny.train.labels, 20, num_targets=3, seed=0,
                                neighborhoods="classes", members_per_class=4)
source = fit.SamplerDataset(tiny.train, sampler, opts, seed=0)
ds = source.dataset(mirrored)
rows = source._rows
steps = source.steps_per_epoch
ok = True
for s, element in enumerate(strategy.experimental_distribute_dataset(ds)):
    ys = strategy.experimental_local_results(element[1])
    for r, y in enumerate(ys):
        sl = slice(r * 20, (r + 1) * 20)
        want = np.concatenate([rows.labels[s, sl, None], rows.mask[s, sl, None].astype(np.int32),
                               rows.targets[s, sl]], axis=1)
        ok &= bool(np.array_equal(y.numpy(), want))
        ok &= y.shape[0] == 20
out["whole_batches"] = ok
out["steps"] = s + 1
out["planned_steps"] = steps
out["plan_batches"] = int(source.plan_stats["plan_batches"])

# 2. One SGD step: mirrored fit vs one device on the mean of the two batch losses.
images, y = next(iter(ds))
single = build()
single.set_weights(mirrored.get_weights())
start = [w.copy() for w in mirrored.get_weights()]
lr = 0.5
with strategy.scope():
    mirrored.compile(optimizer=keras.optimizers.SGD(lr), loss=fit.MetricLoss("sst"))
hist = mirrored.fit(tf.data.Dataset.from_tensors((images, y)), epochs=1, verbose=0)
loss_fn = fit.loss_function("sst")
with tf.GradientTape() as tape:
    parts = []
    for r in range(2):
        sl = slice(r * 20, (r + 1) * 20)
        labels, targets, mask = fit.unpack_targets(y[sl])
        parts.append(loss_fn(single(images[sl], training=True), labels, targets, mask))
    mean = (parts[0] + parts[1]) / 2
grads = tape.gradient(mean, single.trainable_variables)
for v, g in zip(single.trainable_variables, grads, strict=True):
    v.assign_sub(lr * g)
diff = max(float(np.abs(a - b).max()) for a, b in
           zip(mirrored.get_weights(), single.get_weights(), strict=True))
moved = max(float(np.abs(a - b).max()) for a, b in
            zip(mirrored.get_weights(), start, strict=True))
out["mirrored_vs_single"] = diff
out["moved"] = moved
out["fit_loss"] = float(hist.history["loss"][0])
out["mean_loss"] = float(mean)

# 2b. The same for a tensorflow-addons-style Keras loss that returns one number
# (labels only): it must divide by the replicas itself, like Keras' own losses.
from sst_tf import losses as losses_lib  # noqa: E402

labels_only = y[:, 0]
with strategy.scope():
    mirrored_b = build()
single_b = build()
single_b.set_weights(mirrored_b.get_weights())
start_b = [w.copy() for w in mirrored_b.get_weights()]
with strategy.scope():
    mirrored_b.compile(optimizer=keras.optimizers.SGD(lr),
                       loss=losses_lib.TfaTripletSemiHardLoss(margin=1.0))
mirrored_b.fit(tf.data.Dataset.from_tensors((images, labels_only)), epochs=1, verbose=0)
with tf.GradientTape() as tape:
    parts = [losses_lib.triplet_semihard_loss(single_b(images[r * 20:(r + 1) * 20],
                                                       training=True),
                                              labels_only[r * 20:(r + 1) * 20])
             for r in range(2)]
    mean_b = (parts[0] + parts[1]) / 2
grads = tape.gradient(mean_b, single_b.trainable_variables)
for v, g in zip(single_b.trainable_variables, grads, strict=True):
    v.assign_sub(lr * g)
out["tfa_mirrored_vs_single"] = max(float(np.abs(a - b).max()) for a, b in
                                    zip(mirrored_b.get_weights(), single_b.get_weights(),
                                        strict=True))
out["tfa_moved"] = max(float(np.abs(a - b).max()) for a, b in
                       zip(mirrored_b.get_weights(), start_b, strict=True))

# 3. The proxy-anchor wrapper trains under the strategy.
with strategy.scope():
    wrapped = fit.ProxyAnchorModel(build(), tiny.train.labels, seed=0)
    wrapped.compile(optimizer=keras.optimizers.Adam(1e-3))
before = wrapped.proxy_weights.numpy().copy()
hist = wrapped.fit(tf.data.Dataset.from_tensors((images, y)), epochs=1, verbose=0)
out["proxy_loss"] = float(hist.history["loss"][0])
out["proxies_moved"] = float(np.abs(wrapped.proxy_weights.numpy() - before).max())
print(json.dumps(out))
