"""Negatives beyond one replica's batch: the global batch, and a cross-batch memory.

Global negatives (`--global_negatives`, `global_negatives(loss_fn)`): under a
strategy with R replicas of batch B, every replica all-gathers the embeddings,
labels, masks and target tables of all replicas and computes the loss of the
global batch of R x B rows, exactly as one device computes it on the
concatenated batch. Each replica's target table is shifted to its rows of the
global batch, so targets stay inside the replica's own neighbourhood (one
neighbourhood per replica, as the sampler planned it), while every row of the
other replicas' neighbourhoods with another label is an imposter (SST,
triplet) or a negative (the pair losses). The step divides the loss by R and
sums the replicas' gradients; the gradient of `all_gather` sums the replicas'
upstream gradients before handing each replica its slice, so the update is the
one device's on the concatenated batch. Every loss supports it. Each replica
evaluates the loss on the whole global batch: O((R B)^2) per replica, small
next to the backbone for the replica counts of one machine.

Cross-batch memory (`--memory_size`, `CrossBatchMemory`, `with_memory`; Wang et
al., "Cross-Batch Memory for Embedding Learning", CVPR 2020): a queue of the
last M embeddings (detached) and labels of the global batch, the same on every
replica. After `warmup_steps` steps every step enqueues the global batch (its
real rows, and only after a finite step); the loss of a step is

    loss(batch) + weight x loss(anchors = the replica's batch,
                                reference = the batch, detached, + the memory)

with the losses' reference-set forms (`sst_tf.losses.make_reference_loss`):
rows of the memory with the anchor's label are positives, the others
negatives (imposters for SST and triplet, whose targets stay in the batch).
The queue is part of the checkpoint, so a resumed run continues with the
memory it had.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

__all__ = ["CrossBatchMemory", "gather_global_batch", "global_negatives", "with_memory"]


def _replicas() -> tuple[tf.distribute.ReplicaContext | None, int]:
    ctx = tf.distribute.get_replica_context()
    return ctx, (1 if ctx is None else ctx.num_replicas_in_sync)


def gather_global_batch(embeddings, labels, targets, mask):
    """Every replica's (embeddings, labels, targets, mask), concatenated in replica order.

    Called in replica context; on one replica the inputs are returned as they
    are. Target indices are shifted to the global rows of this replica's batch
    (-1 stays -1, and so does an index outside the batch). The embeddings are
    gathered in float32, with gradients (see the module docstring).

    Args:
      embeddings: [B, d] this replica's embeddings.
      labels: [B] labels.
      targets: [B, k] batch-local target indices, -1 where none.
      mask: [B] bool, False on padding rows.

    Returns:
      (embeddings [R*B, d] float32, labels [R*B], targets [R*B, k] int32, mask [R*B] bool).
    """
    ctx, replicas = _replicas()
    if replicas == 1:
        return embeddings, labels, targets, mask
    b = tf.shape(embeddings)[0]
    offset = tf.cast(ctx.replica_id_in_sync_group, tf.int32) * b
    t = tf.cast(targets, tf.int32)
    t = tf.where((t >= 0) & (t < b), t + offset, -tf.ones_like(t))
    e = ctx.all_gather(tf.cast(embeddings, tf.float32), axis=0)
    y = ctx.all_gather(labels, axis=0)
    t = ctx.all_gather(t, axis=0)
    m = tf.cast(ctx.all_gather(tf.cast(mask, tf.int32), axis=0), tf.bool)
    return e, y, t, m


def global_negatives(loss_fn: Callable) -> Callable:
    """`loss_fn` (fn(embeddings, labels, targets, mask) -> scalar) on the global batch.

    The returned function takes one replica's batch and returns the loss of
    all replicas' batches together: the same value on every replica.
    """
    def fn(embeddings, labels, targets, mask):
        return loss_fn(*gather_global_batch(embeddings, labels, targets, mask))

    return fn


class CrossBatchMemory(tf.Module):
    """A queue of the last `size` detached embeddings and labels (see module docstring).

    Create it inside the strategy's scope: its variables are mirrored, every
    replica holds the same queue (it is filled with the all-gathered global
    batch). Put it into the run's checkpoint.
    """

    def __init__(self, size: int, embedding_dim: int, warmup_steps: int = 0,
                 name: str = "cross_batch_memory"):
        """Creates an empty memory.

        Args:
          size: M, the rows the queue holds (>= 1).
          embedding_dim: d of the embeddings.
          warmup_steps: steps before the first batch is enqueued (the memory
            stays empty, so its loss term is 0, while the embedding drifts fast).
          name: module name.
        """
        super().__init__(name=name)
        if size < 1:
            raise ValueError(f"memory size must be >= 1, got {size}")
        if warmup_steps < 0:
            raise ValueError(f"memory warm-up steps must be >= 0, got {warmup_steps}")
        self.size, self.warmup_steps = int(size), int(warmup_steps)
        first = tf.VariableAggregation.ONLY_FIRST_REPLICA  # every replica holds the same value
        self.embeddings = tf.Variable(tf.zeros([size, embedding_dim], tf.float32),
                                      trainable=False, aggregation=first, name="embeddings")
        self.labels = tf.Variable(tf.zeros([size], tf.int64), trainable=False,
                                  aggregation=first, name="labels")
        self.valid = tf.Variable(tf.zeros([size], tf.int32), trainable=False,
                                 aggregation=first, name="valid")
        self.steps = tf.Variable(0, dtype=tf.int64, trainable=False, aggregation=first,
                                 name="steps")

    def reference(self) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """(embeddings [M, d], labels [M] int64, mask [M] bool) of the queue, newest first."""
        return (tf.convert_to_tensor(self.embeddings), tf.convert_to_tensor(self.labels),
                tf.convert_to_tensor(self.valid) > 0)

    def filled(self) -> int:
        """Valid rows in the queue (eager)."""
        return int(tf.reduce_sum(self.valid))

    def update(self, embeddings, labels, mask, finite=True) -> None:
        """Enqueues the global batch of this step (call in replica context, after the step).

        Args:
          embeddings: [B, d] this replica's embeddings (gathered over replicas here).
          labels: [B] labels.
          mask: [B] bool, False on padding rows (never enqueued as valid).
          finite: scalar bool, the step's finiteness decision: a skipped step's
            rows enter as invalid (zeros), so a NaN never reaches the memory.
        """
        ctx, replicas = _replicas()
        e = tf.stop_gradient(tf.cast(embeddings, tf.float32))
        y = tf.cast(labels, tf.int64)
        m = tf.cast(mask, tf.int32)
        if replicas > 1:
            e, y, m = (ctx.all_gather(v, axis=0) for v in (e, y, m))
        keep = tf.logical_and(tf.convert_to_tensor(finite), self.steps >= self.warmup_steps)
        e = tf.where(keep, e, tf.zeros_like(e))
        m = tf.where(keep, m, tf.zeros_like(m))
        self.embeddings.assign(tf.concat([e, self.embeddings], 0)[:self.size])
        self.labels.assign(tf.concat([y, self.labels], 0)[:self.size])
        self.valid.assign(tf.concat([m, self.valid], 0)[:self.size])
        self.steps.assign_add(1)


def with_memory(loss_fn: Callable, reference_loss_fn: Callable, memory: CrossBatchMemory,
                weight: float = 1.0) -> Callable:
    """fn(embeddings, labels, targets, mask): `loss_fn` plus `weight` x the memory's term.

    Args:
      loss_fn: fn(embeddings, labels, targets, mask) -> scalar, the batch loss
        (e.g. `global_negatives(...)`).
      reference_loss_fn: the same loss's reference form,
        fn(embeddings, labels, targets, mask, ref_embeddings, ref_labels,
        ref_mask, ref_offset) (`sst_tf.losses.make_reference_loss`).
      memory: the queue.
      weight: factor of the memory term.

    Returns:
      The step's loss function (reads the memory; `memory.update` writes it).
      While the queue is empty (warm-up) it is `loss_fn` alone.
    """
    def fn(embeddings, labels, targets, mask):
        base = loss_fn(embeddings, labels, targets, mask)
        mem_e, mem_y, mem_m = memory.reference()
        e = tf.cast(embeddings, tf.float32)
        ref_e = tf.concat([tf.stop_gradient(e), mem_e], 0)
        ref_y = tf.concat([tf.cast(labels, tf.int64), mem_y], 0)
        ref_m = tf.concat([tf.cast(mask, tf.bool), mem_m], 0)
        extra = reference_loss_fn(e, labels, targets, mask, ref_e, ref_y, ref_m, 0)
        # An empty queue (warm-up) adds nothing: not the batch against itself once more.
        filled = tf.cast(tf.reduce_any(mem_m), extra.dtype)
        return base + weight * filled * extra

    return fn
