"""Trainer options for scale: precision, memory refresh, balanced sampler."""

import math

import numpy as np
import pytest

from sst_tf import sampling
from sst_tf.trainer import TrainConfig, Trainer


def _config(tmp_path, **kw):
    base = dict(model_dir=str(tmp_path), backbone="small_cnn", pretrained=False,
                embedding_dim=8, image_size=16, resize_size=16, random_flip=False,
                batch_size=25, num_targets=3, epochs=1, lr=1e-3, progress=False, export=False)
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


def test_float16_uses_loss_scaling(tmp_path, tiny):
    t = Trainer(_config(tmp_path, mixed_precision="float16"), dataset=tiny)
    assert t.backbone_optimizer.__class__.__name__ == "LossScaleOptimizer"
    stats = t.train_epoch(0, refresh=True)
    assert math.isfinite(stats["loss"])
    assert all(np.isfinite(w.numpy()).all() for w in t.model.trainable_weights)


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
    memory = t._memory
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
