"""A training run's checkpoints: what the loop saves, where, and how it resumes.

* `LoopState`: the loop's own variables (finished epochs, the progress inside
  an interrupted epoch, the reduce-on-plateau / early-stopping counters, the
  skipped non-finite steps, the sampler's last refresh), checkpointed with the
  model.
* `RunCheckpoints`: the `tf.train.Checkpoint` of a run; epoch checkpoints
  (`checkpoints/ckpt-<epoch>`) and the one written on a signal or an input
  error inside an epoch (`checkpoints/interrupted/`); the most advanced of them
  to resume from; a received SIGTERM / SIGINT turned into a checkpoint and
  `run_state.Interrupted`.
* `check_resume`: refuses, before anything is built, to resume a run whose
  saved flags do not fit (`run_state.check_resume_config`);
  `resume_learning_rates` puts changed learning-rate flags
  (--allow_flag_changes) into the restored optimizers.

Under a multi-worker strategy every worker saves (a collective operation), the
non-chief workers into a temporary folder deleted after each save
(`distribute.worker_dir`), and every worker resumes from the chief's folder.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
from collections.abc import Callable, Iterator

import numpy as np
import tensorflow as tf
from absl import logging

from sst_tf import distribute, optim, outputs, sampling
from sst_tf.config import TrainConfig
from sst_tf.run_state import (
    GracefulSignals,
    Interrupted,
    RunFolder,
    check_resume_config,
    interrupted_dir,
)
from sst_tf.step import NonFiniteError, TrainStep


class LoopState:
    """The training loop's variables, checkpointed with the model.

    `epoch` counts finished epochs; a checkpoint written in the middle of epoch
    `epoch` also holds the steps done in it (`step_in_epoch`) and the sum and
    count of their finite losses. The sampler state is the input of its last
    refresh (the train split's embeddings and that epoch): refresh() and plan()
    are deterministic functions of (seed, epoch, embeddings). Create it inside
    `strategy.scope()`.
    """

    def __init__(self, num_train: int, embedding_dim: int,
                 training_embeddings: bool = False):
        """Creates the variables at their start values.

        Args:
          num_train: images in the training split.
          embedding_dim: size of an embedding.
          training_embeddings: also keep the training forward passes' embeddings
            of every image (`--refresh=memory`: the next refresh's input).
        """
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.best_loss = tf.Variable(math.inf, dtype=tf.float64, trainable=False)
        self.lr_wait = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.stale_epochs = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.step_in_epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.epoch_loss_sum = tf.Variable(0.0, dtype=tf.float64, trainable=False)
        self.epoch_loss_count = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.nonfinite_steps = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.refresh_epoch = tf.Variable(-1, dtype=tf.int64, trainable=False)
        self.refresh_embeddings = tf.Variable(
            tf.zeros([num_train, embedding_dim], tf.float32), trainable=False)
        self.training_embeddings = None
        if training_embeddings:
            self.training_embeddings = tf.Variable(
                tf.zeros([num_train, embedding_dim], tf.float32), trainable=False)

    def checkpoint_items(self) -> dict:
        """The variables by their names in a `tf.train.Checkpoint`."""
        return {
            "epoch": self.epoch,
            "best_loss": self.best_loss,
            "lr_wait": self.lr_wait,
            "stale_epochs": self.stale_epochs,
            "step_in_epoch": self.step_in_epoch,
            "epoch_loss_sum": self.epoch_loss_sum,
            "epoch_loss_count": self.epoch_loss_count,
            "nonfinite_steps": self.nonfinite_steps,
            "refresh_epoch": self.refresh_epoch,
            "refresh_embeddings": self.refresh_embeddings,
            # Only in --refresh=memory runs, so other runs' checkpoints stay as they were.
            **({"training_embeddings": self.training_embeddings}
               if self.training_embeddings is not None else {}),
        }

    def epoch_loss(self) -> tuple[float, int]:
        """(sum, count) of the finite losses of the steps done in the current epoch."""
        return float(self.epoch_loss_sum.numpy()), int(self.epoch_loss_count.numpy())

    def record_refresh(self, embeddings: np.ndarray, epoch: int) -> None:
        """Keeps the input of a sampler refresh for the next checkpoint."""
        self.refresh_embeddings.assign(embeddings)
        self.refresh_epoch.assign(epoch)

    def restore_sampler(
        self,
        sampler: sampling.LocalSampler | sampling.RandomSampler | sampling.ClassBalancedSampler,
        epoch: int,
    ) -> bool:
        """Re-creates the sampler state of a resumed run; False if none was saved."""
        if not sampler.needs_embeddings:
            sampler.refresh(None, epoch)
            return True
        refreshed = int(self.refresh_epoch.numpy())
        if refreshed < 0:
            logging.warning("The checkpoint holds no sampler state: re-embedding the train "
                            "split now (the resumed run may differ from an uninterrupted one).")
            return False
        sampler.refresh(self.refresh_embeddings.numpy(), refreshed)
        logging.info("Sampler state restored (refreshed at epoch %d).", refreshed + 1)
        return True


def progress_of(path: str) -> tuple[int, int]:
    """(epoch, steps done in it) of a checkpoint, read from its file."""
    reader = tf.train.load_checkpoint(path)

    def value(name):
        key = f"{name}/.ATTRIBUTES/VARIABLE_VALUE"
        return int(reader.get_tensor(key)) if reader.has_tensor(key) else 0

    return value("epoch"), value("step_in_epoch")


def check_resume(folder: RunFolder, strategy: tf.distribute.Strategy, record: dict,
                 allow_changes: bool) -> list[str]:
    """Refuses to resume a run whose saved flags do not fit (`run_state.check_resume_config`).

    Args:
      folder: the run's folder.
      strategy: the distribution strategy (a worker checks its own folder).
      record: the resuming command's `run_state.run_record`.
      allow_changes: --allow_flag_changes.

    Returns:
      The changed keys that were accepted; [] when there is nothing to resume.

    Raises:
      run_state.IncompatibleRunError: listing every refused difference.
    """
    directory = distribute.worker_dir(folder.checkpoints, strategy)
    if not (os.path.isfile(folder.config) and (
            tf.train.latest_checkpoint(directory)
            or tf.train.latest_checkpoint(interrupted_dir(directory)))):
        return []
    saved = outputs.read_json_object(folder.config, f"--model_dir={folder.root}")
    return check_resume_config(saved, record, allow_changes)


def resume_learning_rates(step: TrainStep, config: TrainConfig, changed_flags: list[str]) -> None:
    """Sets the restored optimizers to the learning rates of changed flags.

    The checkpoint holds the rates the run had; a run resumed with another
    --lr, --head_lr_multiplier, --loss_lr_multiplier or --proxy_lr_multiplier
    trains at the new ones.

    Args:
      step: the restored training step.
      config: the resuming run's configuration.
      changed_flags: the keys that differ from the saved run (`check_resume`).
    """
    lr = optim.loss_learning_rate(config.lr, config.loss, config.loss_lr_multiplier)
    changed = set(changed_flags)
    if {"lr", "head_lr_multiplier", "loss_lr_multiplier"} & changed:
        step.backbone_optimizer.learning_rate = lr
        step.head_optimizer.learning_rate = lr * config.head_lr_multiplier
    if step.loss_vars and {"lr", "proxy_lr_multiplier", "loss_lr_multiplier"} & changed:
        step.loss_optimizer.learning_rate = lr * config.proxy_lr_multiplier
        logging.warning("Learning rates set to the new flags: %s", step.learning_rates)


class RunCheckpoints:
    """The checkpoints of one run: saving, finding the latest, signals.

    Attributes:
      checkpoint: the `tf.train.Checkpoint` of every object given.
      manager: the epoch checkpoints, `checkpoints/ckpt-<epoch>`.
      interrupt_manager: the checkpoint written inside an epoch,
        `checkpoints/interrupted/interrupted-N` (at most one).
      directory: where this worker saves (the chief: `checkpoints/`).
      interrupt_dir: `interrupted/` inside `directory`.
      before_save: called before every save (e.g. to copy state kept outside
        the variables into them), or None.
    """

    def __init__(self, objects: dict, state: LoopState, folder: RunFolder,
                 strategy: tf.distribute.Strategy, max_to_keep: int):
        """Creates the checkpoint and its managers; nothing is read or written.

        Args:
          objects: what the checkpoint holds, by name (the names are the
            checkpoint's keys: keep them stable); must include the items of
            `state.checkpoint_items()`.
          state: the loop state (the progress saved inside an epoch).
          folder: the run's folder.
          strategy: the distribution strategy.
          max_to_keep: epoch checkpoints kept (--keep_checkpoints).
        """
        self.state = state
        self.strategy = strategy
        self.before_save: Callable[[], None] | None = None
        self.is_chief = distribute.is_chief(strategy)
        self.chief_dir = folder.checkpoints
        self.directory = distribute.worker_dir(self.chief_dir, strategy)
        self.interrupt_dir = interrupted_dir(self.directory)
        self.checkpoint = tf.train.Checkpoint(**objects)
        # The weights that must be finite in every checkpoint (the model's, the loss's).
        self._weights = [v for name in ("model", "loss_layer") if name in objects
                         for v in objects[name].variables]
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.directory,
                                                  max_to_keep=max_to_keep)
        self.interrupt_manager = self._make_interrupt_manager()
        self.signals: GracefulSignals | None = None

    def _make_interrupt_manager(self) -> tf.train.CheckpointManager:
        return tf.train.CheckpointManager(self.checkpoint, self.interrupt_dir, max_to_keep=1,
                                          checkpoint_name="interrupted")

    def latest_checkpoint(self) -> str | None:
        """The most advanced checkpoint: the last epoch's, or a newer interrupted one.

        Non-chief workers (whose own saves are temporary) read the chief's
        folder, so every worker resumes from the same checkpoint.
        """
        if self.is_chief:
            paths = [self.manager.latest_checkpoint, self.interrupt_manager.latest_checkpoint]
        else:
            paths = [tf.train.latest_checkpoint(self.chief_dir),
                     tf.train.latest_checkpoint(interrupted_dir(self.chief_dir))]
        paths = [p for p in paths if p]
        if not paths:
            return None
        return max(paths, key=progress_of)  # ties: the epoch checkpoint (first)

    def restore(self, path: str) -> None:
        """Restores every object from `path`; all of them must be in it."""
        self.checkpoint.restore(path).assert_existing_objects_matched()

    def _save(self, manager: tf.train.CheckpointManager, number: int | None = None) -> str:
        if self.before_save is not None:
            self.before_save()
        bad = [v.name for v in self._weights if tf.as_dtype(v.dtype).is_floating
               and not bool(tf.reduce_all(tf.math.is_finite(v)))]
        if bad:  # a diverged run stays resumable from its last good checkpoint
            raise NonFiniteError(
                f"the model's weights are no longer finite ({len(bad)} variables, e.g. "
                f"{bad[0]}): training diverged and nothing was saved. The last good "
                f"checkpoint is kept: {self.latest_checkpoint() or 'none yet'}. Rerun with a "
                "smaller --lr and --allow_flag_changes to continue from it, or in a new "
                "--model_dir.")
        with outputs.disk_full_guard(manager.directory):
            path = manager.save(checkpoint_number=number)
        distribute.remove_worker_dir(self.directory, self.strategy)  # non-chief only
        return path

    def save_epoch(self, number: int) -> None:
        """Writes epoch checkpoint `number` (no progress inside an epoch).

        It supersedes an interrupted checkpoint, which is deleted.
        """
        self.state.step_in_epoch.assign(0)
        self.state.epoch_loss_sum.assign(0.0)
        self.state.epoch_loss_count.assign(0)
        self._save(self.manager, number)
        if os.path.isdir(self.interrupt_dir):  # superseded by this one
            shutil.rmtree(self.interrupt_dir, ignore_errors=True)
            self.interrupt_manager = self._make_interrupt_manager()

    def save_progress(self, epoch: int, step: int, loss_sum: float, loss_count: int) -> str:
        """Writes a checkpoint in the middle of epoch `epoch` after `step` steps.

        Args:
          epoch: 0-based epoch.
          step: steps done in it.
          loss_sum: sum of their finite losses.
          loss_count: number of those finite losses.

        Returns:
          The checkpoint's path.
        """
        self.state.epoch.assign(epoch)
        self.state.step_in_epoch.assign(step)
        self.state.epoch_loss_sum.assign(loss_sum)
        self.state.epoch_loss_count.assign(loss_count)
        path = self._save(self.interrupt_manager)
        logging.warning("Wrote %s (epoch %d, %d steps done in it).", path, epoch + 1, step)
        return path

    @contextlib.contextmanager
    def graceful_signals(self) -> Iterator[None]:
        """Inside: SIGTERM / SIGINT are held until `check_signal` (`run_state.GracefulSignals`)."""
        with GracefulSignals() as self.signals:
            try:
                yield
            finally:
                self.signals = None

    def check_signal(self, epoch: int, step: int = 0, loss_sum: float = 0.0,
                     loss_count: int = 0) -> None:
        """After a received signal: writes the progress and raises `Interrupted`.

        Nothing is written when the latest epoch checkpoint already holds this
        point (the start of epoch `epoch`).

        Args:
          epoch: 0-based epoch.
          step: steps done in it.
          loss_sum: sum of their finite losses.
          loss_count: number of those finite losses.

        Raises:
          run_state.Interrupted: a signal was received (naming the checkpoint).
        """
        if self.signals is not None and self.signals.received:
            path = self.manager.latest_checkpoint
            if not (step == 0 and path and progress_of(path) == (epoch, 0)):
                path = self.save_progress(epoch, step, loss_sum, loss_count)
            raise Interrupted(self.signals.received, path)
