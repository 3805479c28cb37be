"""Resume after a crash or a signal, run-flag checks, non-finite steps, atomic files."""

import errno
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from sst_tf import checkpoints, data, outputs, pipeline, run_state, sampling, step
from sst_tf.trainer import TrainConfig, Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- helpers -------------------------------------------------------------------


def _config(tmp_path, **kw):
    base = dict(model_dir=str(tmp_path), backbone="small_cnn", pretrained=False,
                validation_share=0.0,  # every training image trains
                embedding_dim=8, image_size=16, resize_size=18, random_flip=True,
                batch_size=50, num_targets=3, epochs=2, lr=1e-3, head_lr_multiplier=2.0,
                refresh_every=2, progress=False, export=False, calibrate=False,
                neighborhoods="original")  # step counts below: 4 k-means batches of <= 50
    base.update(kw)
    return TrainConfig(**base)


def _variables(checkpoint_prefix):
    """Every saved tensor of a checkpoint except bookkeeping (save counter)."""
    reader = tf.train.load_checkpoint(checkpoint_prefix)
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
            if k != "_CHECKPOINTABLE_OBJECT_GRAPH" and not k.startswith("save_counter")}


def _assert_same_weights(a, b):
    va, vb = _variables(a), _variables(b)
    model_keys = [k for k in va if "_trainable_variables" in k]
    assert model_keys and set(va) == set(vb)
    for k in va:
        np.testing.assert_array_equal(va[k], vb[k], err_msg=k)


def _sigterm_during_step(trainer, n: int) -> None:
    """Makes the trainer's n-th step send SIGTERM to this process (then run the step).

    Both step functions count: the plain one and the one that also returns the
    embeddings (--refresh=memory).
    """
    calls = []

    def signalling(step_fn):
        def step_then_signal(batch):
            calls.append(1)
            if len(calls) == n:
                os.kill(os.getpid(), signal.SIGTERM)
            return step_fn(batch)
        return step_then_signal

    trainer.step_fn = signalling(trainer.step_fn)
    trainer._memory_step_fn = signalling(trainer._memory_step_fn)


def _count_embedded_images(trainer) -> list:
    """The sizes of the splits the trainer embeds from now on (a list it fills)."""
    sizes, embed = [], trainer.embed
    trainer.embed = lambda split, **kw: sizes.append(len(split)) or embed(split, **kw)
    return sizes


def _assert_resumed_run_matches(again, metrics, ref, ref_metrics, saved_item: str) -> None:
    """The resumed run ends as the uninterrupted one, and its checkpoint holds `saved_item`."""
    saved = _variables(again.checkpoints.manager.latest_checkpoint)
    assert any(saved_item in k for k in saved)
    _assert_same_weights(ref.checkpoints.manager.latest_checkpoint,
                         again.checkpoints.manager.latest_checkpoint)
    assert metrics["train"]["final_loss"] == ref_metrics["train"]["final_loss"]
    assert metrics["after"] == ref_metrics["after"]


def _fixed_batch(trainer):
    s = sampling.RandomSampler(trainer.dataset.train.labels, 50, num_targets=3, seed=0)
    s.refresh(trainer.embed(trainer.dataset.train))
    return next(iter(pipeline.train_dataset(trainer.dataset.train, s.plan(0),
                                            trainer.image_options)))


# -- resume, in process ------------------------------------------------------------


def test_sigterm_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path, tiny):
    # 2 epochs of 4 steps; refresh every 2 epochs, so the interrupted epoch (the
    # 2nd) uses the sampler state saved at epoch 1 and resumes at step 2 of 4.
    ref = Trainer(_config(tmp_path / "ref"), dataset=tiny)
    ref_metrics = ref.fit()

    t = Trainer(_config(tmp_path / "run"), dataset=tiny)
    _sigterm_during_step(t, 6)  # epoch 2, step 2: as if `kill -TERM` arrived during it
    with pytest.raises(run_state.Interrupted, match="SIGTERM") as info:
        t.fit()
    assert info.value.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler removed again
    saved = info.value.checkpoint
    assert os.path.exists(saved + ".index")
    assert checkpoints.progress_of(saved) == (1, 2)  # epoch 2 (0-based 1), 2 steps done

    again = Trainer(_config(tmp_path / "run"), dataset=tiny)
    assert again.checkpoints.latest_checkpoint() == saved
    metrics = again.fit()
    assert int(again.step.head_optimizer.iterations.numpy()) == 2 * 4
    _assert_same_weights(ref.checkpoints.manager.latest_checkpoint,
                         again.checkpoints.manager.latest_checkpoint)
    assert metrics["after"] == ref_metrics["after"]
    assert metrics["train"]["final_loss"] == ref_metrics["train"]["final_loss"]
    # The epoch checkpoint superseded the interrupted one.
    assert not os.path.exists(again.checkpoints.interrupt_dir)


def test_cross_batch_memory_resumes_identically_after_an_interruption(tmp_path, tiny):
    # The queue (embeddings, labels, valid rows, step count) is in the checkpoint:
    # interrupted in epoch 2 and resumed, the run ends as the uninterrupted one.
    memory = dict(memory_size=120, memory_warmup_steps=2)
    ref = Trainer(_config(tmp_path / "ref", **memory), dataset=tiny)
    ref_metrics = ref.fit()
    # 6 of 8 steps enqueued, batches of <= 50 real rows (padding never valid), capped at 120.
    assert 50 < ref.step.memory.filled() <= 120

    t = Trainer(_config(tmp_path / "run", **memory), dataset=tiny)
    _sigterm_during_step(t, 6)
    with pytest.raises(run_state.Interrupted):
        t.fit()
    again = Trainer(_config(tmp_path / "run", **memory), dataset=tiny)
    _assert_resumed_run_matches(again, again.fit(), ref, ref_metrics, "cross_batch_memory")


def test_refresh_memory_resumes_identically_after_an_interruption(tmp_path, tiny):
    # --refresh=memory: the next refresh reads the training passes' embeddings,
    # which are in the checkpoint; interrupted in epoch 2 of 3 (refresh every
    # epoch), the refresh of epoch 3 and the whole run match the uninterrupted one.
    opts = dict(refresh="memory", refresh_every=1, epochs=3)
    ref = Trainer(_config(tmp_path / "ref", **opts), dataset=tiny)
    passes = _count_embedded_images(ref)
    ref_metrics = ref.fit()
    assert passes.count(len(tiny.train)) == 1  # one inference pass of the train split

    t = Trainer(_config(tmp_path / "run", **opts), dataset=tiny)
    _sigterm_during_step(t, 6)
    with pytest.raises(run_state.Interrupted) as info:
        t.fit()
    assert checkpoints.progress_of(info.value.checkpoint) == (1, 2)
    again = Trainer(_config(tmp_path / "run", **opts), dataset=tiny)
    passes = _count_embedded_images(again)
    metrics = again.fit()
    assert len(tiny.train) not in passes  # the memory came from the checkpoint
    _assert_resumed_run_matches(again, metrics, ref, ref_metrics, "training_embeddings")


def test_learning_rate_and_plateau_counters_survive_a_restart(tmp_path, tiny):
    t = Trainer(_config(tmp_path, lr_patience=1), dataset=tiny)
    t.plateau.update(1.0)
    t.plateau.update(2.0)  # no improvement: halves the learning rates
    t.state.epoch.assign(1)
    t.checkpoints.save_epoch(1)
    u = Trainer(_config(tmp_path, lr_patience=1), dataset=tiny)
    u.checkpoints.restore(u.checkpoints.latest_checkpoint())
    assert u.step.learning_rates == pytest.approx(t.step.learning_rates)
    assert u.step.learning_rates[0] == pytest.approx(0.5e-3)
    assert float(u.state.best_loss.numpy()) == 1.0 and int(u.state.stale_epochs.numpy()) == 1


# -- run flags ---------------------------------------------------------------------


def test_incompatible_flags_are_refused_and_harmless_ones_allowed(tmp_path, tiny):
    Trainer(_config(tmp_path, epochs=1, sampler="random"), dataset=tiny).fit()
    with open(tmp_path / "config.json") as f:
        saved = json.load(f)
    assert saved["embedding_dim"] == 8 and saved["num_train_images"] == len(tiny.train)

    with pytest.raises(run_state.IncompatibleRunError) as info:
        Trainer(_config(tmp_path, epochs=1, sampler="random", embedding_dim=4,
                        backbone="mobilenet_v2", lr=5e-4), dataset=tiny)
    message = str(info.value)
    for needle in ("--embedding_dim: 8 in the saved run, 4 now",
                   "--backbone: 'small_cnn' in the saved run, 'mobilenet_v2' now",
                   "--lr: 0.001 in the saved run, 0.0005 now", "another --model_dir"):
        assert needle in message
    # Optimisation flags may change on request; model flags never.
    with pytest.raises(run_state.IncompatibleRunError, match="--lr"):
        Trainer(_config(tmp_path, epochs=1, sampler="random", lr=5e-4), dataset=tiny)
    t = Trainer(_config(tmp_path, epochs=1, sampler="random", lr=5e-4, eval_every=3,
                        allow_flag_changes=True), dataset=tiny)
    assert t.changed_flags == ["eval_every", "lr"]
    t.fit()  # nothing left to train: restores, applies the new rate, evaluates
    assert t.step.learning_rates[0] == pytest.approx(5e-4)
    with pytest.raises(run_state.IncompatibleRunError, match="--embedding_dim"):
        Trainer(_config(tmp_path, sampler="random", embedding_dim=4,
                        allow_flag_changes=True), dataset=tiny)
    # Other data (an image check dropped files since) is refused too.
    fewer = data.Dataset("digits", data.subset(tiny.train, range(150)), tiny.test)
    with pytest.raises(run_state.IncompatibleRunError, match="--num_train_images"):
        Trainer(_config(tmp_path, epochs=1, sampler="random"), dataset=fewer)


def test_config_differences_normalise_tuples():
    saved = {"recall_ks": [1, 2], "epochs": 3, "model_dir": "a"}
    now = {"recall_ks": (1, 2), "epochs": 4, "model_dir": "b"}
    assert run_state.config_differences(saved, now) == [("epochs", 3, 4)]
    assert run_state.check_resume_config(saved, now) == ["epochs"]
    # Keys an older run did not save yet are logged, not refused.
    assert run_state.check_resume_config(
        saved, dict(now, embedding_dim=8, num_train_images=5)) == [
        "embedding_dim", "epochs", "num_train_images"]
    with pytest.raises(run_state.IncompatibleRunError, match="--seed: 1 in the saved"):
        run_state.check_resume_config(dict(saved, seed=1), dict(now, seed=2))


# -- non-finite steps ----------------------------------------------------------------


def test_nan_batch_is_skipped_on_device_and_counted(tmp_path, tiny):
    t = Trainer(_config(tmp_path), dataset=tiny)
    batch = _fixed_batch(t)
    images, labels, targets, mask = batch
    bad = (tf.tensor_scatter_nd_update(images, [[3, 0, 0, 0]], [np.nan]), labels, targets, mask)
    before = [w.numpy().copy() for w in t.model.weights]
    opt_before = [v.numpy().copy() for v in t.step.head_optimizer.variables]
    assert np.isnan(float(t.step_fn(bad)))
    for a, w in zip(before, t.model.weights, strict=True):
        np.testing.assert_array_equal(a, w.numpy())
    for a, v in zip(opt_before, t.step.head_optimizer.variables, strict=True):
        np.testing.assert_array_equal(a, v.numpy())  # moments and step count untouched
    assert int(t.step.head_optimizer.iterations.numpy()) == 0
    loss = float(t.step_fn(batch))
    assert np.isfinite(loss) and int(t.step.head_optimizer.iterations.numpy()) == 1
    assert any(not np.array_equal(a, w.numpy()) for a, w in zip(before, t.model.weights,
                                                               strict=True))


def _inject_nan(trainer, which):
    """Makes the images of the steps `which(n)` picks NaN, in both step functions
    (the plain one and the --refresh=memory one, whose batch also carries indices)."""
    calls = []

    def poisoning(step_fn):
        def step(batch):
            calls.append(1)
            images, *rest = batch
            if which(len(calls)):
                images = images * np.float32(np.nan)
            return step_fn((images, *rest))
        return step

    trainer.step_fn = poisoning(trainer.step_fn)
    trainer._memory_step_fn = poisoning(trainer._memory_step_fn)


def test_skipped_steps_are_counted_and_too_many_stop_keeping_the_last_good_checkpoint(
        tmp_path, tiny):
    t = Trainer(_config(tmp_path, epochs=1, sampler="random"), dataset=tiny)
    _inject_nan(t, lambda n: n in (2, 3))
    metrics = t.fit()
    assert metrics["train"]["nonfinite_steps"] == 2
    assert int(t.step.head_optimizer.iterations.numpy()) == 4 - 2
    assert np.isfinite(metrics["train"]["final_loss"])
    good = _variables(str(tmp_path / "checkpoints" / "ckpt-1"))

    t = Trainer(_config(tmp_path, epochs=2, sampler="random", max_consecutive_nonfinite=3),
                dataset=tiny)
    _inject_nan(t, lambda n: n >= 2)
    with pytest.raises(step.NonFiniteError) as info:
        t.fit()
    message = str(info.value)
    assert "3 consecutive steps" in message and "lower learning rate" in message
    assert "ckpt-1" in message
    assert t.checkpoints.latest_checkpoint().endswith("ckpt-1")
    after = _variables(t.checkpoints.latest_checkpoint())
    for k in good:
        np.testing.assert_array_equal(good[k], after[k], err_msg=k)
    assert int(t.state.nonfinite_steps.numpy()) == 2 + 3  # counted in the run, not yet saved


@pytest.mark.slow
def test_skip_decision_is_shared_by_all_replicas():
    # Two logical CPUs, MirroredStrategy: a NaN only in replica 1's half of the
    # batch must stop the update on both replicas (a subprocess: the logical
    # devices must be set before TF starts).
    script = os.path.join(ROOT, "tests", "_reliability_mirrored.py")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, script], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"nan_loss": True, "changed_after_nan": False, "iterations_after_nan": 0,
                      "changed_after_clean": True, "iterations_after_clean": 1,
                      "replicas_agree": True}


# -- files ---------------------------------------------------------------------------


def test_json_writes_are_atomic_and_disk_full_names_the_path(tmp_path, monkeypatch):
    path = str(tmp_path / "metrics.json")
    outputs.write_json_atomic(path, {"a": 1})
    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(outputs.DiskFullError) as info:
        outputs.write_json_atomic(path, {"a": 2})
    assert path in str(info.value) and info.value.errno == errno.ENOSPC
    monkeypatch.setattr(os, "fsync", real_fsync)
    with open(path) as f:
        assert json.load(f) == {"a": 1}  # the old file is intact
    assert os.listdir(tmp_path) == ["metrics.json"]  # no temporary file left


# -- the CLI ---------------------------------------------------------------------------

CLI_FLAGS = ["--flagfile=configs/digits.cfg", "--epochs=4", "--embedding_dim=16",
             "--image_size=16", "--resize_size=18", "--batch_size=150", "--refresh_every=2",
             "--eval_every=0", "--noprogress", "--noexport"]


def _cli(model_dir, *extra):
    return [sys.executable, "-m", "sst_tf.train", *CLI_FLAGS, f"--model_dir={model_dir}", *extra]


def _env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")


def _run(model_dir, *extra):
    return subprocess.run(_cli(model_dir, *extra), cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=120)


def _latest_name(model_dir):
    path = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    return os.path.basename(path) if path else None


def _start_and_signal(model_dir, sig, after):
    """Starts a run, sends `sig` once checkpoint `after` is the latest; (code, out, err)."""
    proc = subprocess.Popen(_cli(model_dir), cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 90
    while _latest_name(model_dir) != after and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


@pytest.mark.slow
def test_cli_sigkill_and_sigterm_then_resume_match_an_uninterrupted_run(tmp_path):
    ref = _run(tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr[-3000:]
    with open(tmp_path / "ref" / "metrics.json") as f:
        ref_metrics = json.load(f)
    ref_ckpt = tf.train.latest_checkpoint(str(tmp_path / "ref" / "checkpoints"))

    # SIGKILL once epoch 1's checkpoint is complete: the rerun resumes from it.
    run = tmp_path / "run"
    code, _, _ = _start_and_signal(str(run), signal.SIGKILL, "ckpt-1")
    assert code == -signal.SIGKILL
    with open(run / "metrics.json") as f:
        assert "after" not in json.load(f)  # it was killed before the end

    # The rerun gets SIGTERM after epoch 2: it finishes its step, writes a
    # checkpoint and exits 143 with one message.
    code, _, err = _start_and_signal(str(run), signal.SIGTERM, "ckpt-2")
    assert code == 128 + signal.SIGTERM, err[-3000:]
    assert "Resuming from" in err and "ckpt-1" in err
    errors = [ln for ln in err.splitlines() if ln.startswith("sst_tf.train: error:")]
    assert len(errors) == 1 and "stopped by SIGTERM" in errors[0], err[-3000:]
    assert "rerun the same command to resume" in errors[0]
    assert "Traceback" not in err
    saved = errors[0].split("(checkpoint ")[1].split(")")[0]
    assert os.path.exists(saved + ".index")

    # The third run finishes: same weights and metrics as the uninterrupted run.
    last = _run(run)
    assert last.returncode == 0, last.stderr[-3000:]
    assert f"Resuming from {saved}" in last.stderr
    _assert_same_weights(ref_ckpt, tf.train.latest_checkpoint(str(run / "checkpoints")))
    with open(run / "metrics.json") as f:
        assert json.load(f) == ref_metrics

    # Resuming with another model is refused: tests/test_cli_errors.py (train-resume-another-model).


# -- input faults (docs/reliability.md table; corrupt, zero-byte, missing listed files and empty
# class folders are reproduced by tests/test_datasets.py of the readers) ---------------


def _write_png(path, image):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tf.io.write_file(path, tf.io.encode_png(tf.constant(image, tf.uint8)))


def test_tiny_and_huge_images_are_resized_like_any_other(tmp_path):
    options = pipeline.ImageOptions(image_size=16, resize_size=18)
    one = str(tmp_path / "one.png")
    _write_png(one, [[[200, 10, 30]]])  # 1x1
    huge = str(tmp_path / "huge.png")
    big = np.zeros((3000, 4000, 3), np.uint8)
    big[:, 2000:] = 255  # left half black, right half white
    _write_png(huge, big)
    for path in (one, huge):
        image = pipeline.eval_preprocess(pipeline.decode_image_file(tf.constant(path)), options)
        assert image.shape == (16, 16, 3) and np.isfinite(image.numpy()).all()
    small = pipeline.eval_preprocess(pipeline.decode_image_file(tf.constant(one)), options)
    np.testing.assert_allclose(small.numpy(), np.broadcast_to([200, 10, 30], (16, 16, 3)),
                               atol=1e-3)  # a constant image stays constant
    image = pipeline.eval_preprocess(pipeline.decode_image_file(tf.constant(huge)), options)
    assert image.numpy()[:, 0].max() < 1 and image.numpy()[:, -1].min() > 254


def test_a_class_with_a_single_image_is_kept_without_targets(caplog):
    labels = np.array([0] * 6 + [1] * 6 + [2])  # class 2 has one image
    rng = np.random.default_rng(0)
    s = sampling.RandomSampler(labels, 13, num_targets=2, seed=0)
    s.refresh(rng.normal(size=(13, 4)).astype(np.float32))
    plan = s.plan(0)
    row = int(np.flatnonzero(labels[plan.indices[0]] == 2)[0])
    assert (plan.targets[0, row] == -1).all()  # no same-class partner: no target
    assert (plan.targets[0][labels[plan.indices[0]] != 2] >= 0).any()  # still an imposter
    from sst_tf import evaluation

    result = evaluation.evaluate(rng.normal(size=(13, 4)).astype(np.float32), labels, (1,))
    assert result["num_queries_skipped"] == 1 and np.isfinite(result["map@r"])
    with caplog.at_level("WARNING"):
        data.check_splits(labels, labels, "demo")
    assert "1 class(es) with a single image" in caplog.text


def test_splits_with_one_class_are_refused_naming_the_split(tmp_path, tiny):
    one_class = data.subset(tiny.test, np.flatnonzero(tiny.test.labels == 3))
    n = len(one_class)
    with pytest.raises(ValueError, match=f"demo test split has {n} image.*1 class.*at least 2"):
        data.check_splits(tiny.train.labels, one_class.labels, "demo")
    with pytest.raises(ValueError, match="train split .* 1 class"):
        data.check_splits(one_class.labels, tiny.test.labels)
    with pytest.raises(ValueError, match="digits test split"):
        Trainer(_config(tmp_path), dataset=data.Dataset("digits", tiny.train, one_class))


def _file_split(split, folder, count):
    paths = []
    for i in range(count):
        path = os.path.join(folder, f"{split.labels[i]}", f"{i}.png")
        _write_png(path, split.images[i])
        paths.append(path)
    return data.Split(split.labels[:count], split.class_names, paths=tuple(paths))


def test_an_image_lost_during_training_stops_with_its_name_and_keeps_progress(tmp_path, tiny):
    train = _file_split(tiny.train, str(tmp_path / "images" / "train"), 200)
    test = _file_split(tiny.test, str(tmp_path / "images" / "test"), 100)
    t = Trainer(_config(tmp_path / "run", sampler="random", loss="contrastive"),
                dataset=data.Dataset("files", train, test))
    lost = train.paths[123]
    os.remove(lost)  # after the image check: e.g. a network share went away
    with pytest.raises(pipeline.InputError) as info:
        t.fit()
    message = str(info.value)
    assert lost in message and "epoch 1" in message and "Progress is saved in" in message
    saved = message.split("Progress is saved in ")[1].split(":")[0]
    assert os.path.exists(saved + ".index")
    epoch, steps = checkpoints.progress_of(saved)
    assert epoch == 0 and 0 <= steps < 4


def test_unreadable_files_in_a_folder_are_skipped_and_counted(tmp_path, caplog):
    folder = pytest.importorskip("sst_tf.datasets.folder")
    images = pytest.importorskip("sst_tf.datasets.images")
    ds = data.load_dataset("digits", upscale=1)
    for split_name, split in (("train", ds.train), ("test", ds.test)):
        for i in range(12):
            _write_png(str(tmp_path / split_name / f"c{split.labels[i]}" / f"{i}.png"),
                       split.images[i])
    gone = str(tmp_path / "train" / f"c{ds.train.labels[0]}" / "gone.png")
    os.symlink(str(tmp_path / "nowhere.png"), gone)  # listed, but cannot be read
    locked = str(tmp_path / "train" / f"c{ds.train.labels[1]}" / "locked.png")
    _write_png(locked, ds.train.images[1])
    os.chmod(locked, 0)  # unreadable unless we are root (then it simply decodes)
    with caplog.at_level("WARNING"):
        loaded = folder.load(str(tmp_path), cache_dir=str(tmp_path / "cache"))
    unreadable = 1 if os.geteuid() == 0 else 2
    assert gone not in loaded.train.paths and len(loaded.train) == 14 - unreadable
    assert gone in caplog.text
    assert f"skipped {unreadable} of 14 images that cannot be decoded" in caplog.text
    with pytest.raises(images.ImageDecodeError, match="gone.png"):
        folder.load(str(tmp_path), strict_images=True, cache_dir=str(tmp_path / "cache"))
