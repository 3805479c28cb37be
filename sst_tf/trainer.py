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

Structure for the scale issue: `train_step` is the per-replica step (forward,
loss scaled by 1/num_replicas, gradients, apply); `distributed_step` is the
cross-replica wrapper (`strategy.run` + reduce). The optimizers are built
inside `strategy.scope()`. `_distribute` is the hook where a strategy's input
distribution goes (one neighbourhood per replica).

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
import sys
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from sst_tf import data as data_lib
from sst_tf import evaluation, losses, pipeline, sampling
from sst_tf import model as model_lib
from sst_tf.config import LOSSES, TARGET_LOSSES, TrainConfig

__all__ = ["LOSSES", "TARGET_LOSSES", "TrainConfig", "Trainer"]


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seeds Python, NumPy, TF and Keras; optionally makes TF ops deterministic."""
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def make_loss(name: str, margin: float | None = None):
    """Returns fn(embeddings, labels, targets, mask) -> scalar for a loss name."""
    if name == "sst":
        return lambda e, y, t, m: losses.sst_loss(e, y, t, sample_mask=m)
    if name == "triplet":
        margin = 0.2 if margin is None else margin
        return lambda e, y, t, m: losses.triplet_loss(e, y, t, margin=margin, sample_mask=m)
    if name == "contrastive":
        margin = 0.5 if margin is None else margin
        return lambda e, y, t, m: losses.contrastive_loss(e, y, margin=margin, sample_mask=m)
    raise ValueError(f"loss must be one of {LOSSES}, got {name!r}.")


def write_json_atomic(path: str, obj) -> None:
    """Writes JSON to `path` through a temporary file and a rename."""
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
        self.config = config
        seed_everything(config.seed, config.deterministic)
        self.strategy = strategy or tf.distribute.get_strategy()
        self.dataset = dataset or data_lib.load_dataset(
            config.dataset, config.data_dir, **config.reader_options()
        )
        self.image_options = pipeline.ImageOptions(
            image_size=config.image_size,
            resize_size=config.resize_size,
            random_flip=config.random_flip,
        )
        self.loss_fn = make_loss(config.loss, config.margin)
        train = self.dataset.train
        self.sampler = sampling.make_sampler(
            config.sampler,
            train.labels,
            config.batch_size,
            num_targets=config.num_targets,
            seed=config.seed,
            compute_targets=config.loss in TARGET_LOSSES,
        )
        wd = 0.0 if config.decoupled_weight_decay else config.weight_decay
        self._l2 = wd / self.strategy.num_replicas_in_sync
        with self.strategy.scope():
            self.model = model_lib.build_model(
                backbone=config.backbone,
                weights="imagenet" if config.pretrained else None,
                embedding_dim=config.embedding_dim,
                normalize=config.normalize,
                image_size=config.image_size,
            )
            self.backbone_vars, self.head_vars = model_lib.variable_groups(self.model)
            self.backbone_optimizer = self._make_optimizer(config.lr)
            self.head_optimizer = self._make_optimizer(config.lr * config.head_lr_multiplier)
            self.backbone_optimizer.build(self.backbone_vars)
            self.head_optimizer.build(self.head_vars)
            # Loop state, checkpointed with the model (issue "reliability" adds
            # sampler/RNG state next to these).
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
            self.best_loss = tf.Variable(math.inf, dtype=tf.float64, trainable=False)
            self.lr_wait = tf.Variable(0, dtype=tf.int64, trainable=False)
            self.stale_epochs = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.checkpoint = tf.train.Checkpoint(
            model=self.model,
            backbone_optimizer=self.backbone_optimizer,
            head_optimizer=self.head_optimizer,
            epoch=self.epoch,
            best_loss=self.best_loss,
            lr_wait=self.lr_wait,
            stale_epochs=self.stale_epochs,
        )
        self.checkpoint_dir = os.path.join(config.model_dir, "checkpoints")
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, self.checkpoint_dir, max_to_keep=config.keep_checkpoints
        )
        self.metrics_path = os.path.join(config.model_dir, "metrics.json")
        self._train_writer = None
        self._eval_writer = None
        self._step_fn = tf.function(self.distributed_step, reduce_retracing=True)
        self._embed_fn = tf.function(
            lambda images: self.model(images, training=False), reduce_retracing=True
        )

    # -- optimisation -------------------------------------------------------

    def _make_optimizer(self, lr: float) -> keras.optimizers.Optimizer:
        if self.config.decoupled_weight_decay:
            return keras.optimizers.AdamW(learning_rate=lr, weight_decay=self.config.weight_decay)
        return keras.optimizers.Adam(learning_rate=lr)

    def train_step(self, images, labels, targets, mask) -> tf.Tensor:
        """Per-replica step: forward, loss, gradients, apply. Returns the loss."""
        num_replicas = self.strategy.num_replicas_in_sync
        variables = self.backbone_vars + self.head_vars
        with tf.GradientTape() as tape:
            embeddings = self.model(images, training=True)
            loss = self.loss_fn(embeddings, labels, targets, mask)
            scaled = loss / num_replicas
        grads = tape.gradient(scaled, variables)
        if self._l2:
            grads = [g + self._l2 * v.value for g, v in zip(grads, variables, strict=True)]
        nb = len(self.backbone_vars)
        if nb:
            self.backbone_optimizer.apply_gradients(
                zip(grads[:nb], self.backbone_vars, strict=True))
        self.head_optimizer.apply_gradients(zip(grads[nb:], self.head_vars, strict=True))
        return loss

    def distributed_step(self, batch) -> tf.Tensor:
        """Cross-replica step: runs `train_step` on each replica, mean loss."""
        per_replica = self.strategy.run(self.train_step, args=batch)
        return self.strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None)

    def _distribute(self, dataset: tf.data.Dataset):
        """Hook for input distribution (identity on one device)."""
        if self.strategy.num_replicas_in_sync == 1:
            return dataset
        return self.strategy.experimental_distribute_dataset(dataset)

    @property
    def learning_rates(self) -> tuple[float, float]:
        """Current (backbone, head) learning rates."""
        return (
            float(keras.ops.convert_to_numpy(self.backbone_optimizer.learning_rate)),
            float(keras.ops.convert_to_numpy(self.head_optimizer.learning_rate)),
        )

    def _scale_learning_rates(self, factor: float) -> None:
        for opt in (self.backbone_optimizer, self.head_optimizer):
            opt.learning_rate = float(keras.ops.convert_to_numpy(opt.learning_rate)) * factor

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
            self._scale_learning_rates(cfg.lr_factor)
            self.lr_wait.assign(0)
            logging.info("Loss plateaued: learning rates now %s", self.learning_rates)
        return int(self.stale_epochs.numpy()) >= cfg.early_stop_patience

    # -- embeddings and evaluation -------------------------------------------

    def embed(self, split: data_lib.Split) -> np.ndarray:
        """Embeds a split in inference mode without augmentation -> [N, d]."""
        ds = pipeline.eval_dataset(split, self.image_options, self.config.eval_batch_size)
        out = [self._embed_fn(images).numpy() for images, _ in ds]
        return np.concatenate(out, axis=0).astype(np.float32)

    def evaluate(self, split: data_lib.Split | None = None) -> dict:
        """Retrieval metrics of a split (default: test) with the current model."""
        split = split or self.dataset.test
        emb = self.embed(split)
        self.last_embeddings = emb
        return _jsonable(evaluation.evaluate(emb, split.labels, self.config.recall_ks,
                                             seed=self.config.seed))

    # -- summaries ----------------------------------------------------------

    def _writers(self):
        if self._train_writer is None:
            self._train_writer = tf.summary.create_file_writer(
                os.path.join(self.config.model_dir, "train"))
            self._eval_writer = tf.summary.create_file_writer(
                os.path.join(self.config.model_dir, "eval"))
        return self._train_writer, self._eval_writer

    def _write_eval(self, metrics: dict, step: int) -> None:
        _, writer = self._writers()
        with writer.as_default(step=step):
            for key, value in metrics.items():
                if isinstance(value, float):
                    tf.summary.scalar(key, value)
        writer.flush()

    # -- the loop -----------------------------------------------------------

    def _refresh(self, epoch: int) -> dict:
        """Embeds the training split (if the sampler needs it) and refreshes the sampler."""
        start = time.perf_counter()
        embeddings = self.embed(self.dataset.train) if self.sampler.needs_embeddings else None
        embed_seconds = time.perf_counter() - start
        self.sampler.refresh(embeddings, epoch)
        return {"sampler/embed_seconds": embed_seconds,
                "sampler/cluster_seconds": time.perf_counter() - start - embed_seconds}

    def train_epoch(self, epoch: int, refresh: bool) -> dict:
        """Runs one epoch; returns its statistics (loss, timings, sampler stats)."""
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
        if plan.num_batches == 0:
            logging.warning("Epoch %d: the sampler produced no batch with a triplet.", epoch + 1)
            stats.update(loss=math.nan, images_per_second=0.0, train_seconds=0.0)
            return stats
        ds = self._distribute(pipeline.train_dataset(
            self.dataset.train, plan, self.image_options, seed=self.config.seed, epoch=epoch))
        # A live bar on terminals; on logs (not a TTY) the epoch's log line suffices.
        show = self.config.progress and sys.stdout.isatty()
        bar = keras.utils.Progbar(plan.num_batches, stateful_metrics=["loss"],
                                  verbose=1 if show else 0, unit_name="batch")
        writer, _ = self._writers()
        batch_losses = []
        start = time.perf_counter()
        for i, batch in enumerate(ds):
            loss = float(self._step_fn(batch))
            batch_losses.append(loss)
            bar.update(i + 1, values=[("loss", loss)])
            with writer.as_default(step=int(self.head_optimizer.iterations.numpy())):
                tf.summary.scalar("loss_per_step", loss)
        seconds = time.perf_counter() - start
        stats.update(
            loss=float(np.mean(batch_losses)),
            train_seconds=seconds,
            images_per_second=float(plan.mask.sum() / max(seconds, 1e-9)),
        )
        return stats

    def _load_metrics(self) -> dict:
        if os.path.exists(self.metrics_path):
            with open(self.metrics_path) as f:
                return json.load(f)
        return {}

    def fit(self) -> dict:
        """Trains (resuming from the latest checkpoint in model_dir, if any).

        Returns:
          The metrics dict also written to `model_dir/metrics.json`: "before"
          and "after" (test split), "epochs" (every eval_every), "train"
          (epochs run, final loss, stop reason).
        """
        cfg = self.config
        os.makedirs(cfg.model_dir, exist_ok=True)
        write_json_atomic(os.path.join(cfg.model_dir, "config.json"), dataclasses.asdict(cfg))
        metrics = {}
        if self.manager.latest_checkpoint:
            self.checkpoint.restore(self.manager.latest_checkpoint).assert_existing_objects_matched()
            metrics = self._load_metrics()
            metrics.pop("after", None)
            logging.info("Resuming from %s (epoch %d).", self.manager.latest_checkpoint,
                         int(self.epoch.numpy()))
        if "before" not in metrics:
            logging.info("Evaluating the untrained model on the test split...")
            metrics["before"] = self.evaluate()
            self._write_eval(metrics["before"], 0)
            write_json_atomic(self.metrics_path, metrics)
            logging.info("before: %s", _fmt(metrics["before"]))
        metrics.setdefault("epochs", {})
        start_epoch = int(self.epoch.numpy())
        writer, _ = self._writers()
        stop_reason = "epochs"
        if int(self.stale_epochs.numpy()) >= cfg.early_stop_patience:
            stop_reason = "early_stopping"  # a resumed run that had already stopped
            start_epoch = cfg.epochs
        last_loss = math.nan
        for epoch in range(start_epoch, cfg.epochs):
            refresh = epoch == start_epoch or epoch % cfg.refresh_every == 0
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
            self.manager.save(checkpoint_number=epoch + 1)
            write_json_atomic(self.metrics_path, metrics)
            if stop:
                stop_reason = "early_stopping"
                logging.info("No improvement for %d epochs: stopping early.",
                             cfg.early_stop_patience)
                break
        if not self.manager.latest_checkpoint:
            self.manager.save(checkpoint_number=int(self.epoch.numpy()))
        metrics["after"] = self.evaluate()
        self._write_eval(metrics["after"], int(self.epoch.numpy()))
        metrics["train"] = {
            "epochs_run": int(self.epoch.numpy()),
            "final_loss": None if math.isnan(last_loss) else float(last_loss),
            "early_stopped": stop_reason == "early_stopping",
        }
        write_json_atomic(self.metrics_path, metrics)
        logging.info("after: %s", _fmt(metrics["after"]))
        if cfg.export and getattr(self.strategy.extended, "should_checkpoint", True):
            self.export(self.last_embeddings)  # chief only
        return metrics

    def export(self, test_embeddings: np.ndarray) -> None:
        """Writes MODEL_DIR/export (SavedModel) and MODEL_DIR/projector (test split)."""
        from sst_tf import export, projector

        cfg = self.config
        try:
            export.export_saved_model(
                self.model,
                os.path.join(cfg.model_dir, "export"),
                export.spec_for_config(cfg),
                metadata=export.run_metadata(cfg, self.manager.latest_checkpoint),
            )
            projector.write_split_projector(
                os.path.join(cfg.model_dir, "projector"), self.dataset.test, test_embeddings,
                seed=cfg.seed,
            )
        except Exception:
            logging.error("Export after training failed (checkpoints and metrics.json are "
                          "saved); retry with: python -m sst_tf.export --model_dir=%s",
                          cfg.model_dir)
            raise


def _fmt(metrics: dict) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
