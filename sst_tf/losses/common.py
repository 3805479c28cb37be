"""What every loss of `sst_tf.losses` shares: input checks, compute dtype, per-replica scaling.

Every loss function converts and checks its inputs with `check_inputs` (a
ValueError names the argument at fault), computes in float32 (`compute_float`),
and reduces with `sst_tf.losses.reductions`; `per_replica` divides a batch
loss by the replicas in sync for the Keras classes.
"""

from __future__ import annotations

import tensorflow as tf


def _check_inputs(embeddings, labels, sample_mask=None, target_neighbors=None, *,
                  embeddings_name: str = "embeddings", keep_float64: bool = False):
    """Converts and checks the inputs of every loss of the module.

    Static shapes are checked where known (a ValueError names the argument at
    fault): `embeddings` floating point [B, d], `labels` [B], `target_neighbors`
    integer [B, k], `sample_mask` [B].

    Args:
      embeddings: [B, d] float input (any float dtype).
      labels: [B] labels.
      sample_mask: optional [B] bool (or 0/1), False on padding rows.
      target_neighbors: optional [B, k] int table of batch indices.
      embeddings_name: what the messages call `embeddings` (`npairs_loss`
        passes its similarity matrix here).
      keep_float64: compute float64 input in float64 (tensorflow-addons' ports);
        every other float dtype, and float64 otherwise, is cast to float32.

    Returns:
      (embeddings, labels, mask, target_neighbors): embeddings in the compute
      dtype, labels and target_neighbors as tensors (the latter None if not
      given), mask bool [B] (all True without `sample_mask`).
    """
    x = tf.convert_to_tensor(embeddings)
    labels = tf.convert_to_tensor(labels)
    es, ls = x.shape, labels.shape
    if es.rank is not None and es.rank != 2:
        raise ValueError(f"{embeddings_name} must have rank 2 [B, d], got shape {es}")
    x = _compute_float(x, embeddings_name, keep_float64)
    b = es[0] if es.rank is not None else None

    def check_rows(name, shape, rank, layout, size_word):
        if shape.rank is not None and shape.rank != rank:
            raise ValueError(f"{name} must have rank {rank} {layout}, got shape {shape}")
        if shape.rank is not None and b is not None and shape[0] is not None and shape[0] != b:
            raise ValueError(
                f"{name} has {size_word} {shape[0]} but {embeddings_name} has {b} rows")

    check_rows("labels", ls, 1, "[B]", "length")
    if target_neighbors is not None:
        target_neighbors = tf.convert_to_tensor(target_neighbors)
        check_rows("target_neighbors", target_neighbors.shape, 2, "[B, k]", "rows")
        if not target_neighbors.dtype.is_integer:
            raise ValueError(f"target_neighbors must be integer, got {target_neighbors.dtype}")
        if tf.executing_eagerly() and tf.size(target_neighbors) > 0:
            # Graph mode (the trainer's step) takes tables the sampler built.
            rows = int(tf.shape(x)[0])
            low = int(tf.reduce_min(target_neighbors))
            high = int(tf.reduce_max(target_neighbors))
            if low < -1 or high >= rows:
                raise ValueError(
                    f"target_neighbors must hold batch row indices in [0, {rows}) or -1 "
                    f"(none), got values from {low} to {high}")
    if sample_mask is None:
        mask = tf.ones(tf.shape(x)[:1], tf.bool)
    else:
        mask = tf.cast(tf.convert_to_tensor(sample_mask), tf.bool)
        check_rows("sample_mask", mask.shape, 1, "[B]", "length")
    return x, labels, mask, target_neighbors


def _compute_float(x: tf.Tensor, name: str, keep_float64: bool) -> tf.Tensor:
    """`x` cast to float32 (float64 kept when `keep_float64`); ValueError if not float."""
    if not x.dtype.is_floating:
        raise ValueError(f"{name} must be floating point, got {x.dtype}")
    if keep_float64 and x.dtype == tf.float64:
        return x
    return tf.cast(x, tf.float32)


def per_replica(loss: tf.Tensor) -> tf.Tensor:
    """Divides a batch loss by the replicas in sync, as Keras expects of a loss.

    Keras sums the replicas' gradients and divides the losses it reduces itself
    by the replicas; a loss that returns one number (`reduction="none"`) must
    do that division itself, or `fit` under a strategy steps R times too far.
    """
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if replicas > 1:
        loss = loss * (1.0 / replicas)
    return loss


def class_rows(class_ids: tf.Tensor, labels) -> tf.Tensor:
    """Row of each label in sorted `class_ids` (int64 [C]): int32 [B], -1 where it has none.

    How the losses that own per-class weights (proxies, class weights) find
    a label's row.
    """
    labels = tf.cast(labels, tf.int64)
    pos = tf.minimum(tf.searchsorted(class_ids, labels), tf.shape(class_ids)[0] - 1)
    found = tf.equal(tf.gather(class_ids, pos), labels)
    return tf.where(found, tf.cast(pos, tf.int32), -1)
