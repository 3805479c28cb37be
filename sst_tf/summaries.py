"""What the training loop reports about its epochs: TensorBoard events, plan logs.

* `Summaries`: the run's TensorBoard events, `train/` (the loss of every
  applied step, each epoch's statistics and learning rates) and `eval/` (the metrics of
  every evaluation). Only the chief writes; other workers get no-op writers.
* `log_plan`: the two log lines on an epoch's plan: its batches, coverage and
  fill, and what the batches are made of (`sampling.composition_statistics`).
"""

from __future__ import annotations

import math

import tensorflow as tf
from absl import logging

from sst_tf.run_state import RunFolder
from sst_tf.sampling import EpochPlan


class Summaries:
    """A run's TensorBoard writers (`RunFolder.train_events`, `.eval_events`).

    The writers are created on first use.
    """

    def __init__(self, folder: RunFolder, is_chief: bool):
        """Writes under `folder` if `is_chief`, else nothing."""
        self.folder = folder
        self.is_chief = is_chief
        self._train = self._eval = None

    def writers(self) -> tuple[tf.summary.SummaryWriter, tf.summary.SummaryWriter]:
        """The (train, eval) writers; no-op writers off the chief."""
        if self._train is None and not self.is_chief:
            self._train = self._eval = tf.summary.create_noop_writer()
        if self._train is None:
            self._train = tf.summary.create_file_writer(self.folder.train_events)
            self._eval = tf.summary.create_file_writer(self.folder.eval_events)
        return self._train, self._eval

    def write_step(self, loss: float, step: int) -> None:
        """A step's loss ("loss_per_step") at `step` (optimizer steps so far)."""
        writer, _ = self.writers()
        with writer.as_default(step=step):
            tf.summary.scalar("loss_per_step", loss)

    def write_epoch(self, stats: dict, learning_rates: tuple[float, float], step: int) -> None:
        """An epoch's statistics and the (backbone, head) learning rates, at `step`."""
        writer, _ = self.writers()
        with writer.as_default(step=step):
            for key, value in stats.items():
                tf.summary.scalar(key, value)
            tf.summary.scalar("learning_rate", learning_rates[0])
            tf.summary.scalar("head_learning_rate", learning_rates[1])
        writer.flush()

    def write_eval(self, metrics: dict, step: int) -> None:
        """The float metrics of an evaluation, at `step`."""
        _, writer = self.writers()
        with writer.as_default(step=step):
            for key, value in metrics.items():
                if isinstance(value, float):
                    tf.summary.scalar(key, value)
        writer.flush()


def log_plan(epoch: int, refresh: bool, plan: EpochPlan, seconds: float) -> None:
    """Logs an epoch's plan.

    Args:
      epoch: 0-based epoch.
      refresh: whether the sampler was refreshed for it.
      plan: the plan (before padding to the replicas).
      seconds: time taken by the refresh and the plan.
    """
    stats = plan.stats
    logging.info(
        "Epoch %d %s: %.2fs, %d batches, coverage %.3f, fill %.3f, "
        "%.2f classes/batch, %.3f of batches without a triplet",
        epoch + 1, "refresh" if refresh else "plan", seconds, plan.num_batches,
        stats["coverage"], stats["mean_fill"], stats["mean_classes_per_batch"],
        stats["empty_batch_share"],
    )
    logging.info(
        "Epoch %d batches: %.2f classes with >= 2 members (min %d), %.1f members/class, "
        "largest class %.2f of a batch, %.3f of rows are anchors, D_at/D_ai %.3f%s",
        epoch + 1, stats["mean_paired_classes_per_batch"],
        stats["min_paired_classes_per_batch"], stats["mean_members_per_class"],
        stats["largest_class_share"], stats["anchor_share"],
        stats.get("distance_ratio", math.nan),
        ", warm-up (random batches)" if stats.get("warmup") else "",
    )
