"""Run by tests/test_distribute.py in a subprocess (two logical CPU devices).

Trains the same model from the same weights on the same four batches:
  * MirroredStrategy over CPU:0 and CPU:1: two steps, each replica one batch;
  * one device: two steps, each on the mean loss of the same two batches
    (gradients computed batch by batch, averaged here);
  * one device, gradients summed instead of averaged (the bug the scaling
    guards against).
Prints one JSON line: losses and max weight differences.
"""

import json
import sys

import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from _tiny_data import tiny_digits  # noqa: E402

from sst_tf import distribute, pipeline, sampling  # noqa: E402
from sst_tf.trainer import TrainConfig, Trainer  # noqa: E402

jit = len(sys.argv) > 2 and sys.argv[2] == "jit"
tiny = tiny_digits()


def make(strategy, model_dir):
    cfg = TrainConfig(model_dir=model_dir, backbone="small_cnn", pretrained=False,
                      validation_share=0.0,  # every training image trains
                      embedding_dim=8, image_size=16, resize_size=16, random_flip=False,
                      batch_size=25, num_targets=3, epochs=1, lr=1e-3, head_lr_multiplier=2.0,
                      weight_decay=0.05, progress=False, jit_compile=jit,
                      deterministic=not jit)
    return Trainer(cfg, dataset=tiny, strategy=strategy)


single = make(tf.distribute.get_strategy(), sys.argv[1] + "/single")
summed = make(tf.distribute.get_strategy(), sys.argv[1] + "/summed")
mirrored = make(distribute.make_strategy("mirrored", ["CPU:0", "CPU:1"]), sys.argv[1] + "/mirrored")
for t in (summed, mirrored):
    for a, b in zip(t.model.weights, single.model.weights, strict=True):
        a.assign(b.numpy())

s = sampling.RandomSampler(tiny.train.labels, 25, num_targets=3, seed=0)
s.refresh(single.embed(tiny.train))
plan = s.plan(0)
assert plan.num_batches >= 4, plan.num_batches
batches = list(pipeline.train_dataset(tiny.train, plan, single.image_options).take(4))


@tf.function
def mean_step(trainer, b1, b2, mode):
    l1, g1, _ = trainer.step.compute_gradients(*b1)
    l2, g2, _ = trainer.step.compute_gradients(*b2)
    div = 2.0 if mode == "mean" else 1.0
    trainer.step.apply_gradients([(a + b) / div for a, b in zip(g1, g2, strict=True)])
    return (l1 + l2) / 2


out = {"single": [], "mirrored": []}
ds_m = distribute.distribute_batches(
    mirrored.strategy, tf.data.Dataset.from_tensor_slices(
        tuple(tf.stack([b[i] for b in batches]) for i in range(4))))
for step, batch in enumerate(ds_m):
    out["mirrored"].append(float(mirrored.step_fn(batch)))
    b1, b2 = batches[2 * step], batches[2 * step + 1]
    out["single"].append(float(mean_step(single, b1, b2, "mean")))
    mean_step(summed, b1, b2, "sum")


def max_diff(t):
    return max(float(np.max(np.abs(a.numpy() - b.numpy())))
               for a, b in zip(t.model.trainable_weights, single.model.trainable_weights,
                               strict=True))


moved = max(float(np.max(np.abs(a.numpy() - b))) for a, b in zip(
    single.model.trainable_weights, [w.numpy() for w in make(
        tf.distribute.get_strategy(), sys.argv[1] + "/fresh").model.trainable_weights],
    strict=True))
out.update(mirrored_vs_single=max_diff(mirrored), summed_vs_single=max_diff(summed),
           moved=moved, replicas=mirrored.num_replicas)
print(json.dumps(out))
