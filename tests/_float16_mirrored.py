"""Run by tests/test_trainer_scale.py: one float16 step on 2 logical CPUs with an
infinite gradient on replica 1 only, then a clean step (Proxy-Anchor: three
variable groups, three optimizers). Prints one JSON line. Small images: the
float16 backward pass is slow on CPUs.
"""

import json
import sys
import tempfile

import keras
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from _tiny_data import tiny_digits  # noqa: E402

from sst_tf import distribute, pipeline, sampling  # noqa: E402
from sst_tf.trainer import TrainConfig, Trainer  # noqa: E402


def components(variables):
    """Every replica's copy of every variable, as NumPy arrays."""
    out = []
    for v in variables:
        if isinstance(v, keras.Variable):
            v = v.value  # its tf.Variable
        out.extend(np.array(c.numpy()) for c in getattr(v, "values", (v,)))
    return out


def main():
    strategy = tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"])
    tiny = tiny_digits()
    config = TrainConfig(model_dir=tempfile.mkdtemp(), backbone="small_cnn", pretrained=False,
                         validation_share=0.0,  # every training image trains
                         embedding_dim=8, image_size=8, resize_size=8, random_flip=False,
                         batch_size=25, num_targets=3, epochs=1, lr=1e-3, weight_decay=0.01,
                         loss="proxy_anchor", sampler="random", mixed_precision="float16",
                         progress=False, export=False)
    t = Trainer(config, dataset=tiny, strategy=strategy)
    poison = tf.Variable(False, trainable=False)
    grad_fn = t.step.grad_fn

    def poisoned(images, labels, targets, mask):
        loss, grads, emb = grad_fn(images, labels, targets, mask)
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        hit = tf.logical_and(poison, tf.equal(replica, 1))
        bad = tf.where(hit, tf.constant(np.inf, grads[0].dtype), tf.zeros([], grads[0].dtype))
        return loss, [grads[0] + bad, *grads[1:]], emb  # one backbone gradient, replica 1

    t.step.grad_fn = poisoned
    s = sampling.RandomSampler(tiny.train.labels, 25, num_targets=3, seed=0,
                               compute_targets=False)
    s.refresh(None, 0)
    batches = list(pipeline.train_dataset(tiny.train, s.plan(0), t.image_options).take(2))
    dist = next(iter(distribute.distribute_batches(t.strategy, tf.data.Dataset.from_tensor_slices(
        tuple(tf.stack(parts) for parts in zip(*batches, strict=True))))))

    groups = {"backbone": t.step.backbone_vars, "head": t.step.head_vars,
              "proxies": t.step.loss_vars}
    optimizers = {"backbone": t.step.backbone_optimizer, "head": t.step.head_optimizer,
                  "proxies": t.step.loss_optimizer}

    def state():
        return {
            **{name: components(vs) for name, vs in groups.items()},
            **{f"opt_{n}": components(o.variables) for n, o in optimizers.items()},
        }

    def changed(a, b):
        return {k: any(not np.array_equal(x, y) for x, y in zip(a[k], b[k], strict=True))
                for k in a}

    def scale():
        return [float(x) for x in components([t.step.loss_scale.scale])]

    # Start from a scale at which the clean batches do not overflow in float16
    # (the default 2**15 overflows on the first steps of this untrained model).
    t.step.loss_scale.scale.assign(256.0)
    out = {"replicas": t.num_replicas, "scale0": scale()}
    s0 = state()
    poison.assign(True)
    out["poisoned_loss"] = float(t.step_fn(dist))
    s1 = state()
    out["changed_after_poison"] = changed(s0, s1)
    out["scale_after_poison"] = scale()
    out["iterations_after_poison"] = {n: int(o.iterations.numpy()) for n, o in optimizers.items()}
    poison.assign(False)
    out["clean_loss"] = float(t.step_fn(dist))
    s2 = state()
    out["changed_after_clean"] = changed(s1, s2)
    out["scale_after_clean"] = scale()
    out["finite_steps_after_clean"] = int(t.step.loss_scale.finite_steps.numpy())
    out["iterations_after_clean"] = {n: int(o.iterations.numpy()) for n, o in optimizers.items()}
    model = components(t.model.weights)
    out["replicas_agree"] = all(np.array_equal(a, b) for a, b in zip(model[::2], model[1::2],
                                                                      strict=True))
    print(json.dumps(out))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
