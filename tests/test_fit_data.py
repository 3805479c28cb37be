import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from sst_tf import fit, pipeline, sampling
from sst_tf import model as model_lib

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
OPTS = pipeline.ImageOptions(16, 18, random_flip=False)


def _model(seed=1):
    keras.utils.set_random_seed(seed)
    return model_lib.build_model("small_cnn", None, 8, image_size=16)


def _sampler(labels, **kw):
    return sampling.make_sampler("local", labels, 20, num_targets=3, seed=0,
                                 neighborhoods="original", **kw)


def _stream(ds):
    return np.concatenate([y.numpy() for _, y in ds])


def test_mirrored_whole_batches_and_gradient_equal_one_device(tmp_path):
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{HERE}", TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run([sys.executable, str(HERE / "_fit_mirrored_check.py")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["replicas"] == 2
    assert r["whole_batches"]
    assert r["steps"] == r["planned_steps"] == -(-r["plan_batches"] // 2)
    # One SGD step: two replicas (loss / 2 each, gradients summed) equal one device on
    # the mean of the two batch losses; without the division the gap would be ~moved.
    assert r["moved"] > 1e-6
    assert r["mirrored_vs_single"] < 1e-3 * r["moved"]
    assert r["tfa_moved"] > 0 and r["tfa_mirrored_vs_single"] < 1e-3 * r["tfa_moved"]
    np.testing.assert_allclose(r["fit_loss"], r["mean_loss"], rtol=1e-5)
    assert np.isfinite(r["proxy_loss"]) and r["proxies_moved"] > 0


def test_stream_is_the_plan_and_augmentation_is_seeded(tiny):
    model = _model()
    sampler = _sampler(tiny.train.labels)
    source = fit.SamplerDataset(tiny.train, sampler, OPTS, seed=3)
    ds = source.dataset(model)
    # Independent: the same sampler refreshed by the same embeddings plans the same batches.
    ref = _sampler(tiny.train.labels)
    ref.refresh(source.embed(model), 0)
    plan = ref.plan(0)
    steps = source.steps_per_epoch
    assert steps == plan.num_batches
    y = _stream(ds).reshape(steps, 20, -1)
    labels = np.where(plan.mask, tiny.train.labels[plan.indices], -1)
    np.testing.assert_array_equal(y[..., 0], labels)
    np.testing.assert_array_equal(y[..., 1], plan.mask.astype(int))
    np.testing.assert_array_equal(y[..., 2:], plan.targets)
    # Images: the trainer pipeline's augmentation of the same plan, same seed and epoch.
    want = next(iter(pipeline.train_dataset(tiny.train, plan, OPTS, seed=3, epoch=0)))[0]
    got = next(iter(ds))[0]
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-4)


def test_refresh_every_n_epochs_changes_the_next_batches(tiny):
    model = _model()
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=fit.MetricLoss("sst"))
    for every in (1, 2):
        sampler = _sampler(tiny.train.labels)
        source = fit.SamplerDataset(tiny.train, sampler, OPTS)
        model.set_weights(_model().get_weights())
        ds = source.dataset(model)
        first = _stream(ds)
        emb0 = source.embed(model)
        model.fit(ds, epochs=2, verbose=0, shuffle=False,
                  callbacks=[source.refresh_callback(every=every)])
        assert source.epoch == 1
        second = _stream(ds)  # the dataset now yields epoch 2's plan
        ref = _sampler(tiny.train.labels)
        if every == 1:  # refreshed before epoch 2 by the model trained for one epoch
            assert source.refresh_epoch == 1
            assert not np.allclose(source.refresh_embeddings, emb0)
            ref.refresh(source.refresh_embeddings, 1)
        else:  # not refreshed: epoch 2 is planned from the epoch-1 embeddings
            assert source.refresh_epoch == 0
            np.testing.assert_array_equal(source.refresh_embeddings, emb0)
            ref.refresh(emb0, 0)
        plan = ref.plan(1)
        y = second.reshape(-1, 20, second.shape[-1])
        assert y.shape[0] == source.steps_per_epoch
        n = min(plan.num_batches, y.shape[0])
        np.testing.assert_array_equal(y[:n, :, 2:], plan.targets[:n])
        assert not np.array_equal(first, second)


def test_short_plans_are_cycled_long_ones_cut(tiny):
    model = _model()
    sampler = sampling.make_sampler("random", tiny.train.labels, 20, num_targets=3, seed=0)
    source = fit.SamplerDataset(tiny.train, sampler, OPTS, steps_per_epoch=13)
    y = _stream(source.dataset(model)).reshape(13, 20, -1)
    ref = sampling.make_sampler("random", tiny.train.labels, 20, num_targets=3, seed=0)
    ref.refresh(source.embed(model), 0)
    plan = ref.plan(0)  # 10 batches: cycled to 13
    assert plan.num_batches == 10
    np.testing.assert_array_equal(y[10:, :, 2:], plan.targets[:3])
    source = fit.SamplerDataset(tiny.train, sampler, OPTS, steps_per_epoch=4)
    assert _stream(source.dataset(model)).shape[0] == 4 * 20


def test_bad_arguments(tiny):
    sampler = _sampler(tiny.test.labels)
    with pytest.raises(ValueError, match="sampler's labels"):
        fit.SamplerDataset(tiny.train, sampler, OPTS)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        fit.SamplerDataset(tiny.train, _sampler(tiny.train.labels), OPTS, steps_per_epoch=0)
    with pytest.raises(ValueError, match="every"):
        fit.SamplerRefresh(fit.SamplerDataset(tiny.train, _sampler(tiny.train.labels), OPTS), 0)


def test_two_views_reach_fit_as_pairs_of_rows_with_one_label(tiny):
    sampler = sampling.make_sampler("random", tiny.train.labels, 20, views=2,
                                    compute_targets=False, seed=0)
    source = fit.SamplerDataset(tiny.train, sampler, OPTS, seed=3)
    model = _model()
    model.compile(optimizer="adam", loss=fit.MetricLoss("ntxent"))
    images, y = next(iter(source.dataset(model)))
    labels, _, mask = fit.unpack_targets(y)
    assert images.shape[0] == 20
    np.testing.assert_array_equal(labels.numpy()[::2], labels.numpy()[1::2])
    hist = model.fit(source.dataset(model), epochs=1, steps_per_epoch=1, verbose=0)
    assert np.isfinite(hist.history["loss"][0])
