"""The project's samplers as a data source for `keras.Model.fit`.

    source = SamplerDataset(dataset.train, sampler, options, seed=0)
    model.fit(source.dataset(model), epochs=40, callbacks=[source.refresh_callback()])

`SamplerDataset.dataset(model)` refreshes the sampler with the model's
embeddings of the training split (inference mode, no augmentation: the
pipeline's evaluation path), plans the first epoch and returns a
`tf.data.Dataset` of `(images, y)`: images float32 [G, S, S, 3] (0..255,
augmented as `sst_tf.pipeline.train_dataset` does, seeded by seed, epoch and
position), `y` the packed int32 [G, 2 + k] of `sst_tf.fit.losses.pack_targets`
(labels, mask, batch-local targets). Every time `fit` starts an epoch it
iterates the dataset anew, and the dataset then reads the plan that
`SamplerRefresh` (the callback) made for that epoch: refreshing every N
epochs, planning every epoch.

Replicas: with R replicas in sync (`model.distribute_strategy`), a step's
global batch G = R x B holds R whole plan batches one after the other; Keras
splits a global batch into R contiguous slices, so each replica gets one whole
batch and its batch-local targets stay valid.

Epoch length: Keras runs the same number of steps every epoch (it fixes the
count after the first epoch), while plans of some neighbourhood rules vary in
length. So every epoch has `steps_per_epoch` steps (default: the first plan's
batches / R, rounded up): a shorter plan is cycled (its first batches come
again, with new augmentation), a longer one cut (its batches are shuffled, so
the batches left out are random). Both are logged. Samplers with a fixed plan
length (random, class-balanced, `neighborhoods="classes"` on most data) are
used exactly.

The dataset uses a Python generator for the plan (indices only; images are
decoded in parallel by tf.data): it works on one machine, with one or more
devices (MirroredStrategy), not with a multi-worker strategy.
"""

from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from sst_tf import pipeline, sampling
from sst_tf.datasets.splits import Split
from sst_tf.fit.losses import pack_targets


@dataclasses.dataclass
class _EpochRows:
    """One epoch's rows, [steps, R * B] each (what the generator yields)."""

    epoch: int
    indices: np.ndarray
    labels: np.ndarray
    targets: np.ndarray
    mask: np.ndarray
    positions: np.ndarray


class SamplerDataset:
    """A sampler's epoch plans as a `tf.data.Dataset` for `model.fit`."""

    def __init__(
        self,
        split: Split,
        sampler,
        image_options: pipeline.ImageOptions,
        seed: int = 0,
        steps_per_epoch: int | None = None,
        eval_batch_size: int = 256,
        prefetch: int = 2,
    ):
        """Creates the source; nothing is planned yet (see `dataset`).

        Args:
          split: the training split (the sampler's labels are its labels).
          sampler: a sampler of `sst_tf.sampling` (`make_sampler`) over `split`.
          image_options: image sizes and augmentation.
          seed: augmentation seed (with the epoch and position of each row).
          steps_per_epoch: steps of every epoch (default: from the first plan).
          eval_batch_size: batch size of the embedding passes of a refresh.
          prefetch: batches to prefetch.
        """
        if len(sampler.labels) != len(split) or not np.array_equal(sampler.labels, split.labels):
            raise ValueError("the sampler's labels are not the split's labels: build the "
                             "sampler from split.labels.")
        if steps_per_epoch is not None and steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}.")
        self.split = split
        self.sampler = sampler
        self.image_options = image_options
        self.seed = int(seed)
        self.eval_batch_size = int(eval_batch_size)
        self.prefetch = int(prefetch)
        self._steps = steps_per_epoch
        self.num_replicas = 1
        self.epoch: int | None = None  # the epoch of the current plan
        self.plan_stats: dict[str, float] = {}
        # Input of the last refresh: embeddings [N, d] (None for samplers
        # without embeddings) and its epoch.
        self.refresh_embeddings: np.ndarray | None = None
        self.refresh_epoch: int | None = None
        self._rows: _EpochRows | None = None

    @property
    def steps_per_epoch(self) -> int:
        """Steps of every epoch (known once the first epoch is planned)."""
        if self._steps is None:
            raise RuntimeError("steps_per_epoch is known after dataset(model) planned an epoch.")
        return self._steps

    def embed(self, model: keras.Model) -> np.ndarray:
        """The model's embeddings of the training split, float32 [N, d].

        Inference mode, no augmentation (`pipeline.eval_dataset`), through
        `model.predict` (so on all replicas under the model's strategy).
        """
        ds = pipeline.eval_dataset(self.split, self.image_options, self.eval_batch_size)
        emb = model.predict(ds.map(lambda images, labels: images), verbose=0)
        return np.asarray(emb, np.float32)

    def refresh(self, model: keras.Model, epoch: int) -> None:
        """Refreshes the sampler with the model's embeddings (if it needs any)."""
        embeddings = sampling.refresh_sampler(self.sampler, epoch, lambda: self.embed(model))
        self.refresh_embeddings, self.refresh_epoch = embeddings, int(epoch)

    def plan_epoch(self, epoch: int) -> dict[str, float]:
        """Plans `epoch` from the sampler's current state; the next iteration reads it.

        Returns:
          The plan's statistics (`EpochPlan.stats`) plus `plan_batches`
          (batches of the plan) and `epoch_batches` (batches the epoch runs).
        """
        plan = self.sampler.plan(epoch)
        nb, b = plan.indices.shape
        if nb == 0:
            raise RuntimeError(f"epoch {epoch + 1}: the sampler produced no batch with a "
                               "triplet; nothing to train on.")
        r = self.num_replicas
        if self._steps is None:
            self._steps = math.ceil(nb / r)
        total = self._steps * r
        order = np.arange(total) % nb  # cycle a short plan, cut a long one
        if total != nb:
            logging.info("Epoch %d: the plan has %d batches, the epoch runs %d (%s).",
                         epoch + 1, nb, total, "cycled" if total > nb else "cut")
        idx = plan.indices[order]
        mask = plan.mask[order]
        labels = np.where(mask, self.split.labels[idx], -1).astype(np.int32)
        k = plan.targets.shape[-1]
        self._rows = _EpochRows(
            epoch=int(epoch),
            indices=idx.reshape(self._steps, r * b).astype(np.int64),
            labels=labels.reshape(self._steps, r * b),
            targets=plan.targets[order].reshape(self._steps, r * b, k).astype(np.int32),
            mask=mask.reshape(self._steps, r * b),
            positions=np.arange(total * b, dtype=np.int32).reshape(self._steps, r * b),
        )
        self.epoch = int(epoch)
        self.plan_stats = dict(plan.stats, plan_batches=float(nb), epoch_batches=float(total))
        return self.plan_stats

    def dataset(self, model: keras.Model, initial_epoch: int = 0) -> tf.data.Dataset:
        """Refreshes with `model`, plans `initial_epoch` and returns the fit dataset.

        Args:
          model: the model `fit` trains (its strategy sets the replicas).
          initial_epoch: the `initial_epoch` given to `fit`.

        Returns:
          `steps_per_epoch` elements per iteration: (images float32 [R*B, S, S, 3],
          y int32 [R*B, 2 + k]).
        """
        self.num_replicas = int(model.distribute_strategy.num_replicas_in_sync)
        self.refresh(model, initial_epoch)
        self.plan_epoch(initial_epoch)
        rows = self._rows
        g = rows.indices.shape[1]
        k = rows.targets.shape[-1]
        load = pipeline.image_loader(self.split)
        options = self.image_options
        seed = self.seed % (2**31 - 1)

        def generate():
            cur = self._rows  # the plan of the epoch being started
            epochs = np.full(g, cur.epoch % (2**31 - 1), np.int32)
            for s in range(cur.indices.shape[0]):
                yield (cur.indices[s], cur.labels[s], cur.targets[s], cur.mask[s],
                       cur.positions[s], epochs)

        signature = (
            tf.TensorSpec([g], tf.int64), tf.TensorSpec([g], tf.int32),
            tf.TensorSpec([g, k], tf.int32), tf.TensorSpec([g], tf.bool),
            tf.TensorSpec([g], tf.int32), tf.TensorSpec([g], tf.int32),
        )

        def decode(i, label, target, mask, pos, epoch):
            base = tf.stack([tf.constant(seed, tf.int32), epoch])
            image = pipeline.train_preprocess(
                load(i), tf.random.experimental.stateless_fold_in(base, pos), options)
            return image, label, target, mask

        ds = tf.data.Dataset.from_generator(generate, output_signature=signature)
        ds = ds.unbatch().map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.batch(g, drop_remainder=True)
        ds = ds.map(lambda images, labels, targets, mask: (
            images, pack_targets(labels, targets, mask)))
        ds = ds.apply(tf.data.experimental.assert_cardinality(self._steps))
        opts = tf.data.Options()
        opts.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        return ds.with_options(opts).prefetch(self.prefetch)

    def refresh_callback(self, every: int = 1) -> SamplerRefresh:
        """The callback that refreshes every `every` epochs and plans every epoch."""
        return SamplerRefresh(self, every)


class SamplerRefresh(keras.callbacks.Callback):
    """Refreshes the sampler every N epochs with the model's embeddings; plans every epoch.

    At the start of epoch e (0-based): if e % every == 0, the training split
    is embedded by the model being trained and the sampler refreshed; then
    epoch e is planned, so its batches come from the refreshed embeddings.
    The first epoch is already planned by `SamplerDataset.dataset`.
    """

    def __init__(self, source: SamplerDataset, every: int = 1):
        """Creates the callback.

        Args:
          source: the data source whose dataset `fit` trains on.
          every: refresh every `every` epochs (plan every epoch).
        """
        super().__init__()
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}.")
        self.source = source
        self.every = int(every)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:  # noqa: D102
        if self.source.epoch == epoch:  # planned by dataset() (first epoch)
            return
        refreshed = sampling.refresh_due(epoch, self.every)
        if refreshed:
            self.source.refresh(self.model, epoch)
        stats = self.source.plan_epoch(epoch)
        logging.info("Epoch %d %s: %d batches, %.2f classes/batch, coverage %.3f.",
                     epoch + 1, "refreshed" if refreshed else "planned",
                     int(stats["epoch_batches"]), stats.get("mean_classes_per_batch", 0.0),
                     stats.get("coverage", 0.0))
