"""Distribution plumbing: strategies, chief/worker roles, whole-batch input.

* `make_strategy("default" | "mirrored" | "multi_worker")`: the default
  (one device) strategy, `MirroredStrategy` over the visible GPUs (or given
  devices; without GPUs the logical CPU devices), or
  `MultiWorkerMirroredStrategy` configured by the `TF_CONFIG` environment
  variable (one process per machine; see docs/scaling.md).
* Roles: `is_chief(strategy)`; `worker_dir(path, strategy)` is `path` on the
  chief and a per-worker temporary folder below it elsewhere: every worker
  must take part in a checkpoint save (it is a collective operation under
  `MultiWorkerMirroredStrategy`), but only the chief's copy is kept
  (`remove_worker_dir` deletes the others after each save), as the
  TensorFlow multi-worker guide prescribes.
* Input: `distribute_batches` hands each replica whole batches from a
  dataset that is already batched at the fixed batch size B: with R replicas
  in all, one step consumes R consecutive batches (one neighbourhood per
  replica; a neighbourhood is never split). Workers take disjoint shards of
  the batches. `sampling.pad_plan` first pads an epoch plan with fully masked batches
  so every replica of every worker gets the same number of steps (a masked
  batch has no triplet: zero loss, zero gradient).
* The training step across replicas: `cross_replica_step` runs a per-replica
  step (`sst_tf.step.TrainStep`) on every replica's batch (`strategy.run`)
  and reduces the losses to their mean; `cross_replica_step_with_embeddings`
  also gathers every replica's embeddings and training indices (for
  `--refresh=memory`).
* `distributed_embed`: an inference pass over a split with every replica
  embedding its share, gathered (`strategy.gather`) back into split order on
  every worker, so all workers build the same epoch plan.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable

import numpy as np
import tensorflow as tf
from absl import logging

from sst_tf.config import STRATEGIES


def make_strategy(name: str, devices: list[str] | None = None) -> tf.distribute.Strategy:
    """Creates a distribution strategy by name.

    Args:
      name: "default" (one device), "mirrored" (one machine, several devices)
        or "multi_worker" (several processes/machines, from `TF_CONFIG`).
      devices: devices of a "mirrored" strategy (default: all visible GPUs;
        without GPUs every logical CPU device, which is one CPU unless the
        process split it with `tf.config.set_logical_device_configuration`).

    Returns:
      The strategy. Create it before any other TensorFlow work in the process.

    Raises:
      ValueError: unknown name, or a malformed `TF_CONFIG`.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if devices is None and not tf.config.list_logical_devices("GPU"):
            cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
            devices = cpus if len(cpus) > 1 else None
        strategy = tf.distribute.MirroredStrategy(devices)
        logging.info("MirroredStrategy over %d replica(s): %s", strategy.num_replicas_in_sync,
                     strategy.extended.worker_devices)
        return strategy
    if name == "multi_worker":
        raw = os.environ.get("TF_CONFIG")
        if not raw:
            logging.warning("--strategy=multi_worker without TF_CONFIG: running as a single "
                            "worker. Set TF_CONFIG on every worker to train on several.")
        else:
            try:
                cfg = json.loads(raw)
                cfg["cluster"]["worker"], cfg["task"]["type"]  # noqa: B018
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(
                    "TF_CONFIG must be JSON like {\"cluster\": {\"worker\": [\"host:port\", ...]}, "
                    f"\"task\": {{\"type\": \"worker\", \"index\": 0}}}}; got {raw!r} ({e})."
                ) from e
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        logging.info("MultiWorkerMirroredStrategy: %d replica(s) in sync, task %s",
                     strategy.num_replicas_in_sync, task_info(strategy))
        return strategy
    raise ValueError(f"--strategy must be one of {'|'.join(STRATEGIES)}, got {name!r}.")


def task_info(strategy: tf.distribute.Strategy) -> tuple[str | None, int]:
    """(task type, task id) of this process; (None, 0) without a cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return None, 0
    return resolver.task_type, int(resolver.task_id or 0)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes summaries, metrics, exports and projector files.

    The chief is the task of type "chief", or worker 0 when the cluster has
    no "chief" task; a process outside any cluster is its own chief.
    """
    task_type, task_id = task_info(strategy)
    if task_type is None:
        return True
    if task_type == "chief":
        return True
    cluster = strategy.cluster_resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and "chief" not in cluster


def worker_dir(path: str, strategy: tf.distribute.Strategy) -> str:
    """`path` on the chief; `path/workertemp_<id>` (temporary) on other workers."""
    if is_chief(strategy):
        return path
    task_type, task_id = task_info(strategy)
    return os.path.join(path, f"workertemp_{task_type}_{task_id}")


def remove_worker_dir(path: str, strategy: tf.distribute.Strategy) -> None:
    """Deletes a non-chief worker's temporary folder (no-op on the chief)."""
    if not is_chief(strategy) and os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)


def num_shards(strategy: tf.distribute.Strategy) -> int:
    """Batches consumed per step: replicas across all workers."""
    return int(strategy.num_replicas_in_sync)


def distribute_batches(strategy: tf.distribute.Strategy, dataset: tf.data.Dataset):
    """Whole batches per replica (see module docstring).

    Args:
      strategy: the strategy.
      dataset: batched at the per-replica batch size B, with a number of
        batches divisible by the replicas in sync (`sampling.pad_plan`).

    Returns:
      `dataset` itself on one replica, else a distributed dataset whose
      elements give each replica one whole batch.
    """
    if strategy.num_replicas_in_sync == 1:
        return dataset

    def fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        if ctx.num_input_pipelines > 1:
            return dataset.shard(ctx.num_input_pipelines, ctx.input_pipeline_id)
        return dataset

    options = tf.distribute.InputOptions(experimental_fetch_to_device=True)
    return strategy.distribute_datasets_from_function(fn, options)


def cross_replica_step(strategy: tf.distribute.Strategy, replica_step: Callable) -> Callable:
    """The step over all replicas: fn(batch) -> the mean of the replicas' losses.

    Args:
      strategy: the strategy.
      replica_step: fn(images, labels, targets, mask) -> (loss, embeddings),
        run on each replica's batch (e.g. `sst_tf.step.TrainStep`).

    Returns:
      fn(batch), where `batch` is (images, labels, targets, mask) per replica
      (`distribute_batches`); wrap it in `tf.function`.
    """
    def step(batch):
        loss, _ = strategy.run(replica_step, args=batch)
        return strategy.reduce(tf.distribute.ReduceOp.MEAN, loss, axis=None)

    return step


def cross_replica_step_with_embeddings(
    strategy: tf.distribute.Strategy, replica_step: Callable
) -> Callable:
    """`cross_replica_step` that also returns every replica's embeddings.

    Args:
      strategy: the strategy.
      replica_step: fn(images, labels, targets, mask) -> (loss, embeddings).

    Returns:
      fn(batch) with `batch` (images, labels, targets, mask, indices) per
      replica -> (mean loss, embeddings [R*B, d], training indices [R*B], -1
      on padding rows), gathered from all replicas of all workers; wrap it in
      `tf.function`.
    """
    def per_replica(images, labels, targets, mask, indices):
        loss, embeddings = replica_step(images, labels, targets, mask)
        return loss, embeddings, tf.where(mask, indices, tf.constant(-1, indices.dtype))

    def step(batch):
        loss, emb, idx = strategy.run(per_replica, args=batch)
        loss = strategy.reduce(tf.distribute.ReduceOp.MEAN, loss, axis=None)
        if strategy.num_replicas_in_sync > 1:
            emb, idx = strategy.gather(emb, axis=0), strategy.gather(idx, axis=0)
        return loss, emb, idx

    return step


def indexed_eval_batches(
    eval_ds: tf.data.Dataset, n: int, batch_size: int, multiple: int
) -> tf.data.Dataset:
    """(images, index) batches of exactly `batch_size` rows, padded with index -1.

    `eval_ds` yields (images, labels) in split order in batches of
    `batch_size` (the last one may be short); the count of batches is padded
    up to a multiple of `multiple` with all-padding batches.
    """
    num_batches = -(-n // batch_size)
    total = -(-num_batches // multiple) * multiple
    idx = tf.data.Dataset.range(n).batch(batch_size)
    ds = tf.data.Dataset.zip((eval_ds, idx))

    def pad(batch, index):
        images = batch[0]
        short = batch_size - tf.shape(index)[0]
        images = tf.pad(images, [[0, short], [0, 0], [0, 0], [0, 0]])
        index = tf.pad(index, [[0, short]], constant_values=-1)
        return images, index

    ds = ds.map(pad)
    if total > num_batches:
        spec = ds.element_spec[0]
        blank = tf.data.Dataset.from_tensors((
            tf.zeros([batch_size, *spec.shape[1:]], spec.dtype),
            tf.fill([batch_size], tf.constant(-1, tf.int64)),
        )).repeat(total - num_batches)
        ds = ds.concatenate(blank)
    return ds


def distributed_embed(
    strategy: tf.distribute.Strategy,
    embed_fn,
    eval_ds: tf.data.Dataset,
    n: int,
    batch_size: int,
) -> np.ndarray:
    """Embeds a split with every replica, gathered back into split order.

    Args:
      strategy: the strategy (any number of replicas/workers).
      embed_fn: per-replica fn(images) -> [b, d] embeddings.
      eval_ds: (images, labels) batches of `batch_size` in split order.
      n: size of the split.
      batch_size: rows per batch (per replica).

    Returns:
      float32 [n, d], the same on every worker.
    """
    ds = distribute_batches(
        strategy, indexed_eval_batches(eval_ds, n, batch_size, num_shards(strategy)))

    @tf.function
    def step(batch):
        emb, index = strategy.run(lambda images, index: (embed_fn(images), index), args=batch)
        if strategy.num_replicas_in_sync == 1:
            return emb, index
        return strategy.gather(emb, axis=0), strategy.gather(index, axis=0)

    out = None
    for batch in ds:
        emb, index = step(batch)
        emb, index = emb.numpy(), index.numpy()
        if out is None:
            out = np.zeros((n, emb.shape[1]), np.float32)
        keep = index >= 0
        out[index[keep]] = emb[keep]
    if out is None:
        raise ValueError("distributed_embed: the split is empty.")
    return out
