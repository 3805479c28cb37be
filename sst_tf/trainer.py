"""The training loop: plain config in, trained and evaluated model out.

`Trainer(config)` builds the data set, model, optimizers, sampler, checkpoint
and summary writers; `fit()` runs

  evaluate ("before") -> for each epoch: [refresh: embed train split ->
  sampler.refresh] -> sampler.plan -> tf.data -> distributed_step per batch ->
  plateau / early stop -> checkpoint -> [evaluate every eval_every] ->
  evaluate ("after")

and writes `metrics.json`, TensorBoard events and checkpoints under
`config.model_dir`. No flags here: `sst_tf.train` converts flags to a
`TrainConfig`.

Structure for scaling: the per-replica step (forward, loss scaled by
1/num_replicas [and the float16 loss scale], gradients summed over replicas,
one finiteness decision, apply to every optimizer or none) is
`sst_tf.step.TrainStep`, built inside `strategy.scope()` with its optimizers;
`distributed_step` is the cross-replica wrapper (`strategy.run` + reduce);
`_distribute` is the hook where a strategy's input distribution goes (one
neighbourhood per replica). This module is the loop around them.

Reliability (`sst_tf.run_state`, `sst_tf.outputs`): the checkpoint also holds the sampler
state and the progress inside an interrupted epoch, so a rerun resumes exactly;
SIGTERM/SIGINT write a checkpoint after the current step; a step with a
non-finite loss or gradient is skipped in-graph and counted (under float16 this
includes a gradient overflow at the current loss scale, which also halves the
scale); a resume with incompatible flags is refused before anything is built.

Learning-rate groups: two Adam optimizers, one for the backbone (lr) and one
for the head (lr * head_lr_multiplier). Two optimizers rather than gradient
scaling, because Adam is invariant to gradient scale (a 10x gradient would not
give a 10x step). Weight decay is coupled L2 (wd * w added to the gradient),
as PyTorch's `Adam(weight_decay=...)` of the original did; set
`decoupled_weight_decay` for AdamW instead.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from sst_tf import data as data_lib
from sst_tf import (
    distribute,
    evaluation,
    export,
    loss_registry,
    losses,
    outputs,
    pipeline,
    projector,
    run_state,
    sampling,
)
from sst_tf import model as model_lib
from sst_tf import step as step_lib
from sst_tf.config import LOSSES, TARGET_LOSSES, TrainConfig
from sst_tf.outputs import write_json_atomic
from sst_tf.run_state import RunFolder, interrupted_dir

__all__ = ["LOSSES", "TARGET_LOSSES", "ExportError", "TrainConfig", "Trainer",
           "write_json_atomic"]


# Below this relative spread (see `relative_spread`) the training split's
# embeddings count as collapsed to one point. Untrained small_cnn embeddings on
# digits sit at about 0.07, trained ones near 1.
COLLAPSE_SPREAD = 0.01


class CollapseError(RuntimeError):
    """The training split's embeddings collapsed to (nearly) one point."""


def relative_spread(embeddings: np.ndarray) -> float:
    """Mean distance of the rows to their centroid over their mean norm (0: one point)."""
    e = np.asarray(embeddings, np.float64)
    spread = np.linalg.norm(e - e.mean(axis=0), axis=1).mean()
    return float(spread / max(np.linalg.norm(e, axis=1).mean(), 1e-30))


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seeds Python, NumPy, TF and Keras; optionally makes TF ops deterministic."""
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def _jsonable(metrics: dict) -> dict:
    out = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out[str(key)] = _jsonable(value)
        elif isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            out[str(key)] = int(value)
        else:
            out[str(key)] = float(value)
    return out


class Trainer:
    """Trains an embedding model as `TrainConfig` says (see module docstring)."""

    def __init__(
        self,
        config: TrainConfig,
        dataset: data_lib.Dataset | None = None,
        strategy: tf.distribute.Strategy | None = None,
    ):
        """Builds everything; nothing is trained yet.

        Args:
          config: the run's configuration (validated here).
          dataset: a loaded data set (default: `load_dataset(config.dataset)`).
          strategy: distribution strategy (default: `tf.distribute.get_strategy()`).
        """
        config.validate()
        # Unset --normalize / --sampler / --margin take the loss's defaults;
        # config.json and metrics.json record the resolved values.
        config = config.resolved()
        self.config = config
        logging.info("Loss settings: %s", loss_registry.settings(config))
        seed_everything(config.seed, config.deterministic)
        self.strategy = strategy or distribute.make_strategy(config.strategy)
        self.is_chief = distribute.is_chief(self.strategy)
        self.num_replicas = self.strategy.num_replicas_in_sync
        self.dataset = dataset or data_lib.load_dataset(
            config.dataset, config.data_dir, **config.reader_options()
        )
        self.image_options = pipeline.ImageOptions(
            image_size=config.image_size,
            resize_size=config.resize_size,
            random_flip=config.random_flip,
        )
        train = self.dataset.train
        data_lib.check_splits(train.labels, self.dataset.test.labels, config.dataset)
        # Every worker saves (a collective under multi-worker); non-chief
        # workers into a temporary folder deleted after each save.
        self.folder = RunFolder(config.model_dir)
        self.chief_checkpoint_dir = self.folder.checkpoints
        self.checkpoint_dir = distribute.worker_dir(self.chief_checkpoint_dir, self.strategy)
        self.interrupt_dir = interrupted_dir(self.checkpoint_dir)
        self.config_path = self.folder.config
        self.changed_flags = self._check_resume_config()
        self.sampler = sampling.make_sampler(
            config.sampler,
            train.labels,
            config.batch_size,
            num_targets=config.num_targets,
            seed=config.seed,
            compute_targets=config.loss in TARGET_LOSSES,
            **({"samples_per_class": config.samples_per_class}
               if config.sampler == "class_balanced" else {}),
            **(dict(neighborhoods=config.neighborhoods, local_share=config.local_share,
                    min_classes=config.min_classes, warmup_epochs=config.warmup_epochs,
                    members_per_class=config.members_per_class, kmeans_method=config.kmeans)
               if config.sampler == "local" else {}),
        )
        # Embeddings of the training forward passes (--refresh=memory), [N, d].
        self._memory: np.ndarray | None = None
        with self.strategy.scope(), step_lib.DtypePolicy(
                step_lib.precision_policy(config.mixed_precision)):
            self.model = model_lib.build_model(**config.model_options())
            backbone_vars, head_vars = model_lib.variable_groups(self.model)
            # Losses with weights of their own (Proxy-Anchor's proxies): created
            # here, trained by their own optimizer, checkpointed with the model.
            self.loss_layer = None
            if config.loss == "proxy_anchor":
                self.loss_layer = losses.ProxyAnchor(
                    class_ids=np.unique(train.labels), embedding_dim=config.embedding_dim,
                    lr_multiplier=config.proxy_lr_multiplier, seed=config.seed,
                    dtype="float32",  # the loss stays float32 under mixed precision
                    **loss_registry.spec("proxy_anchor").params)
            self.step = step_lib.TrainStep(
                self.model, losses.make_loss(config.loss, config.margin, self.loss_layer,
                                             sst_options=config.sst_options()),
                backbone_vars, head_vars,
                lr=config.lr * config.loss_lr_multiplier,  # the loss's rate (loss_registry)
                head_lr_multiplier=config.head_lr_multiplier,
                weight_decay=config.weight_decay,
                decoupled_weight_decay=config.decoupled_weight_decay,
                num_replicas=self.num_replicas,
                mixed_precision=config.mixed_precision,
                jit_compile=config.jit_compile,
                loss_vars=(list(self.loss_layer.trainable_variables)
                           if self.loss_layer is not None else []),
                loss_lr_multiplier=config.proxy_lr_multiplier,
            )
            # Loop state, checkpointed with the model. `epoch` counts finished
            # epochs; a checkpoint written on SIGTERM/SIGINT in the middle of
            # epoch `epoch` also holds the steps done in it and their loss sum.
            # The sampler state is the input of its last refresh (embeddings of
            # the train split and that epoch): refresh() and plan() are
            # deterministic functions of (seed, epoch, embeddings).
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
                tf.zeros([len(train), config.embedding_dim], tf.float32), trainable=False)
        self.checkpoint = tf.train.Checkpoint(
            model=self.model,
            **self.step.checkpoint_items(),
            epoch=self.epoch,
            best_loss=self.best_loss,
            lr_wait=self.lr_wait,
            stale_epochs=self.stale_epochs,
            step_in_epoch=self.step_in_epoch,
            epoch_loss_sum=self.epoch_loss_sum,
            epoch_loss_count=self.epoch_loss_count,
            nonfinite_steps=self.nonfinite_steps,
            refresh_epoch=self.refresh_epoch,
            refresh_embeddings=self.refresh_embeddings,
            **({"loss_layer": self.loss_layer} if self.loss_layer is not None else {}),
        )
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, self.checkpoint_dir, max_to_keep=config.keep_checkpoints
        )
        self.interrupt_manager = self._make_interrupt_manager()
        self._signals: run_state.GracefulSignals | None = None
        self._consecutive_nonfinite = 0
        self.metrics_path = self.folder.metrics
        self._train_writer = None
        self._eval_writer = None
        self._step_fn = tf.function(self.distributed_step, reduce_retracing=True)
        self._memory_step_fn = tf.function(self.distributed_memory_step, reduce_retracing=True)
        self._embed_fn = tf.function(
            lambda images: self.model(images, training=False), reduce_retracing=True
        )

    # -- optimisation -------------------------------------------------------

    @property
    def loss_fn(self):
        """The step's loss function, fn(embeddings, labels, targets, mask) -> scalar."""
        return self.step.loss_fn

    @loss_fn.setter
    def loss_fn(self, fn) -> None:
        self.step.loss_fn = fn

    def train_step(self, images, labels, targets, mask):
        """Per-replica step (`sst_tf.step.TrainStep`): (loss or NaN if skipped, embeddings)."""
        return self.step(images, labels, targets, mask)

    def distributed_step(self, batch) -> tf.Tensor:
        """Cross-replica step: runs `train_step` on each replica, mean loss."""
        loss, _ = self.strategy.run(self.train_step, args=batch)
        return self.strategy.reduce(tf.distribute.ReduceOp.MEAN, loss, axis=None)

    def distributed_memory_step(self, batch):
        """`distributed_step` that also returns every replica's embeddings.

        Args:
          batch: (images, labels, targets, mask, indices) per replica.

        Returns:
          (mean loss, embeddings [R*B, d], training indices [R*B], -1 on
          padding rows), gathered from all replicas of all workers.
        """
        def step(images, labels, targets, mask, indices):
            loss, embeddings = self.train_step(images, labels, targets, mask)
            return loss, embeddings, tf.where(mask, indices, tf.constant(-1, indices.dtype))

        loss, emb, idx = self.strategy.run(step, args=batch)
        loss = self.strategy.reduce(tf.distribute.ReduceOp.MEAN, loss, axis=None)
        if self.num_replicas > 1:
            emb, idx = self.strategy.gather(emb, axis=0), self.strategy.gather(idx, axis=0)
        return loss, emb, idx

    def _distribute(self, dataset: tf.data.Dataset):
        """Whole batches per replica (identity on one device)."""
        return distribute.distribute_batches(self.strategy, dataset)

    @property
    def learning_rates(self) -> tuple[float, float]:
        """Current (backbone, head) learning rates."""
        return self.step.learning_rates

    def update_plateau(self, epoch_loss: float) -> bool:
        """Reduce-on-plateau and early stopping on the epoch's training loss.

        Halves (lr_factor) both learning rates after `lr_patience` epochs
        without improvement and stops after `early_stop_patience` such epochs.

        Returns:
          True when training should stop.
        """
        cfg = self.config
        if epoch_loss < float(self.best_loss.numpy()):
            self.best_loss.assign(epoch_loss)
            self.lr_wait.assign(0)
            self.stale_epochs.assign(0)
            return False
        self.lr_wait.assign_add(1)
        self.stale_epochs.assign_add(1)
        if int(self.lr_wait.numpy()) >= cfg.lr_patience:
            self.step.scale_learning_rates(cfg.lr_factor)
            self.lr_wait.assign(0)
            logging.info("Loss plateaued: learning rates now %s", self.learning_rates)
        return int(self.stale_epochs.numpy()) >= cfg.early_stop_patience

    # -- embeddings and evaluation -------------------------------------------

    def embed(self, split: data_lib.Split, distributed: bool = False) -> np.ndarray:
        """Embeds a split in inference mode without augmentation -> [N, d].

        Args:
          split: the split.
          distributed: spread the pass over all replicas (every worker must
            call it; all get the whole result). Otherwise this process alone
            embeds with the model's local copy.
        """
        ds = pipeline.eval_dataset(split, self.image_options, self.config.eval_batch_size)
        if distributed and self.num_replicas > 1:
            return distribute.distributed_embed(
                self.strategy, lambda images: self.model(images, training=False), ds,
                len(split), self.config.eval_batch_size)
        out = [self._embed_fn(images).numpy()
               for images, _ in pipeline.read_batches(ds, "embedding pass")]
        return np.concatenate(out, axis=0).astype(np.float32)

    def evaluate(self, split: data_lib.Split | None = None) -> dict:
        """Retrieval metrics of a split (default: test) with the current model."""
        if not self.is_chief:  # only the chief evaluates and writes metrics
            return {}
        split = split or self.dataset.test
        emb = self.embed(split)
        self.last_embeddings = emb
        return _jsonable(evaluation.evaluate(emb, split.labels, self.config.recall_ks,
                                             seed=self.config.seed))

    # -- summaries ----------------------------------------------------------

    def _writers(self):
        if self._train_writer is None and not self.is_chief:  # only the chief writes
            self._train_writer = self._eval_writer = tf.summary.create_noop_writer()
        if self._train_writer is None:
            self._train_writer = tf.summary.create_file_writer(
                self.folder.train_events)
            self._eval_writer = tf.summary.create_file_writer(
                self.folder.eval_events)
        return self._train_writer, self._eval_writer

    def _write_eval(self, metrics: dict, step: int) -> None:
        _, writer = self._writers()
        with writer.as_default(step=step):
            for key, value in metrics.items():
                if isinstance(value, float):
                    tf.summary.scalar(key, value)
        writer.flush()

    # -- resuming -------------------------------------------------------------

    def _run_record(self) -> dict:
        """What config.json holds: the flags plus the sizes of the data splits."""
        record = dataclasses.asdict(self.config)
        record["num_train_images"] = len(self.dataset.train)
        record["num_test_images"] = len(self.dataset.test)
        return record

    def _has_checkpoint(self) -> bool:
        return bool(tf.train.latest_checkpoint(self.checkpoint_dir)
                    or tf.train.latest_checkpoint(self.interrupt_dir))

    def _check_resume_config(self) -> list[str]:
        """Refuses to resume a run whose saved flags do not fit (`run_state`)."""
        if not (os.path.isfile(self.config_path) and self._has_checkpoint()):
            return []
        with open(self.config_path) as f:
            saved = json.load(f)
        return run_state.check_resume_config(saved, self._run_record(),
                                               self.config.allow_flag_changes)

    def _make_interrupt_manager(self) -> tf.train.CheckpointManager:
        return tf.train.CheckpointManager(self.checkpoint, self.interrupt_dir, max_to_keep=1,
                                          checkpoint_name="interrupted")

    @staticmethod
    def _progress_of(path: str) -> tuple[int, int]:
        reader = tf.train.load_checkpoint(path)

        def value(name):
            key = f"{name}/.ATTRIBUTES/VARIABLE_VALUE"
            return int(reader.get_tensor(key)) if reader.has_tensor(key) else 0

        return value("epoch"), value("step_in_epoch")

    def latest_checkpoint(self) -> str | None:
        """The most advanced checkpoint: the last epoch's, or a newer interrupted one.

        Non-chief workers (whose own saves are temporary) read the chief's
        folder, so every worker resumes from the same checkpoint.
        """
        if self.is_chief:
            paths = [self.manager.latest_checkpoint, self.interrupt_manager.latest_checkpoint]
        else:
            paths = [tf.train.latest_checkpoint(self.chief_checkpoint_dir),
                     tf.train.latest_checkpoint(os.path.join(self.chief_checkpoint_dir,
                                                             "interrupted"))]
        paths = [p for p in paths if p]
        if not paths:
            return None
        return max(paths, key=self._progress_of)  # ties: the epoch checkpoint (first)

    def _save(self, manager: tf.train.CheckpointManager, number: int | None = None) -> str:
        with outputs.disk_full_guard(manager.directory):
            path = manager.save(checkpoint_number=number)
        distribute.remove_worker_dir(self.checkpoint_dir, self.strategy)  # non-chief only
        return path

    def _save_epoch_checkpoint(self, number: int) -> None:
        self.step_in_epoch.assign(0)
        self.epoch_loss_sum.assign(0.0)
        self.epoch_loss_count.assign(0)
        self._save(self.manager, number)
        if os.path.isdir(self.interrupt_dir):  # superseded by this one
            shutil.rmtree(self.interrupt_dir, ignore_errors=True)
            self.interrupt_manager = self._make_interrupt_manager()

    def _save_progress(self, epoch: int, step: int, loss_sum: float, loss_count: int) -> str:
        """Writes a checkpoint in the middle of epoch `epoch` after `step` steps."""
        self.epoch.assign(epoch)
        self.step_in_epoch.assign(step)
        self.epoch_loss_sum.assign(loss_sum)
        self.epoch_loss_count.assign(loss_count)
        path = self._save(self.interrupt_manager)
        logging.warning("Wrote %s (epoch %d, %d steps done in it).", path, epoch + 1, step)
        return path

    def _check_signal(self, epoch: int, step: int = 0, loss_sum: float = 0.0,
                      loss_count: int = 0) -> None:
        if self._signals is not None and self._signals.received:
            path = self.manager.latest_checkpoint
            if not (step == 0 and path and self._progress_of(path) == (epoch, 0)):
                path = self._save_progress(epoch, step, loss_sum, loss_count)
            raise run_state.Interrupted(self._signals.received, path)

    def _restore_sampler(self, epoch: int) -> bool:
        """Re-creates the sampler state of a resumed run; False if none was saved."""
        if not self.sampler.needs_embeddings:
            self.sampler.refresh(None, epoch)
            return True
        refreshed = int(self.refresh_epoch.numpy())
        if refreshed < 0:
            logging.warning("The checkpoint holds no sampler state: re-embedding the train "
                            "split now (the resumed run may differ from an uninterrupted one).")
            return False
        self.sampler.refresh(self.refresh_embeddings.numpy(), refreshed)
        logging.info("Sampler state restored (refreshed at epoch %d).", refreshed + 1)
        return True

    # -- the loop -----------------------------------------------------------

    def _refresh(self, epoch: int) -> dict:
        """Embeds the training split (if the sampler needs it) and refreshes the sampler."""
        start = time.perf_counter()
        embeddings = None
        if self.sampler.needs_embeddings:
            if self.config.refresh == "memory" and self._memory is not None:
                embeddings = self._memory.copy()  # last training forward passes: no extra pass
            else:
                embeddings = self.embed(self.dataset.train, distributed=True)
                if self.config.refresh == "memory":
                    self._memory = embeddings.copy()
        embed_seconds = time.perf_counter() - start
        if embeddings is not None and epoch > 0:
            self._check_collapse(embeddings, epoch)
        self.sampler.refresh(embeddings, epoch)
        if embeddings is not None:  # the sampler state, saved with the next checkpoint
            self.refresh_embeddings.assign(embeddings)
            self.refresh_epoch.assign(epoch)
        return {"sampler/embed_seconds": embed_seconds,
                "sampler/cluster_seconds": time.perf_counter() - start - embed_seconds}

    def _check_collapse(self, embeddings: np.ndarray, epoch: int) -> None:
        """Raises `CollapseError` when the refreshed embeddings are one point."""
        spread = relative_spread(embeddings)
        if spread >= COLLAPSE_SPREAD:
            return
        hint = (" SST on L2-normalised embeddings needs --sst_scale well above 1 (its margin "
                "variable is at most 4 there)." if self.config.loss == "sst"
                and self.config.normalize else "")
        raise CollapseError(
            f"the embeddings of the training split collapsed after epoch {epoch} to one point "
            f"(spread {spread:.2g} of their norm, below {COLLAPSE_SPREAD}): the loss has no "
            f"gradient left and the model is worse than untrained.{hint} Try a lower --lr "
            f"(now {self.config.lr:g}). Checkpoints so far: {self.checkpoint_dir}.")

    def train_epoch(self, epoch: int, refresh: bool, start_step: int = 0,
                    loss_sum: float = 0.0, loss_count: int = 0) -> dict:
        """Runs one epoch; returns its statistics (loss, timings, sampler stats).

        Args:
          epoch: 0-based epoch.
          refresh: refresh the sampler first (else its current state is used).
          start_step: steps of this epoch already done (a resumed epoch); the
            plan is the same, those batches are skipped.
          loss_sum: sum of the finite losses of those steps.
          loss_count: number of those finite losses.

        Raises:
          run_state.Interrupted: on SIGTERM/SIGINT, after a checkpoint.
          step_lib.NonFiniteError: after `max_consecutive_nonfinite` skipped
            steps in a row.
        """
        timings = self._refresh(epoch) if refresh else {}
        plan = self.sampler.plan(epoch)
        stats = {f"sampler/{k}": v for k, v in plan.stats.items()}
        stats.update(timings)
        stats["sampler/refresh_seconds"] = sum(timings.values()) + plan.stats["plan_seconds"]
        logging.info(
            "Epoch %d %s: %.2fs, %d batches, coverage %.3f, fill %.3f, "
            "%.2f classes/batch, %.3f of batches without a triplet",
            epoch + 1, "refresh" if refresh else "plan", stats["sampler/refresh_seconds"],
            plan.num_batches, plan.stats["coverage"], plan.stats["mean_fill"],
            plan.stats["mean_classes_per_batch"], plan.stats["empty_batch_share"],
        )
        logging.info(
            "Epoch %d batches: %.2f classes with >= 2 members (min %d), %.1f members/class, "
            "largest class %.2f of a batch, %.3f of rows are anchors, D_at/D_ai %.3f, "
            "SST at refresh %.3f (log 2 = 0.693)%s",
            epoch + 1, plan.stats["mean_paired_classes_per_batch"],
            plan.stats["min_paired_classes_per_batch"], plan.stats["mean_members_per_class"],
            plan.stats["largest_class_share"],
            plan.stats["anchor_share"], plan.stats.get("distance_ratio", math.nan),
            plan.stats.get("sst_at_refresh", math.nan),
            ", warm-up (random batches)" if plan.stats.get("warmup") else "",
        )
        # Every replica of every worker gets the same number of whole batches.
        plan = sampling.pad_plan(plan, self.num_replicas)
        if plan.num_batches == 0:
            logging.warning("Epoch %d: the sampler produced no batch with a triplet.", epoch + 1)
            stats.update(loss=math.nan, images_per_second=0.0, train_seconds=0.0,
                         nonfinite_steps=0)
            return stats
        if start_step:
            logging.info("Epoch %d: resuming after step %d of %d.", epoch + 1, start_step,
                         plan.num_batches // self.num_replicas)
        start_batch = start_step * self.num_replicas  # one batch per replica and step
        ds = pipeline.train_dataset(
            self.dataset.train, plan, self.image_options, seed=self.config.seed, epoch=epoch,
            start_batch=start_batch)
        use_memory = self._memory is not None
        if use_memory:  # carry each row's training index to fill the memory
            idx = tf.data.Dataset.from_tensor_slices(plan.indices[start_batch:])
            ds = tf.data.Dataset.zip((ds, idx)).map(lambda batch, i: (*batch, i))
        ds = self._distribute(ds)
        num_steps = plan.num_batches // self.num_replicas
        # A live bar on terminals; on logs (not a TTY) the epoch's log line suffices.
        show = self.config.progress and sys.stdout.isatty()
        bar = keras.utils.Progbar(num_steps, stateful_metrics=["loss"],
                                  verbose=1 if show else 0, unit_name="batch")
        writer, _ = self._writers()
        skipped = 0
        start = time.perf_counter()
        batches = pipeline.read_batches(ds, f"epoch {epoch + 1}")
        i = start_step
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                break
            except pipeline.InputError as e:  # keep the steps done so far
                path = self._save_progress(epoch, i, loss_sum, loss_count)
                raise pipeline.InputError(
                    f"{e} Progress is saved in {path}: restore the file and rerun the same "
                    "command to resume, or start a new --model_dir (the image check then "
                    "skips it).") from e
            if use_memory:
                loss, emb, idx = self._memory_step_fn(batch)
                idx = idx.numpy()
                keep = idx >= 0
                self._memory[idx[keep]] = emb.numpy()[keep]
                loss = float(loss)
            else:
                loss = float(self._step_fn(batch))
            if math.isfinite(loss):
                loss_sum += loss
                loss_count += 1
                self._consecutive_nonfinite = 0
                bar.update(i + 1, values=[("loss", loss)])
                with writer.as_default(step=int(self.step.head_optimizer.iterations.numpy())):
                    tf.summary.scalar("loss_per_step", loss)
            else:
                self._on_nonfinite(epoch, i)
                skipped += 1
            i += 1
            self._check_signal(epoch, i, loss_sum, loss_count)
        seconds = time.perf_counter() - start
        stats.update(
            loss=loss_sum / loss_count if loss_count else math.nan,
            train_seconds=seconds,
            images_per_second=float(plan.mask[start_batch:].sum() / max(seconds, 1e-9)),
            nonfinite_steps=skipped,
        )
        if self.config.loss == "sst":  # softplus(0) = log 2: triplets not told apart
            stats["loss_over_log2"] = stats["loss"] / math.log(2.0)
        return stats

    def _on_nonfinite(self, epoch: int, step: int) -> None:
        """Counts a skipped step; raises after `max_consecutive_nonfinite` in a row."""
        self.nonfinite_steps.assign_add(1)
        self._consecutive_nonfinite += 1
        n, limit = self._consecutive_nonfinite, self.config.max_consecutive_nonfinite
        loss_scale = self.step.loss_scale
        scale = ("" if loss_scale is None else
                 f", float16 loss scale lowered to {float(loss_scale.scale.numpy()):g}")
        logging.warning("Epoch %d step %d: non-finite loss or gradient, step skipped "
                        "(%d in a row, %d in this run%s).", epoch + 1, step + 1, n,
                        int(self.nonfinite_steps.numpy()), scale)
        if n >= limit:
            lr, head_lr = self.learning_rates
            raise step_lib.NonFiniteError(
                f"{n} consecutive steps had a non-finite loss or gradient (epoch {epoch + 1}, "
                f"step {step + 1}; --max_consecutive_nonfinite={limit}): training diverged. "
                f"The last good checkpoint is kept: {self.latest_checkpoint() or 'none yet'}. "
                f"Try a lower learning rate (now --lr={lr:.3g}, head {head_lr:.3g}): rerun "
                "with a smaller --lr and --allow_flag_changes to continue from that "
                "checkpoint, or in a new --model_dir."
            )

    def _write_json(self, path: str, obj) -> None:
        """Atomic JSON write on the chief; other workers write nothing."""
        if self.is_chief:
            write_json_atomic(path, obj)

    def _load_metrics(self) -> dict:
        if os.path.exists(self.metrics_path):
            with open(self.metrics_path) as f:
                return json.load(f)
        return {}

    def fit(self) -> dict:
        """Trains (resuming from the latest checkpoint in model_dir, if any).

        SIGTERM / SIGINT during training finish the current step, write a
        checkpoint and raise `run_state.Interrupted`; rerunning resumes at that
        step with the same result as an uninterrupted run (deterministic mode).

        Returns:
          The metrics dict also written to `model_dir/metrics.json`: "before"
          and "after" (test split), "epochs" (every eval_every), "train"
          (epochs run, final loss, stop reason, skipped non-finite steps),
          "settings" (the loss's resolved normalisation/geometry, sampler,
          margin and parameters).

        Raises:
          ExportError: the export after training failed (its `metrics` hold
            the metrics; metrics.json and the checkpoints are written).
        """
        with run_state.GracefulSignals() as self._signals:
            try:
                return self._fit()
            finally:
                self._signals = None

    def _fit(self) -> dict:
        cfg = self.config
        os.makedirs(cfg.model_dir, exist_ok=True)
        self._write_json(self.config_path, self._run_record())
        metrics = {}
        latest = self.latest_checkpoint()
        if latest:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
            metrics = self._load_metrics()
            metrics.pop("after", None)
            logging.info("Resuming from %s (epoch %d, step %d).", latest,
                         int(self.epoch.numpy()) + 1, int(self.step_in_epoch.numpy()))
            lr = cfg.lr * cfg.loss_lr_multiplier
            if {"lr", "head_lr_multiplier", "loss_lr_multiplier"} & set(self.changed_flags):
                self.step.backbone_optimizer.learning_rate = lr
                self.step.head_optimizer.learning_rate = lr * cfg.head_lr_multiplier
            if self.step.loss_vars and ({"lr", "proxy_lr_multiplier", "loss_lr_multiplier"}
                                   & set(self.changed_flags)):
                self.step.loss_optimizer.learning_rate = lr * cfg.proxy_lr_multiplier
                logging.warning("Learning rates set to the new flags: %s", self.learning_rates)
        metrics["settings"] = loss_registry.settings(cfg)  # the geometry of every evaluation
        if "before" not in metrics:
            logging.info("Evaluating the untrained model on the test split...")
            metrics["before"] = self.evaluate()
            self._write_eval(metrics["before"], 0)
            self._write_json(self.metrics_path, metrics)
            logging.info("before: %s", _fmt(metrics["before"]))
        metrics.setdefault("epochs", {})
        start_epoch = int(self.epoch.numpy())
        start_step = int(self.step_in_epoch.numpy())
        writer, _ = self._writers()
        stop_reason = "epochs"
        if int(self.stale_epochs.numpy()) >= cfg.early_stop_patience:
            stop_reason = "early_stopping"  # a resumed run that had already stopped
            start_epoch = cfg.epochs
        last_loss = math.nan
        for epoch in range(start_epoch, cfg.epochs):
            step0 = start_step if epoch == start_epoch else 0
            self._check_signal(epoch, step0, float(self.epoch_loss_sum.numpy()),
                               int(self.epoch_loss_count.numpy()))
            refresh = step0 == 0 and epoch % cfg.refresh_every == 0
            if epoch == start_epoch and not refresh:
                refresh = not self._restore_sampler(epoch)
            if step0:
                stats = self.train_epoch(epoch, refresh, step0,
                                         float(self.epoch_loss_sum.numpy()),
                                         int(self.epoch_loss_count.numpy()))
            else:
                stats = self.train_epoch(epoch, refresh)
            last_loss = stats["loss"]
            lr, head_lr = self.learning_rates
            with writer.as_default(step=epoch + 1):
                for key, value in stats.items():
                    tf.summary.scalar(key, value)
                tf.summary.scalar("learning_rate", lr)
                tf.summary.scalar("head_learning_rate", head_lr)
            writer.flush()
            logging.info("Epoch %d/%d: loss %.4f, %.0f images/s, lr %.3g (head %.3g)",
                         epoch + 1, cfg.epochs, stats["loss"], stats["images_per_second"],
                         lr, head_lr)
            stop = False
            if not math.isnan(stats["loss"]):
                stop = self.update_plateau(stats["loss"])
            self.epoch.assign(epoch + 1)
            if cfg.eval_every and (epoch + 1) % cfg.eval_every == 0 and epoch + 1 < cfg.epochs:
                result = self.evaluate()
                metrics["epochs"][str(epoch + 1)] = result
                self._write_eval(result, epoch + 1)
                logging.info("Epoch %d eval: %s", epoch + 1, _fmt(result))
            # metrics.json first: a crash in between re-runs this epoch, which
            # rewrites its entry; the other order could lose the entry.
            self._write_json(self.metrics_path, metrics)
            self._save_epoch_checkpoint(epoch + 1)
            if stop:
                stop_reason = "early_stopping"
                logging.info("No improvement for %d epochs: stopping early.",
                             cfg.early_stop_patience)
                break
        self._check_signal(int(self.epoch.numpy()))
        if not (latest or self.manager.latest_checkpoint):
            self._save_epoch_checkpoint(int(self.epoch.numpy()))
        metrics["after"] = self.evaluate()
        self._write_eval(metrics["after"], int(self.epoch.numpy()))
        metrics["train"] = {
            "epochs_run": int(self.epoch.numpy()),
            "final_loss": None if math.isnan(last_loss) else float(last_loss),
            "early_stopped": stop_reason == "early_stopping",
            "nonfinite_steps": int(self.nonfinite_steps.numpy()),
        }
        self._write_json(self.metrics_path, metrics)
        logging.info("after: %s", _fmt(metrics["after"]))
        if cfg.export and getattr(self.strategy.extended, "should_checkpoint", True):
            try:
                self.export(self.last_embeddings)  # chief only
            except ExportError as e:
                e.metrics = metrics  # written to metrics.json above
                raise
        return metrics

    def export(self, test_embeddings: np.ndarray) -> None:
        """Writes MODEL_DIR/export (SavedModel) and MODEL_DIR/projector (test split).

        The SavedModel computes in float32 whatever --mixed_precision was
        (`export.float32_model`).

        Raises:
          ExportError: either part failed (one line: what, and how to retry).
          outputs.DiskFullError: the disk is full (naming the folder).
        """
        cfg = self.config
        export_dir = self.folder.export
        kept = (f"metrics.json and the checkpoints in {self.chief_checkpoint_dir} are kept; "
                f"retry the export with: python -m sst_tf.export --model_dir={cfg.model_dir}")
        try:
            with outputs.disk_full_guard(export_dir):
                export.export_saved_model(
                    self.model, export_dir, export.spec_for_config(cfg),
                    metadata=export.run_metadata(cfg, self.manager.latest_checkpoint),
                )
        except outputs.DiskFullError:
            raise
        except Exception as e:
            raise ExportError(
                f"training finished but the SavedModel export to {export_dir} failed "
                f"({_first_line(e)}); {kept}") from e
        proj_dir = self.folder.projector
        try:
            with outputs.disk_full_guard(proj_dir):
                projector.write_split_projector(proj_dir, self.dataset.test, test_embeddings,
                                                seed=cfg.seed)
        except outputs.DiskFullError:
            raise
        except Exception as e:
            raise ExportError(
                f"training finished but writing the projector files to {proj_dir} failed "
                f"({_first_line(e)}); metrics.json, the checkpoints and {export_dir} are "
                "kept") from e


class ExportError(RuntimeError):
    """The end-of-training export failed; metrics.json and the checkpoints are written.

    Attributes:
      metrics: the run's metrics (as in metrics.json), set by `Trainer.fit`.
    """

    metrics: dict | None = None


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def _fmt(metrics: dict) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
