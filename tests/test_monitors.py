"""sst_tf.monitors: plateau and early stopping, non-finite steps, collapse (no epoch loop)."""

import keras
import numpy as np
import pytest

from sst_tf import checkpoints, losses, monitors, step
from sst_tf import model as model_lib
from sst_tf.config import TrainConfig


def _step(lr=1e-3, head_lr_multiplier=2.0):
    keras.utils.set_random_seed(0)
    model = model_lib.build_model("small_cnn", None, 6, image_size=8)
    backbone, head = model_lib.variable_groups(model)
    return step.TrainStep(model, losses.make_loss("sst"), backbone, head, lr=lr,
                          head_lr_multiplier=head_lr_multiplier)


def test_plateau_halves_then_stops():
    s = _step()
    state = checkpoints.LoopState(num_train=4, embedding_dim=6)
    plateau = monitors.PlateauSchedule(state, s, lr_patience=2, lr_factor=0.5,
                                       early_stop_patience=5)
    lr0, _ = s.learning_rates
    history = []
    for loss in [1.0, 0.9, 0.95, 0.95, 0.95, 0.95, 0.95]:
        history.append((plateau.update(loss), s.learning_rates[0]))
    stops = [stop for stop, _ in history]
    lrs = [lr for _, lr in history]
    assert stops == [False] * 6 + [True] and plateau.stopped
    assert lrs[:3] == [lr0] * 3
    assert lrs[3] == pytest.approx(lr0 / 2) and lrs[5] == pytest.approx(lr0 / 4)
    assert s.learning_rates[1] == pytest.approx(2 * lrs[-1])  # the head keeps its multiplier
    assert float(state.best_loss.numpy()) == 0.9 and int(state.stale_epochs.numpy()) == 5


def test_a_restored_stopped_run_is_stopped():
    state = checkpoints.LoopState(num_train=4, embedding_dim=6)
    plateau = monitors.PlateauSchedule(state, _step(), lr_patience=2, lr_factor=0.5,
                                       early_stop_patience=3)
    assert not plateau.stopped
    state.stale_epochs.assign(3)  # as restored from a checkpoint
    assert plateau.stopped


class _Checkpoints:
    def latest_checkpoint(self):
        return "runs/x/checkpoints/ckpt-4"


def test_non_finite_steps_are_counted_and_too_many_in_a_row_stop(caplog):
    state = checkpoints.LoopState(num_train=4, embedding_dim=6)
    monitor = monitors.NonFiniteMonitor(state, _step(lr=2e-3), _Checkpoints(), limit=3)
    monitor.skipped(0, 4)
    monitor.finite()  # the run of skipped steps ends
    with caplog.at_level("WARNING"):
        monitor.skipped(1, 0)
        monitor.skipped(1, 1)
    assert "Epoch 2 step 2: non-finite loss or gradient, step skipped (2 in a row, 3 in this " \
           "run)." in caplog.text
    with pytest.raises(step.NonFiniteError) as info:
        monitor.skipped(1, 2)
    assert str(info.value) == (
        "3 consecutive steps had a non-finite loss or gradient (epoch 2, step 3; "
        "--max_consecutive_nonfinite=3): training diverged. The last good checkpoint is kept: "
        "runs/x/checkpoints/ckpt-4. Try a lower learning rate (now --lr=0.002, head 0.004): "
        "rerun with a smaller --lr and --allow_flag_changes to continue from that checkpoint, "
        "or in a new --model_dir.")
    assert int(state.nonfinite_steps.numpy()) == 4


def test_relative_spread():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 4))
    want = np.mean([np.linalg.norm(r - x.mean(0)) for r in x]) / np.mean(
        [np.linalg.norm(r) for r in x])
    assert monitors.relative_spread(x) == pytest.approx(want)
    assert monitors.relative_spread(np.ones((5, 3))) == 0.0


def test_collapse_warns_or_stops_with_advice_for_the_run():
    point = np.tile([[1.0, 0.0, 0.0]], (20, 1)) + 1e-5 * np.arange(20)[:, None]
    spread = np.random.default_rng(0).normal(size=(20, 3))
    # The paper's SST form on unit vectors, told to stop.
    sst = TrainConfig(model_dir="unused", loss="sst", normalize=True, sst_scale=1.0, lr=1e-3,
                      stop_on_collapse=True).resolved()
    assert not monitors.check_collapse(spread, 3, sst, "runs/x/checkpoints")  # spread out
    with pytest.raises(monitors.CollapseError) as info:
        monitors.check_collapse(point, 3, sst, "runs/x/checkpoints")
    message = str(info.value)
    assert message.startswith("the embeddings of the training split collapsed after epoch 3")
    assert "--sst_scale well above 1 (now 1;" in message
    assert message.endswith("Checkpoints so far: runs/x/checkpoints.")
    # By default a warning: the run goes on. The advice names the rate the run trains at.
    triplet = TrainConfig(model_dir="unused", loss="triplet_hard", lr=1e-3).resolved()
    assert monitors.check_collapse(point, 3, triplet, "runs/x/checkpoints")
    advice = monitors.collapse_advice(triplet)
    assert "--sst_scale" not in advice
    assert f"{1e-3 * triplet.loss_lr_multiplier:g}" in advice
