"""Losses of METHOD.md 4, computed densely from the B x B distance matrix.

All losses are pure functions of tensors. A triplet (a, t, i) of a batch is an
anchor `a`, one of its target neighbours `t` (an entry of the [B, k] target
table) and an imposter `i` (a row with another label than `a`). The losses
never build triplet index lists and never gather embedding rows: they use the
[B, B] squared-distance matrix, a [B, k] gather of it (D_at), a [B, k, B]
gather of its rows (D_ti) and boolean masks. This equals the explicit-triplet
definition exactly, in value and gradient.

Conventions shared by all losses:
  * Distances are squared Euclidean on the embeddings as given (no
    normalisation), computed in float32 whatever the input dtype (bfloat16 /
    float16 inputs are cast first) and clamped at 0.
  * `sample_mask` (bool [B], optional) marks padding rows with False: such a
    row is neither anchor, target nor imposter.
  * A target entry is ignored when it is -1 (or any index outside [0, B)),
    points at the anchor itself, at a masked row, or at a row with another
    label. Duplicate entries count as separate triplets.
  * The mean is over triplets: the count is the sum over anchors of
    (#valid targets x #imposters). No triplet -> 0.0 with zero gradients.
"""

from __future__ import annotations

import tensorflow as tf

from sst_tf.neighbors import pairwise_squared_distances


def _static_checks(embeddings, labels, target_neighbors=None, sample_mask=None):
    """Rank and length checks on static shapes (ValueError naming the argument)."""
    es = embeddings.shape
    if es.rank is not None and es.rank != 2:
        raise ValueError(f"embeddings must have rank 2 [B, d], got shape {es}")
    ls = labels.shape
    if ls.rank is not None and ls.rank != 1:
        raise ValueError(f"labels must have rank 1 [B], got shape {ls}")
    b = es[0] if es.rank is not None else None
    if ls.rank is not None and b is not None and ls[0] is not None and ls[0] != b:
        raise ValueError(f"labels has length {ls[0]} but embeddings has {b} rows")
    if target_neighbors is not None:
        ts = target_neighbors.shape
        if ts.rank is not None and ts.rank != 2:
            raise ValueError(f"target_neighbors must have rank 2 [B, k], got shape {ts}")
        if ts.rank is not None and b is not None and ts[0] is not None and ts[0] != b:
            raise ValueError(f"target_neighbors has {ts[0]} rows but embeddings has {b}")
        if not target_neighbors.dtype.is_integer:
            raise ValueError(f"target_neighbors must be integer, got {target_neighbors.dtype}")
    if sample_mask is not None:
        ms = sample_mask.shape
        if ms.rank is not None and ms.rank != 1:
            raise ValueError(f"sample_mask must have rank 1 [B], got shape {ms}")
        if ms.rank is not None and b is not None and ms[0] is not None and ms[0] != b:
            raise ValueError(f"sample_mask has length {ms[0]} but embeddings has {b} rows")


def _prepare(embeddings, labels, target_neighbors, sample_mask):
    embeddings = tf.convert_to_tensor(embeddings)
    labels = tf.convert_to_tensor(labels)
    if target_neighbors is not None:
        target_neighbors = tf.convert_to_tensor(target_neighbors)
    if sample_mask is not None:
        sample_mask = tf.convert_to_tensor(sample_mask)
    _static_checks(embeddings, labels, target_neighbors, sample_mask)
    x = tf.cast(embeddings, tf.float32)
    b = tf.shape(x)[0]
    if sample_mask is None:
        mask = tf.ones([b], tf.bool)
    else:
        mask = tf.cast(sample_mask, tf.bool)
    return x, labels, target_neighbors, mask


def _triplet_terms(x, labels, target_neighbors, mask):
    """Distance pieces and masks of all triplets of the batch.

    Returns:
      d: [B, B] squared distances.
      d_at: [B, k] anchor-target distances (0 where the target is invalid).
      d_ti: [B, k, B] target-to-everyone distances (rows of d).
      valid: [B, k, B] bool, True exactly at the triplets (a, t_j, i).
      count: float32 scalar, number of triplets.
    """
    d = pairwise_squared_distances(x)
    b = tf.shape(x)[0]
    t = tf.cast(target_neighbors, tf.int32)
    in_range = tf.logical_and(t >= 0, t < b)
    t_safe = tf.where(in_range, t, 0)
    same = tf.equal(labels[:, None], labels[None, :])  # [B, B]
    t_ok = (
        in_range
        & tf.gather(mask, t_safe)
        & mask[:, None]
        & tf.not_equal(t_safe, tf.range(b)[:, None])
        & tf.gather(same, t_safe, batch_dims=1)
    )  # [B, k]
    imposter = tf.logical_not(same) & mask[:, None] & mask[None, :]  # [B, B]
    valid = t_ok[:, :, None] & imposter[:, None, :]  # [B, k, B]
    d_at = tf.gather(d, t_safe, batch_dims=1)  # [B, k]
    d_ti = tf.gather(d, t_safe)  # [B, k, B]
    count = tf.reduce_sum(tf.cast(valid, tf.float32))
    return d, d_at, d_ti, valid, count


def _masked_mean(values, valid, count):
    total = tf.reduce_sum(tf.where(valid, values, tf.zeros_like(values)))
    return tf.math.divide_no_nan(total, count)


def sst_loss(embeddings, labels, target_neighbors, sample_mask=None) -> tf.Tensor:
    """Stochastic symmetric triplet loss (METHOD.md 4).

    Mean over all triplets (a, t, i) of softplus(D_at - (D_ai + D_ti) / 2).

    Args:
      embeddings: [B, d] float tensor (any float dtype; computed in float32).
      labels: [B] labels (any dtype supporting equality).
      target_neighbors: [B, k] int table of batch indices, -1 where none.
      sample_mask: optional [B] bool, False on padding rows.

    Returns:
      Scalar float32 tensor; 0.0 (with zero gradients) if there is no triplet.
    """
    x, labels, t, mask = _prepare(embeddings, labels, target_neighbors, sample_mask)
    d, d_at, d_ti, valid, count = _triplet_terms(x, labels, t, mask)
    z = d_at[:, :, None] - 0.5 * (d[:, None, :] + d_ti)
    return _masked_mean(tf.math.softplus(z), valid, count)


def triplet_loss(
    embeddings, labels, target_neighbors, margin: float = 0.2, sample_mask=None
) -> tf.Tensor:
    """LMNN-style triplet baseline: mean over triplets of max(0, D_at + margin - D_ai).

    Same triplets and arguments as `sst_loss`; `margin` defaults to 0.2.

    Returns:
      Scalar float32 tensor; 0.0 (with zero gradients) if there is no triplet.
    """
    x, labels, t, mask = _prepare(embeddings, labels, target_neighbors, sample_mask)
    d, d_at, _, valid, count = _triplet_terms(x, labels, t, mask)
    z = tf.nn.relu(d_at[:, :, None] + margin - d[:, None, :])  # [B, k, B]
    return _masked_mean(z, valid, count)


def contrastive_loss(embeddings, labels, margin: float = 0.5, sample_mask=None) -> tf.Tensor:
    """Contrastive baseline of the original code (METHOD.md 4).

    Over all ordered pairs (x, y) of unmasked rows, self-pairs included:
    D_xy if the labels agree, else max(0, margin - D_xy); summed per row and
    averaged over the unmasked rows.

    Args:
      embeddings: [B, d] float tensor (computed in float32).
      labels: [B] labels.
      margin: margin on the squared distance for different-label pairs.
      sample_mask: optional [B] bool, False on padding rows.

    Returns:
      Scalar float32 tensor; 0.0 (with zero gradients) if no row is unmasked.
    """
    x, labels, _, mask = _prepare(embeddings, labels, None, sample_mask)
    d = pairwise_squared_distances(x)
    same = tf.equal(labels[:, None], labels[None, :])
    pair_ok = mask[:, None] & mask[None, :]
    per_pair = tf.where(same, d, tf.nn.relu(margin - d))
    total = tf.reduce_sum(tf.where(pair_ok, per_pair, tf.zeros_like(per_pair)))
    return tf.math.divide_no_nan(total, tf.reduce_sum(tf.cast(mask, tf.float32)))
