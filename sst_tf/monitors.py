"""What the training loop watches, and how it reacts.

* `PlateauSchedule`: reduce-on-plateau and early stopping on the epoch's
  training loss. Every learning rate is multiplied by `lr_factor` after
  `lr_patience` epochs without a lower loss; training stops after
  `early_stop_patience` such epochs. The counters are variables of the
  checkpointed `checkpoints.LoopState`, so a resumed run continues the schedule.
* `NonFiniteMonitor`: counts the steps skipped for a non-finite loss or
  gradient (`step.TrainStep` skips them in-graph); `max_consecutive_nonfinite`
  in a row stop the run as diverged (`step.NonFiniteError`).
* `check_collapse`: refreshed embeddings of the training split that nearly
  collapsed to one point are reported by a warning with advice that fits the
  run's settings; with `stop_on_collapse` they stop the run (`CollapseError`).
  A warning by default: a low spread after a few epochs is not always final
  (runs that dipped below the threshold recovered and trained well).
"""

from __future__ import annotations

import numpy as np
from absl import logging

from sst_tf import loss_registry, optim
from sst_tf.checkpoints import LoopState, RunCheckpoints
from sst_tf.config import TrainConfig
from sst_tf.step import NonFiniteError, TrainStep

# Below this relative spread (see `relative_spread`) the training split's
# embeddings count as collapsed to one point. Untrained small_cnn embeddings on
# digits sit at about 0.07, trained ones near 1.
COLLAPSE_SPREAD = 0.01


class PlateauSchedule:
    """Reduce-on-plateau and early stopping on the epoch's training loss."""

    def __init__(self, state: LoopState, step: TrainStep, *, lr_patience: int,
                 lr_factor: float, early_stop_patience: int):
        """Keeps its counters in `state` and scales the learning rates of `step`.

        Args:
          state: the loop state (best_loss, lr_wait, stale_epochs).
          step: the training step whose learning rates are scaled.
          lr_patience: epochs without improvement before the rates are scaled.
          lr_factor: the factor (--lr_factor).
          early_stop_patience: epochs without improvement before training stops.
        """
        self.state = state
        self.step = step
        self.lr_patience = lr_patience
        self.lr_factor = lr_factor
        self.early_stop_patience = early_stop_patience

    def update(self, epoch_loss: float) -> bool:
        """Records an epoch's loss; scales the learning rates on a plateau.

        Returns:
          True when training should stop.
        """
        state = self.state
        if epoch_loss < float(state.best_loss.numpy()):
            state.best_loss.assign(epoch_loss)
            state.lr_wait.assign(0)
            state.stale_epochs.assign(0)
            return False
        state.lr_wait.assign_add(1)
        state.stale_epochs.assign_add(1)
        if int(state.lr_wait.numpy()) >= self.lr_patience:
            self.step.scale_learning_rates(self.lr_factor)
            state.lr_wait.assign(0)
            logging.info("Loss plateaued: learning rates now %s", self.step.learning_rates)
        return self.stopped

    @property
    def stopped(self) -> bool:
        """Whether training has stopped early (a resumed run may have already)."""
        return int(self.state.stale_epochs.numpy()) >= self.early_stop_patience


class NonFiniteMonitor:
    """Counts skipped non-finite steps; too many in a row raise `NonFiniteError`."""

    def __init__(self, state: LoopState, step: TrainStep, checkpoints: RunCheckpoints,
                 limit: int):
        """Counts into `state.nonfinite_steps` (the run's total, checkpointed).

        Args:
          state: the loop state.
          step: the training step (its loss scale and learning rates are reported).
          checkpoints: the run's checkpoints (the last good one is reported).
          limit: skipped steps in a row that stop the run (--max_consecutive_nonfinite).
        """
        self.state = state
        self.step = step
        self.checkpoints = checkpoints
        self.limit = limit
        self.in_a_row = 0

    def finite(self) -> None:
        """A step was applied: the run of skipped steps ends."""
        self.in_a_row = 0

    def skipped(self, epoch: int, step: int) -> None:
        """Counts and logs a skipped step.

        Args:
          epoch: 0-based epoch.
          step: 0-based step in it.

        Raises:
          NonFiniteError: the `limit`-th skipped step in a row.
        """
        self.state.nonfinite_steps.assign_add(1)
        self.in_a_row += 1
        n, limit = self.in_a_row, self.limit
        loss_scale = self.step.loss_scale
        scale = ("" if loss_scale is None else
                 f", float16 loss scale lowered to {float(loss_scale.scale.numpy()):g}")
        logging.warning("Epoch %d step %d: non-finite loss or gradient, step skipped "
                        "(%d in a row, %d in this run%s).", epoch + 1, step + 1, n,
                        int(self.state.nonfinite_steps.numpy()), scale)
        if n >= limit:
            lr, head_lr = self.step.learning_rates
            latest = self.checkpoints.latest_checkpoint()
            raise NonFiniteError(
                f"{n} consecutive steps had a non-finite loss or gradient (epoch {epoch + 1}, "
                f"step {step + 1}; --max_consecutive_nonfinite={limit}): training diverged. "
                f"The last good checkpoint is kept: {latest or 'none yet'}. "
                f"Try a lower learning rate (now --lr={lr:.3g}, head {head_lr:.3g}): rerun "
                "with a smaller --lr and --allow_flag_changes to continue from that "
                "checkpoint, or in a new --model_dir."
            )


class CollapseError(RuntimeError):
    """The training split's embeddings collapsed to (nearly) one point."""


def relative_spread(embeddings: np.ndarray) -> float:
    """Mean distance of the rows to their centroid over their mean norm (0: one point)."""
    e = np.asarray(embeddings, np.float64)
    spread = np.linalg.norm(e - e.mean(axis=0), axis=1).mean()
    return float(spread / max(np.linalg.norm(e, axis=1).mean(), 1e-30))


# SST on unit vectors: squared distances are at most 4, so below this scale its
# softplus stays nearly linear and its gradients vanish (the paper's scale 1).
SST_UNIT_VECTOR_MIN_SCALE = 4.0


def collapse_advice(config: TrainConfig) -> str:
    """What to change in a run whose embeddings collapsed, from its actual settings."""
    if config.loss == "sst" and config.normalize:
        scale = float(loss_registry.params(config)["scale"])
        if scale < SST_UNIT_VECTOR_MIN_SCALE:
            return (f"SST on L2-normalised embeddings needs --sst_scale well above 1 (now "
                    f"{scale:g}; its margin variable is at most 4 there, the default is "
                    f"{loss_registry.loss_params('sst')['scale']:g}).")
    rate = optim.loss_learning_rate(config.lr, config.loss, config.loss_lr_multiplier)
    return f"Try a lower --lr (the run's rate is now {rate:g})."


def check_collapse(embeddings: np.ndarray, epoch: int, config: TrainConfig,
                   checkpoint_dir: str) -> bool:
    """Warns (with `config.stop_on_collapse`: stops) when the refreshed embeddings are one point.

    Args:
      embeddings: the training split's embeddings, [N, d].
      epoch: the epoch they were refreshed for (0-based; epochs trained so far).
      config: the run's configuration (the advice, `stop_on_collapse`).
      checkpoint_dir: where the run's checkpoints are (named in the message).

    Returns:
      True when the embeddings count as collapsed (a warning was logged).

    Raises:
      CollapseError: collapsed, and `config.stop_on_collapse`.
    """
    spread = relative_spread(embeddings)
    if spread >= COLLAPSE_SPREAD:
        return False
    what = (f"the embeddings of the training split collapsed after epoch {epoch} to nearly "
            f"one point (spread {spread:.2g} of their norm, below {COLLAPSE_SPREAD}): the "
            f"loss has little gradient left. {collapse_advice(config)}")
    if getattr(config, "stop_on_collapse", False):
        raise CollapseError(f"{what} Checkpoints so far: {checkpoint_dir}.")
    logging.warning("%s Training goes on (runs can recover; --stop_on_collapse stops here).",
                    what)
    return True
