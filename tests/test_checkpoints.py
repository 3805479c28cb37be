"""sst_tf.checkpoints: loop state, saving, the latest checkpoint, signals, resume checks.

Built without a model or the epoch loop; a whole run's resume is in
tests/test_reliability.py.
"""

import json
import math
import os
import signal

import keras
import numpy as np
import pytest
import tensorflow as tf

from sst_tf import checkpoints, losses, outputs, run_state, step
from sst_tf import model as model_lib
from sst_tf.config import TrainConfig
from sst_tf.run_state import RunFolder

# The loop state's keys in a checkpoint: the checkpoints of earlier runs hold these.
LOOP_KEYS = ["epoch", "best_loss", "lr_wait", "stale_epochs", "step_in_epoch", "epoch_loss_sum",
             "epoch_loss_count", "nonfinite_steps", "refresh_epoch", "refresh_embeddings"]


def _checkpoints(tmp_path):
    state = checkpoints.LoopState(num_train=6, embedding_dim=3)
    weights = tf.Variable(np.zeros(4, np.float32))
    ckpts = checkpoints.RunCheckpoints(
        {"weights": weights, **state.checkpoint_items()}, state, RunFolder(str(tmp_path)),
        tf.distribute.get_strategy(), max_to_keep=2)
    return state, weights, ckpts


def test_loop_state_keys_and_start_values():
    state = checkpoints.LoopState(num_train=6, embedding_dim=3)
    assert list(state.checkpoint_items()) == LOOP_KEYS
    assert int(state.epoch.numpy()) == 0 and float(state.best_loss.numpy()) == math.inf
    assert int(state.refresh_epoch.numpy()) == -1
    assert state.refresh_embeddings.shape == (6, 3)
    assert state.epoch_loss() == (0.0, 0)


class _Sampler:
    def __init__(self, needs_embeddings):
        self.needs_embeddings = needs_embeddings
        self.refreshed = []

    def refresh(self, embeddings, epoch=0):
        self.refreshed.append((None if embeddings is None else embeddings.copy(), epoch))


def test_the_sampler_state_is_recorded_and_restored():
    state = checkpoints.LoopState(num_train=6, embedding_dim=3)
    sampler = _Sampler(needs_embeddings=True)
    assert not state.restore_sampler(sampler, 2)  # nothing recorded: re-embed
    assert sampler.refreshed == []
    embeddings = np.arange(18, dtype=np.float32).reshape(6, 3)
    state.record_refresh(embeddings, 1)
    assert state.restore_sampler(sampler, 2)
    (got, epoch), = sampler.refreshed
    np.testing.assert_array_equal(got, embeddings)
    assert epoch == 1  # the epoch of that refresh, not the resumed one
    plain = _Sampler(needs_embeddings=False)
    assert state.restore_sampler(plain, 2) and plain.refreshed == [(None, 2)]


def test_progress_the_latest_checkpoint_and_restore(tmp_path):
    state, weights, ckpts = _checkpoints(tmp_path)
    assert ckpts.latest_checkpoint() is None
    weights.assign([1.0, 2.0, 3.0, 4.0])
    state.epoch.assign(1)
    ckpts.save_epoch(1)
    assert checkpoints.progress_of(ckpts.manager.latest_checkpoint) == (1, 0)
    path = ckpts.save_progress(1, 3, 2.5, 3)  # 3 steps into the 2nd epoch
    assert path.startswith(ckpts.interrupt_dir)
    assert checkpoints.progress_of(path) == (1, 3)
    assert ckpts.latest_checkpoint() == path  # further than the epoch checkpoint

    state2, weights2, ckpts2 = _checkpoints(tmp_path)
    ckpts2.restore(ckpts2.latest_checkpoint())
    np.testing.assert_array_equal(weights2.numpy(), [1.0, 2.0, 3.0, 4.0])
    assert int(state2.step_in_epoch.numpy()) == 3 and state2.epoch_loss() == (2.5, 3)

    # The next epoch checkpoint resets the progress and deletes the interrupted one.
    state.epoch.assign(2)
    ckpts.save_epoch(2)
    assert not os.path.exists(ckpts.interrupt_dir)
    assert state.epoch_loss() == (0.0, 0) and int(state.step_in_epoch.numpy()) == 0
    assert checkpoints.progress_of(ckpts.latest_checkpoint()) == (2, 0)
    tie = ckpts.save_progress(2, 0, 0.0, 0)
    assert ckpts.latest_checkpoint() == ckpts.manager.latest_checkpoint != tie  # ties: epoch's


def test_a_signal_writes_the_progress_and_raises_interrupted(tmp_path):
    state, _, ckpts = _checkpoints(tmp_path)
    with ckpts.graceful_signals():
        ckpts.check_signal(0, 2, 1.0, 2)  # no signal: nothing happens
        os.kill(os.getpid(), signal.SIGTERM)
        with pytest.raises(run_state.Interrupted, match="SIGTERM") as info:
            ckpts.check_signal(0, 2, 1.0, 2)
    assert info.value.exit_code == 143
    assert checkpoints.progress_of(info.value.checkpoint) == (0, 2)
    assert ckpts.signals is None and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

    # At the start of an epoch its epoch checkpoint already holds the point: no new file.
    state.epoch.assign(1)
    ckpts.save_epoch(1)
    with ckpts.graceful_signals():
        os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(run_state.Interrupted, match="SIGINT") as info:
            ckpts.check_signal(1)
    assert info.value.exit_code == 130
    assert info.value.checkpoint == ckpts.manager.latest_checkpoint
    assert not os.path.exists(ckpts.interrupt_dir)


def test_disk_full_on_checkpoint_save_names_the_folder(tmp_path, monkeypatch):
    _, _, ckpts = _checkpoints(tmp_path)

    def full(*args, **kwargs):
        raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")

    monkeypatch.setattr(ckpts.manager, "save", full)
    with pytest.raises(outputs.DiskFullError, match=str(tmp_path / "checkpoints")):
        ckpts.save_epoch(1)
    with pytest.raises(ValueError, match="other"):  # other errors pass through unchanged
        with outputs.disk_full_guard("x"):
            raise ValueError("other")


def test_flags_are_checked_only_when_there_is_a_run_to_resume(tmp_path):
    folder, strategy = RunFolder(str(tmp_path)), tf.distribute.get_strategy()
    record = {"model_dir": str(tmp_path), "lr": 0.001, "epochs": 3}
    with open(folder.config, "w") as f:
        json.dump(dict(record, lr=0.01), f)
    assert checkpoints.check_resume(folder, strategy, record, False) == []  # no checkpoint yet
    _, _, ckpts = _checkpoints(tmp_path)
    ckpts.save_progress(0, 1, 0.5, 1)  # an interrupted checkpoint counts too
    with pytest.raises(run_state.IncompatibleRunError,
                       match="--lr: 0.01 in the saved run, 0.001 now"):
        checkpoints.check_resume(folder, strategy, record, False)
    assert checkpoints.check_resume(folder, strategy, record, True) == ["lr"]
    assert checkpoints.check_resume(folder, strategy, dict(record, lr=0.01, epochs=4),
                                    False) == ["epochs"]


def test_resume_learning_rates_takes_the_changed_flags():
    keras.utils.set_random_seed(0)
    model = model_lib.build_model("small_cnn", None, 6, image_size=8)
    backbone, head = model_lib.variable_groups(model)
    s = step.TrainStep(model, losses.make_loss("sst"), backbone, head, lr=1e-3,
                       head_lr_multiplier=2.0)
    config = TrainConfig(model_dir="unused", lr=5e-4, head_lr_multiplier=3.0).resolved()
    checkpoints.resume_learning_rates(s, config, ["epochs"])  # no rate flag changed
    assert s.learning_rates == pytest.approx((1e-3, 2e-3))
    checkpoints.resume_learning_rates(s, config, ["lr"])
    assert s.learning_rates == pytest.approx((5e-4, 1.5e-3))


def test_non_finite_weights_never_reach_a_checkpoint(tmp_path):
    state = checkpoints.LoopState(num_train=6, embedding_dim=3)
    model = tf.Module()
    model.w = tf.Variable(np.ones(4, np.float32))
    ckpts = checkpoints.RunCheckpoints(
        {"model": model, **state.checkpoint_items()}, state, RunFolder(str(tmp_path)),
        tf.distribute.get_strategy(), max_to_keep=2)
    ckpts.save_epoch(1)
    good = ckpts.latest_checkpoint()
    for bad in (np.inf, np.nan):
        model.w.assign([1.0, bad, 1.0, 1.0])
        with pytest.raises(step.NonFiniteError, match=f"nothing was saved.*{good}"):
            ckpts.save_epoch(2)
        with pytest.raises(step.NonFiniteError):
            ckpts.save_progress(1, 3, 0.0, 0)
        assert ckpts.latest_checkpoint() == good  # the last good one stays the latest
    # The run resumes from it with finite weights.
    ckpts.restore(good)
    np.testing.assert_array_equal(model.w.numpy(), np.ones(4))
