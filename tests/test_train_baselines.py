"""The trainer's step under MirroredStrategy on two logical CPUs; Proxy-Anchor checkpoints.

The step is the same code for every loss without weights of its own: it runs
here for SST (unit vectors), contrastive (raw embeddings) and Proxy-Anchor
(weights of its own). Each loss's value and gradients on two replicas are
checked against one device in test_negatives.py, and every loss trains end to
end, half of them mirrored, in test_train_matrix.py.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

STEP_LOSSES = ("sst", "contrastive", "proxy_anchor")
# One subprocess for all: logical devices must be set before TF starts.
MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    import tensorflow as tf

    STEP_LOSSES = json.loads(sys.argv[2])
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from sst_tf import data as data_lib, distribute, pipeline
    from sst_tf.config import TrainConfig
    from sst_tf.losses import make_loss
    from sst_tf.trainer import Trainer

    strategy = tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"])
    dataset = data_lib.load_dataset("digits")

    def config(loss):
        return TrainConfig(
            model_dir=sys.argv[1] + "/" + loss, backbone="small_cnn", pretrained=False,
            image_size=16, resize_size=16, random_flip=False, embedding_dim=16, loss=loss,
            sampler="class_balanced", samples_per_class=4, batch_size=20, epochs=1,
            lr=1e-3, progress=False, validation_share=0.0)

    # One trainer for the losses without weights (the loss function is swapped,
    # the step retraced), one for Proxy-Anchor (its proxies are trainer state).
    trainers = {"sst": Trainer(config("sst"), dataset=dataset, strategy=strategy),
                "proxy_anchor": Trainer(config("proxy_anchor"), dataset=dataset,
                                        strategy=strategy)}
    sampler = trainers["sst"].sampler  # computes target tables for sst / triplet
    sampler.refresh(trainers["sst"].embed(dataset.train), 0)
    plan = sampler.plan(0)
    ds = pipeline.train_dataset(dataset.train, plan, trainers["sst"].image_options).take(2)
    batches = list(ds)
    # One whole plan batch per replica (targets index into their own batch).
    batch = strategy.experimental_distribute_values_from_function(
        lambda ctx: batches[ctx.replica_id_in_sync_group])
    out = {}
    for loss in STEP_LOSSES:
        start = time.perf_counter()
        trainer = trainers.get(loss, trainers["sst"])
        if loss != "proxy_anchor":
            trainer.step.loss_fn = make_loss(loss, None)
        watched = trainer.step.head_vars + trainer.step.loss_vars
        before = [v.numpy().copy() for v in watched]
        value = float(tf.function(distribute.cross_replica_step(strategy, trainer.step))(batch))
        changed = [bool(np.any(v.numpy() != b)) for v, b in zip(watched, before)]
        out[loss] = {"loss": value, "changed": changed,
                     "replicas": strategy.num_replicas_in_sync,
                     "proxies": [list(v.shape) for v in trainer.step.loss_vars],
                     "seconds": time.perf_counter() - start}
    print("RESULT" + json.dumps(out))
    """
)


def test_the_step_trains_under_mirrored_strategy(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT, str(tmp_path),
                           json.dumps(STEP_LOSSES)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    results = json.loads(line[len("RESULT"):])
    assert set(results) == set(STEP_LOSSES)
    for loss, r in results.items():
        assert r["replicas"] == 2
        assert r["loss"] == r["loss"] and r["loss"] >= 0.0, (loss, r)  # finite, not NaN
        assert all(r["changed"]), (loss, r)  # head (and proxies) updated
    assert results["proxy_anchor"]["proxies"] == [[10, 16]]
    assert results["sst"]["proxies"] == []


def test_proxy_anchor_proxies_are_trained_checkpointed_and_restored(tmp_path):
    import numpy as np
    from _tiny_data import tiny_digits

    from sst_tf.config import TrainConfig
    from sst_tf.trainer import Trainer

    tiny = tiny_digits()
    cfg = TrainConfig(model_dir=str(tmp_path), backbone="small_cnn", pretrained=False,
                      validation_share=0.0,  # every training image trains
                      embedding_dim=8, image_size=16, resize_size=16, random_flip=False,
                      loss="proxy_anchor", sampler="class_balanced", samples_per_class=5,
                      batch_size=50, epochs=1, lr=1e-3, progress=False, calibrate=False)
    first = Trainer(cfg, dataset=tiny)
    p0 = first.loss_layer.proxies.numpy().copy()
    metrics = first.fit()
    assert metrics["train"]["epochs_run"] == 1
    trained = first.loss_layer.proxies.numpy()
    assert trained.shape == (10, 8) and not np.array_equal(p0, trained)
    again = Trainer(cfg, dataset=tiny)  # a fresh init, then fit() restores the checkpoint
    assert not np.array_equal(again.loss_layer.proxies.numpy(), trained)
    again.fit()
    np.testing.assert_array_equal(again.loss_layer.proxies.numpy(), trained)
    assert int(again.step.loss_optimizer.iterations.numpy()) == int(
        first.step.loss_optimizer.iterations.numpy()) > 0


def test_margin_class_weights_are_trained_checkpointed_restored_and_not_exported(tmp_path):
    import numpy as np
    import tensorflow as tf
    from _tiny_data import tiny_digits

    from sst_tf import export
    from sst_tf.config import TrainConfig
    from sst_tf.trainer import Trainer

    tiny = tiny_digits()
    cfg = TrainConfig(model_dir=str(tmp_path), backbone="small_cnn", pretrained=False,
                      validation_share=0.0,  # every training image trains
                      embedding_dim=8, image_size=16, resize_size=16, random_flip=False,
                      loss="subcenter_arcface", sub_centers=2, batch_size=50, epochs=1,
                      lr=1e-3, loss_lr_multiplier=0.5, proxy_lr_multiplier=3.0, progress=False,
                      calibrate=False)
    first = Trainer(cfg, dataset=tiny)
    w0 = first.loss_layer.class_weights.numpy().copy()
    assert w0.shape == (10 * 2, 8)  # 10 classes x 2 sub-centers
    # The class weights' rate: the loss's rate times their own multiplier.
    assert float(first.step.loss_optimizer.learning_rate) == pytest.approx(1e-3 * 0.5 * 3.0)
    first.fit()
    trained = first.loss_layer.class_weights.numpy()
    assert not np.array_equal(w0, trained)
    again = Trainer(cfg, dataset=tiny)  # a fresh init, then fit() restores the checkpoint
    again.fit()
    np.testing.assert_array_equal(again.loss_layer.class_weights.numpy(), trained)
    # The export is the embedding model alone: no [20, 8] class-weight matrix in it.
    loaded = tf.saved_model.load(export.export_run(str(tmp_path), export_dir=str(tmp_path / "e2")))
    assert all(tuple(v.shape) != (20, 8) for v in loaded.variables)
