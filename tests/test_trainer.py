import json
import math

import numpy as np
import pytest
import tensorflow as tf

from sst_tf import sampling
from sst_tf.config import LOSSES, SAMPLERS
from sst_tf.trainer import ExportError, TrainConfig, Trainer


def _config(tmp_path, **kw):
    base = dict(model_dir=str(tmp_path), backbone="small_cnn", pretrained=False,
                embedding_dim=8, image_size=16, resize_size=16, random_flip=False,
                batch_size=50, num_targets=3, epochs=1, lr=1e-3, head_lr_multiplier=2.0,
                samples_per_class=5, progress=False, calibrate=False, validation_share=0.0,
                normalize=False)  # the paper's raw SST: these tests are about the loop
    base.update(kw)
    return TrainConfig(**base)


def _fixed_batch(trainer):
    s = sampling.RandomSampler(trainer.dataset.train.labels, 50, num_targets=3, seed=0)
    s.refresh(trainer.embed(trainer.dataset.train))
    plan = s.plan(0)
    from sst_tf import pipeline
    return next(iter(pipeline.train_dataset(trainer.dataset.train, plan, trainer.image_options)))


def test_one_train_step_lowers_the_loss(tmp_path, tiny):
    t = Trainer(_config(tmp_path, lr=1e-2, weight_decay=0.0), dataset=tiny)
    batch = _fixed_batch(t)
    images, labels, targets, mask = batch

    def loss_now():
        return float(t.step.loss_fn(t.model(images, training=False), labels, targets, mask))

    t.model(images, training=True)  # settle BatchNorm statistics on this batch first
    before = loss_now()
    step_loss = float(t.step_fn(batch))
    assert math.isfinite(step_loss) and step_loss > 0
    assert loss_now() < before
    assert int(t.step.head_optimizer.iterations.numpy()) == 1
    # Head learning rate = lr x multiplier.
    lr, head_lr = t.step.learning_rates
    assert head_lr == pytest.approx(2.0 * lr)


def test_checkpoint_round_trip(tmp_path, tiny):
    t = Trainer(_config(tmp_path), dataset=tiny)
    t.step_fn(_fixed_batch(t))
    t.plateau.update(0.5)
    t.state.epoch.assign(3)
    t.checkpoints.manager.save(checkpoint_number=3)
    u = Trainer(_config(tmp_path), dataset=tiny)
    u.checkpoints.restore(t.checkpoints.manager.latest_checkpoint)
    assert int(u.state.epoch.numpy()) == 3 and float(u.state.best_loss.numpy()) == 0.5
    assert int(u.step.head_optimizer.iterations.numpy()) == 1
    for a, b in zip(t.model.weights, u.model.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_end_epoch_advances_the_count_and_feeds_the_plateau_only_finite_losses(tmp_path, tiny):
    t = Trainer(_config(tmp_path, lr_patience=1, early_stop_patience=2), dataset=tiny)
    lr0 = t.step.learning_rates[0]
    assert t.end_epoch(0, 0.5) is False and int(t.state.epoch.numpy()) == 1
    assert float(t.state.best_loss.numpy()) == 0.5
    assert t.end_epoch(1, math.nan) is False  # no finite step: the schedule is untouched
    assert int(t.state.epoch.numpy()) == 2 and int(t.state.stale_epochs.numpy()) == 0
    assert t.end_epoch(2, 0.7) is False  # no improvement, patience 1: rates halved
    assert t.step.learning_rates[0] == pytest.approx(lr0 * t.config.lr_factor)
    assert t.end_epoch(3, 0.6) is True  # second epoch without improvement: stop
    assert int(t.state.epoch.numpy()) == 4


# Every sampler once, the paper's three losses cycled over them: each loss and
# each sampler moves the weights. Every loss with every choice flag runs end to
# end in test_train_matrix.py; the other losses train under MirroredStrategy in
# test_train_baselines.py.
@pytest.mark.parametrize("loss,sampler", [(LOSSES[i % 3], s) for i, s in enumerate(SAMPLERS)])
def test_every_loss_and_sampler_trains(tmp_path, tiny, loss, sampler):
    t = Trainer(_config(tmp_path, loss=loss, sampler=sampler), dataset=tiny)
    w0 = [w.numpy().copy() for w in t.model.trainable_weights]
    metrics = t.fit()
    assert math.isfinite(metrics["train"]["final_loss"])
    assert set(metrics["before"]) == set(metrics["after"])
    assert any(not np.array_equal(a, w.numpy())
               for a, w in zip(w0, t.model.trainable_weights, strict=True))
    with open(tmp_path / "metrics.json") as f:
        assert json.load(f)["after"] == metrics["after"]



def test_thresholds_come_from_held_out_images_and_are_measured_on_the_test_split(
        tmp_path, tiny):
    from sst_tf import calibration
    from sst_tf.data import hold_out

    t = Trainer(_config(tmp_path, loss="contrastive", sampler="random", calibrate=True,
                        validation_share=0.2), dataset=tiny)
    held = hold_out(tiny, 0.2, seed=t.config.seed)
    # The held-out images (4 of each class's 20: the test split shows the training
    # classes) are not trained on.
    assert held.kind == "images" and len(held.validation.labels) == 40
    assert len(t.dataset.train.labels) == 160 and len(t.sampler.labels) == 160
    metrics = t.fit()
    cal = metrics["calibration"]
    want = calibration.calibrate(t.embed(held.validation), held.validation.labels,
                                 seed=t.config.seed)
    assert cal["thresholds"] == want.thresholds
    assert cal["source"] == held.describe()
    assert set(cal["thresholds"]) == {"best_f1", "fmr=0.01", "fmr=0.001"}
    for name, threshold in want.thresholds.items():
        assert cal["test"][name] == calibration.rates_at(
            threshold, t.embed(tiny.test), tiny.test.labels, seed=t.config.seed)
    with open(tmp_path / "metrics.json") as f:
        assert json.load(f)["calibration"]["thresholds"] == want.thresholds
    # --validation_share=0: every training image trains and calibrates.
    z = Trainer(_config(tmp_path / "all", loss="contrastive", sampler="random",
                        calibrate=True), dataset=tiny)
    cal = z.fit()["calibration"]
    assert len(z.dataset.train.labels) == 200
    assert cal["thresholds"] == calibration.calibrate(
        z.embed(tiny.train), tiny.train.labels, seed=z.config.seed).thresholds
    assert "the training split" in cal["source"]


def test_new_test_classes_hold_out_whole_training_classes_for_the_thresholds(tmp_path, tiny):
    from sst_tf.data import Dataset, Split

    # The test split's classes renamed: retrieval of new classes, as on CUB.
    test = Split(tiny.test.labels, tuple(f"new{i}" for i in range(10)),
                 images=tiny.test.images)
    t = Trainer(_config(tmp_path, loss="contrastive", sampler="random", calibrate=True,
                        validation_share=0.2), dataset=Dataset("zero_shot", tiny.train, test))
    assert t.held_out.kind == "classes"
    held = set(np.unique(t.held_out.validation.labels))
    assert len(held) == 2 and not held & set(np.unique(t.dataset.train.labels))
    cal = t.fit()["calibration"]
    n = len(t.held_out.validation.labels)
    assert n + len(t.dataset.train.labels) == len(tiny.train.labels)
    assert cal["source"] == f"the validation classes (2 training classes, {n} images, held out " \
                            "of training)"
    # --nocalibrate: no thresholds, no extra pass.
    u = Trainer(_config(tmp_path / "off", loss="contrastive", sampler="random",
                        calibrate=False), dataset=tiny)
    assert "calibration" not in u.fit()


@pytest.mark.parametrize("neighborhoods,warmup", [("mixed", 0), ("original", 1)])
def test_local_neighborhood_options_train_and_report_batches(tmp_path, tiny, neighborhoods,
                                                             warmup):
    t = Trainer(_config(tmp_path, neighborhoods=neighborhoods, warmup_epochs=warmup,
                        min_classes=3), dataset=tiny)
    for epoch in range(2):
        stats = t.train_epoch(epoch, refresh=True)
        assert math.isfinite(stats["loss"])
        assert "loss_over_log2" not in stats  # the trained loss only, in its own units
        assert stats["sampler/warmup"] == float(epoch < warmup)
        for key in ("mean_paired_classes_per_batch", "largest_class_share", "anchor_share",
                    "distance_ratio"):
            assert math.isfinite(stats[f"sampler/{key}"]), key
    assert t.sampler.neighborhoods == neighborhoods
    if neighborhoods == "mixed":
        assert stats["sampler/min_paired_classes_per_batch"] >= 3


def test_rerun_continues_from_the_latest_checkpoint(tmp_path, tiny):
    first = Trainer(_config(tmp_path, epochs=1, sampler="random"), dataset=tiny).fit()
    again = Trainer(_config(tmp_path, epochs=2, sampler="random"), dataset=tiny)
    second = again.fit()
    assert first["train"]["epochs_run"] == 1 and second["train"]["epochs_run"] == 2
    assert second["before"] == first["before"]  # not re-measured on the trained model
    assert int(again.step.head_optimizer.iterations.numpy()) == 2 * 4  # 200 images / 50 per batch
    assert again.checkpoints.manager.latest_checkpoint.endswith("ckpt-2")


def test_a_failed_export_keeps_the_metrics_and_says_how_to_retry(tmp_path, tiny, monkeypatch):
    from sst_tf import export

    def fail(*args, **kwargs):
        raise RuntimeError("export verification failed: differs by 0.01\nsecond line")

    monkeypatch.setattr(export, "verify_export", fail)
    t = Trainer(_config(tmp_path, epochs=1, sampler="random"), dataset=tiny)
    with pytest.raises(ExportError) as info:
        t.fit()
    message = str(info.value)
    assert "\n" not in message and "export verification failed" in message
    assert f"python -m sst_tf.export --model_dir={tmp_path}" in message
    with open(tmp_path / "metrics.json") as f:
        assert json.load(f) == info.value.metrics
    assert set(info.value.metrics["after"]) == set(info.value.metrics["before"])
    assert t.checkpoints.manager.latest_checkpoint
    assert not (tmp_path / "export").exists()
    monkeypatch.undo()
    # The retry the message names works from the kept checkpoint.
    path = export.export_run(str(tmp_path))
    got = tf.saved_model.load(path).signatures["serve_images"](
        images=tf.constant(tiny.test.images[:8], tf.float32))["embeddings"].numpy()
    np.testing.assert_allclose(got, t.embed(tiny.test)[:8], atol=1e-5)
