"""Run by tests/test_reliability.py: a non-finite step under MirroredStrategy on 2 CPUs.

Prints one JSON line with what happened to the weights and step counters.
"""

import json
import sys
import tempfile

import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])

from _tiny_data import tiny_digits  # noqa: E402

from sst_tf import distribute, pipeline, sampling  # noqa: E402
from sst_tf.trainer import TrainConfig, Trainer  # noqa: E402


def main():
    strategy = tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"])
    tiny = tiny_digits()
    config = TrainConfig(model_dir=tempfile.mkdtemp(), backbone="small_cnn", pretrained=False,
                         validation_share=0.0,  # every training image trains
                         embedding_dim=8, image_size=16, resize_size=16, random_flip=False,
                         batch_size=50, num_targets=3, epochs=1, lr=1e-3, progress=False,
                         sampler="random", export=False)
    t = Trainer(config, dataset=tiny, strategy=strategy)
    s = sampling.RandomSampler(tiny.train.labels, 50, num_targets=3, seed=0)
    s.refresh(t.embed(tiny.train))
    clean = next(iter(pipeline.train_dataset(tiny.train, s.plan(0), t.image_options)))
    images = clean[0].numpy()
    images[40] = np.nan  # one row of the batch the second replica gets
    bad = (tf.constant(images),) + tuple(clean[1:])

    def one(*batches):
        # Each replica trains on one whole batch (a neighbourhood is never split).
        stacked = tuple(tf.stack(parts) for parts in zip(*batches, strict=True))
        dist = distribute.distribute_batches(t.strategy,
                                             tf.data.Dataset.from_tensor_slices(stacked))
        return float(t.step_fn(next(iter(dist))))

    w0 = [w.numpy().copy() for w in t.model.weights]
    nan_loss = np.isnan(one(clean, bad))
    changed_after_nan = any(not np.array_equal(a, w.numpy())
                            for a, w in zip(w0, t.model.weights, strict=True))
    it_nan = int(t.step.head_optimizer.iterations.numpy())
    one(clean, clean)
    changed_after_clean = any(not np.array_equal(a, w.numpy())
                              for a, w in zip(w0, t.model.weights, strict=True))
    agree = all(
        np.array_equal(*[v.numpy() for v in w.value.values])
        for w in t.model.weights if hasattr(w.value, "values")
    )
    print(json.dumps({"nan_loss": bool(nan_loss), "changed_after_nan": changed_after_nan,
                      "iterations_after_nan": it_nan,
                      "changed_after_clean": changed_after_clean,
                      "iterations_after_clean": int(t.step.head_optimizer.iterations.numpy()),
                      "replicas_agree": agree}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
