"""The training loop: plain config in, trained and evaluated model out.

`Trainer(config)` builds the data set, sampler, model, training step and loop
state; `fit()` runs

  evaluate ("before") -> for each epoch: [refresh: embed train split ->
  sampler.refresh] -> sampler.plan -> tf.data -> cross-replica step per batch ->
  plateau / early stop -> checkpoint -> [evaluate every eval_every] ->
  evaluate ("after") -> export

and writes `metrics.json`, TensorBoard events and checkpoints under
`config.model_dir`. No flags here: `sst_tf.train` converts flags to a
`TrainConfig`. The pieces the loop drives live in their own modules:
`step.TrainStep` (the per-replica step and its optimizers; one Adam for the
backbone at lr, one for the head at lr * head_lr_multiplier, coupled L2 weight
decay or AdamW), `distribute` (the step on every replica, whole batches per
replica), `checkpoints` (loop state, checkpoints, exact resume, signals),
`monitors` (plateau and early stopping, non-finite steps, collapse) and
`export.export_trained_run` (SavedModel and projector files).
"""

from __future__ import annotations

import math
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from sst_tf import (
    calibration,
    distribute,
    evaluation,
    export,
    loss_registry,
    losses,
    monitors,
    negatives,
    optim,
    pipeline,
    run_state,
    sampling,
    visualize,
)
from sst_tf import data as data_lib
from sst_tf import model as model_lib
from sst_tf import step as step_lib
from sst_tf.checkpoints import LoopState, RunCheckpoints, check_resume, resume_learning_rates
from sst_tf.config import LOSSES, TARGET_LOSSES, TrainConfig
from sst_tf.export import ExportError
from sst_tf.monitors import COLLAPSE_SPREAD, CollapseError, relative_spread
from sst_tf.outputs import read_json_object, write_json_atomic
from sst_tf.run_state import RunFolder
from sst_tf.summaries import Summaries, log_plan

__all__ = ["COLLAPSE_SPREAD", "LOSSES", "TARGET_LOSSES", "CollapseError", "ExportError",
           "TrainConfig", "Trainer", "relative_spread", "seed_everything", "write_json_atomic"]


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seeds Python, NumPy, TF and Keras; optionally makes TF ops deterministic."""
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


class Trainer:
    """Trains an embedding model as `TrainConfig` says (see module docstring).

    Attributes:
      sampler: builds the batches (`sst_tf.sampling`).
      model: the Keras embedding model.
      loss_layer: the loss's own weights (Proxy-Anchor's proxies) or None.
      step: the per-replica step (`step.TrainStep`): loss function, optimizers.
      step_fn: the compiled cross-replica step, batch -> mean loss (NaN when
        the step was skipped).
      state: the checkpointed loop variables (`checkpoints.LoopState`).
      checkpoints: the run's checkpoints (`checkpoints.RunCheckpoints`).
      plateau: reduce-on-plateau and early stopping (`monitors.PlateauSchedule`).
      nonfinite: counts the skipped non-finite steps (`monitors.NonFiniteMonitor`).
      summaries: the TensorBoard writers (`summaries.Summaries`).
      changed_flags: the flags that differ from the resumed run's.
      memory: with --refresh=memory, the embeddings of the latest training
        forward pass of every training image [N, d] (None before the first
        refresh).
      last_embeddings: the test split's embeddings of the latest evaluation.
    """

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
        held = data_lib.hold_out(
            dataset or data_lib.load_dataset(config.dataset, config.data_dir,
                                             **config.reader_options()),
            config.validation_share, config.seed)
        self.dataset = held.dataset  # training without the validation images
        self.held_out = held
        if held.validation is not None:
            logging.info("Held out of training for the thresholds (--validation_share=%g): %s",
                         config.validation_share, held.describe())
        self.image_options = pipeline.ImageOptions(
            image_size=config.image_size,
            resize_size=config.resize_size,
            random_flip=config.random_flip,
        )
        train = self.dataset.train
        data_lib.check_splits(train.labels, self.dataset.test.labels, config.dataset)
        self.folder = RunFolder(config.model_dir)
        self.changed_flags = check_resume(
            self.folder, self.strategy, run_state.run_record(config, self.dataset),
            config.allow_flag_changes)
        self.sampler = _make_sampler(config, train.labels)
        self.memory: np.ndarray | None = None
        self.last_embeddings: np.ndarray | None = None
        with self.strategy.scope(), step_lib.DtypePolicy(
                step_lib.precision_policy(config.mixed_precision)):
            self.model = model_lib.build_model(**config.model_options())
            self.loss_layer = _make_loss_layer(config, train.labels)
            self.step = _make_step(config, self.model, self.loss_layer, self.num_replicas)
            self.state = LoopState(len(train), config.embedding_dim,
                                   training_embeddings=config.refresh == "memory")
        # The checkpoint's keys: renaming one makes older checkpoints unreadable.
        self.checkpoints = RunCheckpoints(
            dict(model=self.model, **self.step.checkpoint_items(),
                 **self.state.checkpoint_items(),
                 **({"loss_layer": self.loss_layer} if self.loss_layer is not None else {})),
            self.state, self.folder, self.strategy, max_to_keep=config.keep_checkpoints)
        if config.refresh == "memory":  # the memory is checkpointed: a resumed run is the same
            self.checkpoints.before_save = self._record_memory
        self.plateau = monitors.PlateauSchedule(
            self.state, self.step, lr_patience=config.lr_patience, lr_factor=config.lr_factor,
            early_stop_patience=config.early_stop_patience)
        self.nonfinite = monitors.NonFiniteMonitor(self.state, self.step, self.checkpoints,
                                                   config.max_consecutive_nonfinite)
        self.summaries = Summaries(self.folder, self.is_chief)
        self.step_fn = tf.function(distribute.cross_replica_step(self.strategy, self.step),
                                   reduce_retracing=True)
        self._memory_step_fn = tf.function(
            distribute.cross_replica_step_with_embeddings(self.strategy, self.step),
            reduce_retracing=True)
        self._embed_fn = tf.function(
            lambda images: self.model(images, training=False), reduce_retracing=True
        )

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

    def calibrate(self) -> dict:
        """Same / different thresholds from the validation images, measured on the test split.

        Calibrates on the embeddings of the images held out of training
        (`--validation_share`: validation classes, or held-out images of every
        class; without them the training split), with `sst_tf.calibration`:
        the best-F1 threshold and those at FMR 1e-2 and 1e-3. Then measures
        each threshold on the test split's embeddings of the latest
        evaluation: the rates a user of the threshold will get. Call after
        `evaluate()`.

        Returns:
          {"thresholds": {name: distance}, "source": where the calibration
           images come from, "calibration_set": {name: rates}, "test": {name:
           rates}, "num_pairs": {"calibration_set": ..., "test": ...}}
          (rates: precision, recall, f1, fmr, fnmr).
        """
        split = self.held_out.validation
        if split is None:
            split = self.dataset.train
        cal = calibration.calibrate(self.embed(split), split.labels, seed=self.config.seed)
        # The test split's pairs, once: its own curve and the thresholds' rates.
        test_cal = calibration.calibrate(self.last_embeddings, self.dataset.test.labels,
                                         seed=self.config.seed)
        test = {name: test_cal.rates_at(t) for name, t in cal.thresholds.items()}
        label = {"classes": "validation classes", "images": "held-out images"}.get(
            self.held_out.kind, "training split")
        try:  # the figure is a by-product: a failure to draw it only warns
            visualize.write_threshold_figure(
                self.folder.figures,
                {label: cal.curve, "test split": test_cal.curve},
                {f"{name} (test)": (r["fmr"], r["fnmr"]) for name, r in test.items()})
        except Exception as e:  # noqa: BLE001 - matplotlib, a foreign figures folder, ...
            logging.warning("thresholds.png not written: %s", e)
        return {"thresholds": cal.thresholds, "source": self.held_out.describe(),
                "calibration_set": cal.rates, "test": test,
                "num_pairs": {"calibration_set": cal.num_pairs, "test": test_cal.num_pairs}}

    # -- one epoch ------------------------------------------------------------

    def refresh_sampler(self, epoch: int) -> dict:
        """Embeds the training split (if the sampler needs it) and refreshes the sampler.

        Returns:
          Its timings: {"sampler/embed_seconds", "sampler/cluster_seconds"}.

        Raises:
          CollapseError: the embeddings (after the first epoch) are one point and
            --stop_on_collapse is set (otherwise a warning).
        """
        start = time.perf_counter()
        embed_seconds = 0.0

        def embed() -> np.ndarray:
            nonlocal embed_seconds
            if self.config.refresh == "memory" and self.memory is not None:
                embeddings = self.memory.copy()  # last training forward passes: no extra pass
            else:
                embeddings = self.embed(self.dataset.train, distributed=True)
                if self.config.refresh == "memory":
                    self.memory = embeddings.copy()
            embed_seconds = time.perf_counter() - start
            if epoch > 0:
                monitors.check_collapse(embeddings, epoch, self.config,
                                        self.checkpoints.directory)
            return embeddings

        embeddings = sampling.refresh_sampler(self.sampler, epoch, embed)
        if embeddings is not None:  # the sampler state, saved with the next checkpoint
            self.state.record_refresh(embeddings, epoch)
        return {"sampler/embed_seconds": embed_seconds,
                "sampler/cluster_seconds": time.perf_counter() - start - embed_seconds}

    def _record_memory(self) -> None:
        """Copies the memory of --refresh=memory into the loop state (before a checkpoint)."""
        if self.memory is not None:
            self.state.training_embeddings.assign(self.memory)

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
        timings = self.refresh_sampler(epoch) if refresh else {}
        plan = self.sampler.plan(epoch)
        stats = {f"sampler/{k}": v for k, v in plan.stats.items()}
        stats.update(timings)
        stats["sampler/refresh_seconds"] = sum(timings.values()) + plan.stats["plan_seconds"]
        log_plan(epoch, refresh, plan, stats["sampler/refresh_seconds"])
        # Every replica of every worker gets the same number of whole batches.
        plan = sampling.pad_plan(plan, self.num_replicas)
        if plan.num_batches == 0:
            logging.warning("Epoch %d: the sampler produced no batch with a triplet.", epoch + 1)
            stats.update(loss=math.nan, images_per_second=0.0, train_seconds=0.0,
                         nonfinite_steps=0, images=0)
            return stats
        if start_step:
            logging.info("Epoch %d: resuming after step %d of %d.", epoch + 1, start_step,
                         plan.num_batches // self.num_replicas)
        start_batch = start_step * self.num_replicas  # one batch per replica and step
        ds = pipeline.train_dataset(
            self.dataset.train, plan, self.image_options, seed=self.config.seed, epoch=epoch,
            start_batch=start_batch)
        use_memory = self.memory is not None
        if use_memory:  # carry each row's training index to fill the memory
            idx = tf.data.Dataset.from_tensor_slices(plan.indices[start_batch:])
            ds = tf.data.Dataset.zip((ds, idx)).map(lambda batch, i: (*batch, i))
        ds = distribute.distribute_batches(self.strategy, ds)
        num_steps = plan.num_batches // self.num_replicas
        # A live bar on terminals; on logs (not a TTY) the epoch's log line suffices.
        show = self.config.progress and sys.stdout.isatty()
        bar = keras.utils.Progbar(num_steps, stateful_metrics=["loss"],
                                  verbose=1 if show else 0, unit_name="batch")
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
                path = self.checkpoints.save_progress(epoch, i, loss_sum, loss_count)
                raise pipeline.InputError(
                    f"{e} Progress is saved in {path}: restore the file and rerun the same "
                    "command to resume, or start a new --model_dir (the image check then "
                    "skips it).") from e
            if use_memory:
                loss, emb, idx = self._memory_step_fn(batch)
                idx = idx.numpy()
                emb = emb.numpy()
                # Padding rows and non-finite embeddings (a skipped step) keep the old value.
                keep = (idx >= 0) & np.all(np.isfinite(emb), axis=1)
                self.memory[idx[keep]] = emb[keep]
                loss = float(loss)
            else:
                loss = float(self.step_fn(batch))
            if math.isfinite(loss):
                loss_sum += loss
                loss_count += 1
                self.nonfinite.finite()
                bar.update(i + 1, values=[("loss", loss)])
                self.summaries.write_step(loss, int(self.step.head_optimizer.iterations.numpy()))
            else:
                self.nonfinite.skipped(epoch, i)
                skipped += 1
            i += 1
            self.checkpoints.check_signal(epoch, i, loss_sum, loss_count)
        seconds = time.perf_counter() - start
        images = int(plan.mask[start_batch:].sum())  # real rows (padding left out)
        stats.update(
            loss=loss_sum / loss_count if loss_count else math.nan,
            train_seconds=seconds,
            images=images,
            images_per_second=float(images / max(seconds, 1e-9)),
            nonfinite_steps=skipped,
        )
        return stats

    def end_epoch(self, epoch: int, loss: float) -> bool:
        """Closes epoch `epoch` (0-based): the plateau schedule sees its loss, the count advances.

        A NaN loss (no finite step in the epoch) leaves the schedule alone.

        Returns:
          True when early stopping says to stop.
        """
        stop = not math.isnan(loss) and self.plateau.update(loss)
        self.state.epoch.assign(epoch + 1)
        return stop

    # -- the run --------------------------------------------------------------

    def _write_json(self, path: str, obj) -> None:
        """Atomic JSON write on the chief; other workers write nothing."""
        if self.is_chief:
            write_json_atomic(path, obj)

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
        with self.checkpoints.graceful_signals():
            return self._fit()

    def _fit(self) -> dict:
        cfg, state = self.config, self.state
        os.makedirs(cfg.model_dir, exist_ok=True)
        self._write_json(self.folder.config, run_state.run_record(cfg, self.dataset))
        metrics = {}
        latest = self.checkpoints.latest_checkpoint()
        if latest:
            self.checkpoints.restore(latest)
            if os.path.exists(self.folder.metrics):
                metrics = read_json_object(self.folder.metrics, f"--model_dir={cfg.model_dir}")
            metrics.pop("after", None)
            if cfg.refresh == "memory" and int(state.refresh_epoch.numpy()) >= 0:
                self.memory = state.training_embeddings.numpy().copy()
            logging.info("Resuming from %s (epoch %d, step %d).", latest,
                         int(state.epoch.numpy()) + 1, int(state.step_in_epoch.numpy()))
            resume_learning_rates(self.step, cfg, self.changed_flags)
        metrics["settings"] = loss_registry.settings(cfg)  # the geometry of every evaluation
        if "before" not in metrics:
            logging.info("Evaluating the untrained model on the test split...")
            metrics["before"] = self.evaluate()
            self.summaries.write_eval(metrics["before"], 0)
            self._write_json(self.folder.metrics, metrics)
            logging.info("before: %s", _fmt(metrics["before"]))
        metrics.setdefault("epochs", {})
        start_epoch = int(state.epoch.numpy())
        start_step = int(state.step_in_epoch.numpy())
        stop_reason = "epochs"
        if self.plateau.stopped:
            stop_reason = "early_stopping"  # a resumed run that had already stopped
            start_epoch = cfg.epochs
        last_loss = math.nan
        for epoch in range(start_epoch, cfg.epochs):
            step0 = start_step if epoch == start_epoch else 0
            loss_sum, loss_count = state.epoch_loss()
            self.checkpoints.check_signal(epoch, step0, loss_sum, loss_count)
            refresh = step0 == 0 and sampling.refresh_due(epoch, cfg.refresh_every)
            if epoch == start_epoch and not refresh:
                refresh = not state.restore_sampler(self.sampler, epoch)
            if step0:
                stats = self.train_epoch(epoch, refresh, step0, loss_sum, loss_count)
            else:
                stats = self.train_epoch(epoch, refresh)
            last_loss = stats["loss"]
            lr, head_lr = self.step.learning_rates
            self.summaries.write_epoch(stats, (lr, head_lr), epoch + 1)
            logging.info("Epoch %d/%d: loss %.4f, %.0f images/s, lr %.3g (head %.3g)",
                         epoch + 1, cfg.epochs, stats["loss"], stats["images_per_second"],
                         lr, head_lr)
            stop = self.end_epoch(epoch, stats["loss"])
            if cfg.eval_every and (epoch + 1) % cfg.eval_every == 0 and epoch + 1 < cfg.epochs:
                result = self.evaluate()
                metrics["epochs"][str(epoch + 1)] = result
                self.summaries.write_eval(result, epoch + 1)
                logging.info("Epoch %d eval: %s", epoch + 1, _fmt(result))
            # metrics.json first: a crash in between re-runs this epoch, which
            # rewrites its entry; the other order could lose the entry.
            self._write_json(self.folder.metrics, metrics)
            self.checkpoints.save_epoch(epoch + 1)
            if stop:
                stop_reason = "early_stopping"
                logging.info("No improvement for %d epochs: stopping early.",
                             cfg.early_stop_patience)
                break
        self.checkpoints.check_signal(int(state.epoch.numpy()))
        if not (latest or self.checkpoints.manager.latest_checkpoint):
            self.checkpoints.save_epoch(int(state.epoch.numpy()))
        metrics["after"] = self.evaluate()
        self.summaries.write_eval(metrics["after"], int(state.epoch.numpy()))
        if self.is_chief and cfg.calibrate:
            metrics["calibration"] = self.calibrate()
        metrics["train"] = {
            "epochs_run": int(state.epoch.numpy()),
            "final_loss": None if math.isnan(last_loss) else float(last_loss),
            "early_stopped": stop_reason == "early_stopping",
            "nonfinite_steps": int(state.nonfinite_steps.numpy()),
        }
        self._write_json(self.folder.metrics, metrics)
        logging.info("after: %s", _fmt(metrics["after"]))
        if cfg.export and getattr(self.strategy.extended, "should_checkpoint", True):
            try:  # chief only
                export.export_trained_run(self.model, cfg, self.dataset.test,
                                          self.last_embeddings,
                                          self.checkpoints.manager.latest_checkpoint,
                                          (metrics.get("calibration") or {}).get("thresholds"))
            except ExportError as e:
                e.metrics = metrics  # written to metrics.json above
                raise
        return metrics


def _make_sampler(config: TrainConfig, labels: np.ndarray):
    """The sampler `config` names, with its options."""
    return sampling.make_sampler(
        config.sampler,
        labels,
        config.batch_size,
        views=config.views,
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


def _make_loss_layer(config: TrainConfig, labels: np.ndarray) -> keras.layers.Layer | None:
    """The layer of a loss's own weights (`loss_registry.WEIGHTED_LOSSES`), or None.

    Proxy-Anchor's proxies or the class weights of ArcFace, CosFace and
    Sub-center ArcFace, one set per training class. Created inside the
    strategy scope, trained by the step's loss optimizer, checkpointed with
    the model, left out of the export.
    """
    spec = loss_registry.spec(config.loss)
    if not spec.weights:
        return None
    params = loss_registry.params(config)
    if config.loss == "proxy_anchor":
        return losses.ProxyAnchor(
            class_ids=np.unique(labels), embedding_dim=config.embedding_dim,
            lr_multiplier=config.proxy_lr_multiplier, seed=config.seed,
            dtype="float32",  # the loss stays float32 under mixed precision
            **params)
    return losses.MarginSoftmax(
        config.loss, class_ids=np.unique(labels), embedding_dim=config.embedding_dim,
        margin=config.margin, scale=params["scale"], sub_centers=params.get("sub_centers"),
        seed=config.seed, dtype="float32")


def _make_step(config: TrainConfig, model: keras.Model, loss_layer: keras.layers.Layer | None,
               num_replicas: int) -> step_lib.TrainStep:
    """The training step of `model` with the loss and optimizers `config` names."""
    backbone_vars, head_vars = model_lib.variable_groups(model)
    params = loss_registry.params(config)
    loss_fn = losses.make_loss(config.loss, config.margin, loss_layer, params=params,
                               normalize=config.normalize)
    if config.global_negatives:
        loss_fn = negatives.global_negatives(loss_fn)
    memory = None
    if config.memory_size:
        memory = negatives.CrossBatchMemory(config.memory_size, config.embedding_dim,
                                            config.memory_warmup_steps)
        loss_fn = negatives.with_memory(
            loss_fn, losses.make_reference_loss(config.loss, config.margin, params=params,
                                                normalize=config.normalize),
            memory, config.memory_weight)
    return step_lib.TrainStep(
        model, loss_fn,
        backbone_vars, head_vars,
        lr=optim.loss_learning_rate(config.lr, config.loss, config.loss_lr_multiplier),
        head_lr_multiplier=config.head_lr_multiplier,
        weight_decay=config.weight_decay,
        decoupled_weight_decay=config.decoupled_weight_decay,
        num_replicas=num_replicas,
        mixed_precision=config.mixed_precision,
        jit_compile=config.jit_compile,
        loss_vars=list(loss_layer.trainable_variables) if loss_layer is not None else [],
        loss_lr_multiplier=config.proxy_lr_multiplier,
        memory=memory,
    )


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


def _fmt(metrics: dict) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
