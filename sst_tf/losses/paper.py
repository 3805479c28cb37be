"""The paper's losses: SST, the triplet and the contrastive baselines (docs/method.md#losses).

A triplet (a, t, i) of a batch is an anchor `a`, one of its target neighbours
`t` (an entry of the [B, k] target table) and an imposter `i` (a row with
another label than `a`). The losses never build triplet index lists and never
gather embedding rows: they use the [B, B] squared-distance matrix, a [B, k]
gather of it (D_at), a [B, k, B] gather of its rows (D_ti) and boolean masks.
This equals the explicit-triplet definition exactly, in value and gradient.

  * Distances are squared Euclidean on the embeddings as given (no
    normalisation), computed in float32 whatever the input dtype (bfloat16 /
    float16 inputs are cast first) and clamped at 0.
  * `sample_mask` (bool [B], optional) marks padding rows with False: such a
    row is neither anchor, target nor imposter.
  * A target entry is ignored when it is -1, points at the anchor itself,
    at a masked row, or at a row with another label; an index outside
    [-1, B) is a ValueError (checked on concrete tables). Duplicate entries
    count as separate triplets.
  * The mean is over triplets: the count is the sum over anchors of
    (#valid targets x #imposters). No triplet -> 0.0 with zero gradients.
"""

from __future__ import annotations

import tensorflow as tf

from sst_tf.config import SST_IMPOSTERS
from sst_tf.losses import distances, reductions
from sst_tf.losses.common import _check_inputs
from sst_tf.losses.reference import reference_set


def _triplet_terms(x, labels, target_neighbors, mask, r=None, r_labels=None, r_mask=None):
    """Distance pieces and masks of all triplets of the batch.

    Targets are rows of the batch; imposters are rows of the batch, or of the
    reference set `r` (labels `r_labels`, mask `r_mask`) when given.

    Returns:
      d: [B, R] squared distances from the anchors to the imposter candidates
        (R = B without `r`: the batch's own [B, B] matrix).
      d_at: [B, k] anchor-target distances (0 where the target is invalid).
      d_ti: [B, k, R] target-to-candidate distances (rows of d).
      valid: [B, k, R] bool, True exactly at the triplets (a, t_j, i).
      count: float32 scalar, number of triplets.
    """
    d_batch = distances.squared_euclidean(x)
    d = d_batch if r is None else distances.squared_euclidean(x, r)
    if r is None:
        r_labels, r_mask = labels, mask
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
    imposter = (~tf.equal(labels[:, None], r_labels[None, :])
                & mask[:, None] & r_mask[None, :])  # [B, R]
    valid = t_ok[:, :, None] & imposter[:, None, :]  # [B, k, R]
    d_at = tf.gather(d_batch, t_safe, batch_dims=1)  # [B, k]
    d_ti = tf.gather(d, t_safe)  # [B, k, R]
    count = tf.reduce_sum(tf.cast(valid, tf.float32))
    return d, d_at, d_ti, valid, count


def sst_loss(
    embeddings,
    labels,
    target_neighbors,
    sample_mask=None,
    *,
    scale: float = 1.0,
    imposters: str = "mean",
    ref_embeddings=None,
    ref_labels=None,
    ref_mask=None,
) -> tf.Tensor:
    """Stochastic symmetric triplet loss (docs/method.md#losses) and two options.

    With z = D_at - (D_ai + D_ti) / 2 for a triplet (a, t, i), the argument
    defaults (`scale=1`, `imposters="mean"`) are the paper's loss: the mean
    over all triplets of softplus(z). `--loss=sst` and `make_loss("sst")`
    train the registry's form instead (`sst_tf.loss_registry`: on unit
    vectors a larger scale and the softmax over imposters).

    Options (for L2-normalised embeddings, where D <= 4 and softplus(z) alone
    cannot get below softplus(-4)):
      * `scale` s: softplus(s * z), a temperature on the margin variable.
      * `imposters="softmax"`: per (anchor, target) pair,
        log(1 + sum_i exp(s * z_ati)) (the softplus of a log-sum-exp over the
        pair's imposters), averaged over pairs with at least one imposter. Each
        imposter's gradient weight is then exp(s z_i) / (1 + sum_j exp(s z_j)),
        so the few imposters that come close to a pair dominate its gradient
        instead of being averaged with the many far ones.

    Args:
      embeddings: [B, d] float tensor (any float dtype; computed in float32).
      labels: [B] labels (any dtype supporting equality).
      target_neighbors: [B, k] int table of batch indices, -1 where none.
      sample_mask: optional [B] bool, False on padding rows.
      scale: s > 0, multiplies z inside the softplus.
      imposters: "mean" (over all triplets) or "softmax" (see above).
      ref_embeddings: optional [R, d] imposter candidates instead of the
        batch (e.g. a cross-batch memory); targets stay rows of the batch.
      ref_labels: [R] their labels (with `ref_embeddings`).
      ref_mask: optional [R] bool, False on their padding rows.

    Returns:
      Scalar float32 tensor; 0.0 (with zero gradients) if there is no triplet.

    Raises:
      ValueError: `scale` not positive or `imposters` unknown.
    """
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale!r}")
    if imposters not in SST_IMPOSTERS:
        raise ValueError(f"imposters must be one of {SST_IMPOSTERS}, got {imposters!r}")
    x, labels, mask, t = _check_inputs(embeddings, labels, sample_mask, target_neighbors)
    d, d_at, d_ti, valid, count = _triplet_terms(
        x, labels, t, mask, *reference_set(x, labels, mask, ref_embeddings, ref_labels, ref_mask))
    z = scale * (d_at[:, :, None] - 0.5 * (d[:, None, :] + d_ti))  # [B, k, R]
    if imposters == "mean":
        return reductions.masked_mean(tf.math.softplus(z), valid, count)
    # log(1 + sum_i exp(z_i)) per (a, t) = softplus(logsumexp_i z_i), through the
    # shared masked log-sum-exp (the argument is masked, so no inf reaches a gradient).
    per_pair = tf.math.softplus(reductions.masked_logsumexp(z, valid, axis=-1))  # [B, k]
    pair_ok = tf.reduce_any(valid, axis=-1)
    return reductions.masked_mean(per_pair, pair_ok, tf.reduce_sum(tf.cast(pair_ok, tf.float32)))


def triplet_loss(
    embeddings, labels, target_neighbors, margin: float = 0.2, sample_mask=None, *,
    ref_embeddings=None, ref_labels=None, ref_mask=None,
) -> tf.Tensor:
    """LMNN-style triplet baseline: mean over triplets of max(0, D_at + margin - D_ai).

    Same triplets and arguments as `sst_tf.losses.sst_loss` (imposters from
    `ref_embeddings` when given); `margin` defaults to the SST paper's 0.2
    (`--loss=triplet` and `make_loss("triplet")` use the registry's margin).

    Returns:
      Scalar float32 tensor; 0.0 (with zero gradients) if there is no triplet.
    """
    x, labels, mask, t = _check_inputs(embeddings, labels, sample_mask, target_neighbors)
    d, d_at, _, valid, count = _triplet_terms(
        x, labels, t, mask, *reference_set(x, labels, mask, ref_embeddings, ref_labels, ref_mask))
    z = tf.nn.relu(d_at[:, :, None] + margin - d[:, None, :])  # [B, k, R]
    return reductions.masked_mean(z, valid, count)


def contrastive_loss(embeddings, labels, margin: float = 0.5, sample_mask=None, *,
                     ref_embeddings=None, ref_labels=None, ref_mask=None) -> tf.Tensor:
    """Contrastive baseline of the original code (docs/method.md#losses).

    Over all ordered pairs (x, y) of unmasked rows, self-pairs included:
    D_xy if the labels agree, else max(0, margin - D_xy); summed per row and
    averaged over the unmasked rows.

    Args:
      embeddings: [B, d] float tensor (computed in float32).
      labels: [B] labels.
      margin: margin on the squared distance for different-label pairs.
      sample_mask: optional [B] bool, False on padding rows.
      ref_embeddings: optional [R, d] reference set: the anchors (the rows of
        `embeddings`) are paired with its rows instead of the batch's (e.g.
        the global batch of all replicas, which must then contain the anchors
        themselves, so that self-pairs count as in the batch form).
      ref_labels: [R] labels of the reference set (with `ref_embeddings`).
      ref_mask: optional [R] bool, False on the reference set's padding rows.

    Returns:
      Scalar float32 tensor; 0.0 (with zero gradients) if no row is unmasked.
    """
    total, count = contrastive_parts(embeddings, labels, margin, sample_mask,
                                     ref_embeddings=ref_embeddings, ref_labels=ref_labels,
                                     ref_mask=ref_mask)
    return tf.math.divide_no_nan(total, count)


def contrastive_parts(embeddings, labels, margin: float = 0.5, sample_mask=None, *,
                      ref_embeddings=None, ref_labels=None, ref_mask=None):
    """(sum over the anchors' pair terms, number of anchors) of `contrastive_loss`.

    The sum decomposes over anchors: splitting a batch into parts, each
    paired with the whole batch as reference set, the parts' totals and counts
    add up to the whole batch's.
    """
    x, labels, mask, _ = _check_inputs(embeddings, labels, sample_mask)
    r, ref_labels, ref_mask = reference_set(x, labels, mask, ref_embeddings, ref_labels, ref_mask)
    d = distances.squared_euclidean(x) if r is None else distances.squared_euclidean(x, r)
    same = tf.equal(labels[:, None], ref_labels[None, :])
    pair_ok = mask[:, None] & ref_mask[None, :]
    per_pair = tf.where(same, d, tf.nn.relu(margin - d))
    total = tf.reduce_sum(tf.where(pair_ok, per_pair, tf.zeros_like(per_pair)))
    return total, tf.reduce_sum(tf.cast(mask, tf.float32))
