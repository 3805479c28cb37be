"""Trainer options for scale: precision, memory refresh, balanced sampler."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from sst_tf import data, pipeline, sampling
from sst_tf.step import DynamicLossScale
from sst_tf.trainer import TrainConfig, Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(tmp_path, **kw):
    base = dict(model_dir=str(tmp_path), backbone="small_cnn", pretrained=False,
                validation_share=0.0,  # every training image trains
                embedding_dim=8, image_size=16, resize_size=16, random_flip=False,
                batch_size=25, num_targets=3, epochs=1, lr=1e-3, progress=False, export=False,
                calibrate=False,
                normalize=False)  # the paper's raw SST: these tests are about the step
    base.update(kw)
    return TrainConfig(**base)


def test_bfloat16_trains_and_stays_finite(tmp_path, tiny):
    t = Trainer(_config(tmp_path, mixed_precision="bfloat16", epochs=2), dataset=tiny)
    conv = t.model.get_layer("backbone").get_layer("conv0_0")
    assert conv.compute_dtype == "bfloat16" and conv.variable_dtype == "float32"
    assert t.model.get_layer("head").compute_dtype == "float32"
    metrics = t.fit()
    assert math.isfinite(metrics["train"]["final_loss"])
    assert all(np.isfinite(w.numpy()).all() for w in t.model.weights)
    emb = t.embed(tiny.test)
    assert emb.dtype == np.float32 and np.isfinite(emb).all()


# float16 tests use 8 x 8 images: the float16 backward pass is slow on CPUs.
def _float16_config(tmp_path, **kw):
    return _config(tmp_path, mixed_precision="float16", image_size=8, resize_size=8, **kw)


def test_float16_step_unscales_once_and_checkpoints_the_loss_scale(tmp_path, tiny):
    t = Trainer(_float16_config(tmp_path, weight_decay=0.01), dataset=tiny)
    assert t.model.get_layer("backbone").get_layer("conv0_0").compute_dtype == "float16"
    s = sampling.RandomSampler(tiny.train.labels, 25, num_targets=3, seed=0)
    s.refresh(t.embed(tiny.train))
    batch = next(iter(pipeline.train_dataset(tiny.train, s.plan(0), t.image_options)))
    t.step.loss_scale.scale.assign(256.0)
    _, scaled, _ = t.step.compute_gradients(*batch)  # loss x 256 through the float16 backward
    variables = t.step.backbone_vars + t.step.head_vars
    want = [g.numpy() / 256.0 + 0.01 * v.numpy() for g, v in zip(scaled, variables, strict=True)]
    assert np.isfinite(float(t.step_fn(batch)))
    # Adam's first moment after one step is (1 - beta_1) x the applied gradient:
    # the summed gradient, unscaled once, plus the coupled L2 term.
    moments = [m.numpy() / 0.1 for opt in (t.step.backbone_optimizer, t.step.head_optimizer)
               for m in opt.variables if m.name.endswith("_momentum")]
    for got, w in zip(moments, want, strict=True):
        np.testing.assert_allclose(got, w, rtol=1e-3, atol=1e-6 * np.abs(w).max())
    assert float(t.step.loss_scale.scale.numpy()) == 256.0
    assert int(t.step.loss_scale.finite_steps.numpy()) == 1

    t.step.loss_scale.scale.assign(512.0)
    t.checkpoints.manager.save()
    u = Trainer(_float16_config(tmp_path, weight_decay=0.01), dataset=tiny)
    u.checkpoints.restore(t.checkpoints.manager.latest_checkpoint)
    assert float(u.step.loss_scale.scale.numpy()) == 512.0
    assert int(u.step.loss_scale.finite_steps.numpy()) == 1


def test_float16_overflow_steps_are_skipped_counted_and_halve_the_scale(tmp_path, tiny):
    small = data.Dataset("digits", data.subset(tiny.train, range(0, 200, 2)), tiny.test)
    t = Trainer(_float16_config(tmp_path, sampler="random"), dataset=small)
    calls = tf.Variable(0)
    grad_fn = t.step.grad_fn

    def overflow_twice(*batch):  # the 2nd and 3rd steps overflow
        loss, grads, emb = grad_fn(*batch)
        calls.assign_add(1)
        bad = tf.where((calls >= 2) & (calls <= 3), np.float32(np.inf), np.float32(0.0))
        return loss, [grads[0] + tf.cast(bad, grads[0].dtype), *grads[1:]], emb

    t.step.grad_fn = overflow_twice
    stats = t.train_epoch(0, refresh=True)
    assert stats["sampler/num_batches"] == 4 and stats["nonfinite_steps"] == 2
    assert int(t.state.nonfinite_steps.numpy()) == 2
    assert math.isfinite(stats["loss"])
    assert float(t.step.loss_scale.scale.numpy()) == 2.0**15 / 4
    assert int(t.step.loss_scale.finite_steps.numpy()) == 1  # the 4th step
    for opt in (t.step.backbone_optimizer, t.step.head_optimizer):
        assert int(opt.iterations.numpy()) == 2
    assert all(np.isfinite(w.numpy()).all() for w in t.model.trainable_weights)


def test_dynamic_loss_scale_rule():
    scale = DynamicLossScale(initial_scale=8.0, growth_steps=3)
    flags = [True, True, True, False, True, True, False, False, True, True, True, True]
    want, run = 8.0, 0  # Keras' rule: halve on overflow, double after 3 good steps
    for finite in flags:
        scale.update(tf.constant(finite))
        if not finite:
            want, run = want / 2, 0
        elif run == 2:
            want, run = want * 2, 0
        else:
            run += 1
        assert float(scale.scale.numpy()) == want and int(scale.finite_steps.numpy()) == run


def test_float16_overflow_on_one_replica_skips_the_whole_step():
    # Two logical CPUs (a subprocess: the devices must be set before TF starts),
    # Proxy-Anchor (backbone, head and proxies: three optimizers), float16. An
    # infinite gradient on replica 1 only skips the step for every group on
    # both replicas and halves the loss scale; the next clean step is applied.
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "_float16_mirrored.py")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    groups = ("backbone", "head", "proxies")
    assert r["replicas"] == 2 and r["scale0"] == [256.0, 256.0]
    assert math.isnan(r["poisoned_loss"])
    assert not any(r["changed_after_poison"].values()), r["changed_after_poison"]
    assert r["iterations_after_poison"] == dict.fromkeys(groups, 0)
    assert r["scale_after_poison"] == [128.0, 128.0]
    assert math.isfinite(r["clean_loss"])
    assert all(r["changed_after_clean"].values()), r["changed_after_clean"]
    assert r["iterations_after_clean"] == dict.fromkeys(groups, 1)
    assert r["scale_after_clean"] == [128.0, 128.0] and r["finite_steps_after_clean"] == 1
    assert r["replicas_agree"]


def test_memory_refresh_reuses_training_embeddings(tmp_path, tiny):
    t = Trainer(_config(tmp_path, refresh="memory", refresh_every=2, epochs=3), dataset=tiny)
    passes, refreshes = [], []
    embed, refresh = t.embed, t.sampler.refresh
    t.embed = lambda split, **kw: passes.append(len(split)) or embed(split, **kw)
    t.sampler.refresh = lambda e, epoch=0: refreshes.append((epoch, e.copy())) or refresh(e, epoch)
    t.train_epoch(0, refresh=True)  # first refresh: a full inference pass
    assert passes == [len(tiny.train)]
    first = refreshes[0][1]
    plan = t.sampler.plan(0)
    used = np.unique(plan.indices[plan.mask])
    unused = np.setdiff1d(np.arange(len(tiny.train)), used)
    memory = t.memory
    # Rows trained on this epoch hold training-mode embeddings; the others
    # keep the inference-pass values.
    assert not np.allclose(memory[used], first[used])
    np.testing.assert_array_equal(memory[unused], first[unused])

    # A whole run: refreshes at epochs 0 and 2; only the first embeds the train split.
    u = Trainer(_config(tmp_path / "fit", refresh="memory", refresh_every=2, epochs=3),
                dataset=tiny)
    passes, refreshes = [], []
    embed, refresh = u.embed, u.sampler.refresh
    u.embed = lambda split, **kw: passes.append(len(split)) or embed(split, **kw)
    u.sampler.refresh = lambda e, epoch=0: refreshes.append(epoch) or refresh(e, epoch)
    metrics = u.fit()
    assert refreshes == [0, 2]
    assert passes.count(len(tiny.train)) == 1
    assert math.isfinite(metrics["train"]["final_loss"])


def test_balanced_neighborhoods_in_the_sampler(tiny):
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(len(tiny.train), 8)).astype(np.float32)
    stats = {}
    for mode in ("original", "balanced"):
        s = sampling.LocalSampler(tiny.train.labels, 30, num_targets=3, seed=0,
                                  neighborhoods=mode, kmeans_method="tf", drop_empty=False)
        s.refresh(emb, 0)
        stats[mode] = s.plan(0).stats
    assert stats["balanced"]["coverage"] == 1.0
    assert stats["balanced"]["num_batches"] == -(-len(tiny.train) // 30)
    n, b = len(tiny.train), 30
    assert stats["balanced"]["mean_fill"] == pytest.approx(n / (b * -(-n // b)))
    assert stats["original"]["coverage"] <= 1.0
    with pytest.raises(ValueError, match="neighborhoods"):
        sampling.LocalSampler(tiny.train.labels, 30, neighborhoods="greedy")
