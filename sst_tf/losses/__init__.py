"""Every loss of the project: pure functions of tensors, Keras forms, losses by name.

The package (`from sst_tf import losses`; every loss is `losses.NAME`):
  * `common`: input checks, the compute dtype, masked reductions.
  * `classification`: ArcFace, CosFace, Sub-center ArcFace and their layer
    `MarginSoftmax` (class weights the loss owns).
  * `softmax_contrastive`: SupCon, NT-Xent / InfoNCE and Circle loss.
  * this module: the paper's losses (below), tensorflow-addons' losses,
    Multi-Similarity, Proxy-Anchor, and `make_loss` / `make_reference_loss`
    (a loss by its `--loss` name, with the defaults of `sst_tf.loss_registry`).

The paper's losses (docs/method.md#losses) are computed densely from the
B x B distance matrix.

All losses are pure functions of tensors. A triplet (a, t, i) of a batch is an
anchor `a`, one of its target neighbours `t` (an entry of the [B, k] target
table) and an imposter `i` (a row with another label than `a`). The losses
never build triplet index lists and never gather embedding rows: they use the
[B, B] squared-distance matrix, a [B, k] gather of it (D_at), a [B, k, B]
gather of its rows (D_ti) and boolean masks. This equals the explicit-triplet
definition exactly, in value and gradient.

Conventions shared by all losses:
  * Every loss function takes `(embeddings, labels, ..., sample_mask=None)`;
    the raw tensorflow-addons forms `npairs_loss` and
    `pairwise_contrastive_loss` take a similarity matrix or pair distances in
    place of the embeddings, and no mask. Only the Keras `Loss` classes follow
    Keras' `(y_true, y_pred)`. `_check_inputs` checks and converts the inputs
    of every loss.
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

Baselines follow at the end of the module, with their own definitions:
tensorflow-addons' metric-learning losses (`triplet_semihard_loss`,
`triplet_hard_loss`, `lifted_struct_loss`, `npairs_loss`,
`pairwise_contrastive_loss` and their Keras `Loss` classes), batch forms of
the last two, `multi_similarity_loss` and `proxy_anchor_loss` (`ProxyAnchor`
owns the proxies).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import keras
import numpy as np
import tensorflow as tf

from sst_tf import loss_registry
from sst_tf.config import SST_IMPOSTERS
from sst_tf.losses.classification import (  # noqa: F401 - re-exported: sst_tf.losses.X
    MarginSoftmax,
    arcface_loss,
    cosface_loss,
    subcenter_arcface_loss,
)
from sst_tf.losses.common import (
    _check_inputs,
    _compute_float,
    _masked_logsumexp,
    _masked_mean,
    class_rows,
    per_replica,
)
from sst_tf.losses.softmax_contrastive import circle_loss, ntxent_loss, supcon_loss
from sst_tf.neighbors import pairwise_squared_distances


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
    d_batch = pairwise_squared_distances(x)
    d = d_batch if r is None else pairwise_squared_distances(x, r)
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
        x, labels, t, mask, *_reference(x, labels, mask, ref_embeddings, ref_labels, ref_mask))
    z = scale * (d_at[:, :, None] - 0.5 * (d[:, None, :] + d_ti))  # [B, k, R]
    if imposters == "mean":
        return _masked_mean(tf.math.softplus(z), valid, count)
    # log(1 + sum_i exp(z_i)) per (a, t) = softplus(logsumexp_i z_i), through the
    # shared masked log-sum-exp (the argument is masked, so no inf reaches a gradient).
    per_pair = tf.math.softplus(_masked_logsumexp(z, valid, axis=-1))  # [B, k]
    pair_ok = tf.reduce_any(valid, axis=-1)
    return _masked_mean(per_pair, pair_ok, tf.reduce_sum(tf.cast(pair_ok, tf.float32)))


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
        x, labels, t, mask, *_reference(x, labels, mask, ref_embeddings, ref_labels, ref_mask))
    z = tf.nn.relu(d_at[:, :, None] + margin - d[:, None, :])  # [B, k, R]
    return _masked_mean(z, valid, count)


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
    r, ref_labels, ref_mask = _reference(x, labels, mask, ref_embeddings, ref_labels, ref_mask)
    d = pairwise_squared_distances(x) if r is None else pairwise_squared_distances(x, r)
    same = tf.equal(labels[:, None], ref_labels[None, :])
    pair_ok = mask[:, None] & ref_mask[None, :]
    per_pair = tf.where(same, d, tf.nn.relu(margin - d))
    total = tf.reduce_sum(tf.where(pair_ok, per_pair, tf.zeros_like(per_pair)))
    return total, tf.reduce_sum(tf.cast(mask, tf.float32))


def _reference(x, labels, mask, ref_embeddings, ref_labels, ref_mask):
    """The reference set (candidates) of a loss: (r or None, labels, mask).

    Without `ref_embeddings` the batch is its own reference set (r None, so the
    callers keep their batch-only computation bit for bit).
    """
    if ref_embeddings is None:
        if ref_labels is not None or ref_mask is not None:
            raise ValueError("ref_labels / ref_mask need ref_embeddings")
        return None, labels, mask
    if ref_labels is None:
        raise ValueError("ref_embeddings needs ref_labels")
    r, ref_labels, ref_mask, _ = _check_inputs(ref_embeddings, ref_labels, ref_mask,
                                               embeddings_name="ref_embeddings")
    if r.shape[1] is not None and x.shape[1] is not None and r.shape[1] != x.shape[1]:
        raise ValueError(
            f"ref_embeddings have dimension {r.shape[1]} but embeddings have {x.shape[1]}")
    return r, tf.cast(ref_labels, labels.dtype), ref_mask


# ---------------------------------------------------------------------------
# tensorflow-addons-compatible losses (definitions of tensorflow-addons 0.23)
# ---------------------------------------------------------------------------
# tensorflow-addons reached end of life with TF 2.15; these re-implement its
# metric-learning losses for Keras 3 with the same definitions and defaults,
# checked against golden values recorded with tensorflow-addons 0.23
# (tests/test_tfa_parity.py, scripts/make_tfa_fixtures.py). Differences from
# tensorflow-addons:
#   * the functions take (embeddings, labels, ...) like every loss of this
#     module (tfa: labels first); the Keras `Loss` classes keep Keras'
#     `(y_true, y_pred)` order, so `model.compile(loss=TfaTripletSemiHardLoss())`
#     code ports unchanged;
#   * labels are [B] (tfa also took [B, 1]; the Keras classes still flatten
#     `y_true`);
#   * a batch with no valid pair returns 0.0 with zero gradients (tfa: NaN);
#   * float16/bfloat16 inputs are computed and returned in float32 (float64
#     stays float64, as in tfa);
#   * every function takes an optional `sample_mask` (bool [B]): False rows are
#     padding and take no part in the loss (tfa had none).


def _tfa_pairwise_distance(x: tf.Tensor, squared: bool = False, r: tf.Tensor | None = None,
                           ref_offset=None) -> tf.Tensor:
    """Pairwise (squared) Euclidean distances as tensorflow-addons computes them.

    Squared distances come from the Gram matrix and are clamped at 0; the square
    root is only taken of positive entries (zero entries keep a zero gradient);
    the diagonal is exactly 0.

    Args:
      x: [B, d] float tensor.
      squared: return squared distances instead of distances.
      r: optional [R, d] reference rows: distances from x's rows to them.
      ref_offset: with `r`, row i of x is row `ref_offset + i` of r (that
        entry is exactly 0, as the diagonal); None: x is not in r.

    Returns:
      [B, B] (or [B, R]) distance matrix.
    """
    y = x if r is None else r
    sq_x = tf.reduce_sum(tf.square(x), axis=1)
    sq_y = sq_x if r is None else tf.reduce_sum(tf.square(y), axis=1)
    d2 = sq_x[:, None] + sq_y[None, :] - 2.0 * tf.matmul(x, y, transpose_b=True)
    d2 = tf.maximum(d2, 0.0)
    if squared:
        d = d2
    else:
        zero = d2 <= 0.0
        d = tf.where(zero, tf.zeros_like(d2), tf.sqrt(tf.where(zero, tf.ones_like(d2), d2)))
    if r is None:
        return d * (1.0 - tf.eye(tf.shape(x)[0], dtype=d.dtype))
    if ref_offset is None:
        return d
    return tf.where(_self_columns(tf.shape(x)[0], tf.shape(r)[0], ref_offset),
                    tf.zeros_like(d), d)


def _self_columns(b, n, ref_offset) -> tf.Tensor:
    """[b, n] bool: True at (i, ref_offset + i), where anchor i sits in the reference set."""
    rows = tf.cast(ref_offset, tf.int32) + tf.range(b)[:, None]
    return tf.equal(tf.range(n)[None, :], rows)


def _tfa_angular_distance(x: tf.Tensor, r: tf.Tensor | None = None) -> tf.Tensor:
    """1 - cosine similarity of the rows (to the rows of `r`), clamped at 0 (tfa's form)."""
    x = tf.math.l2_normalize(x, axis=1)
    y = x if r is None else tf.math.l2_normalize(r, axis=1)
    return tf.maximum(1.0 - tf.matmul(x, y, transpose_b=True), 0.0)


def _distance_matrix(x: tf.Tensor, distance_metric, r: tf.Tensor | None = None,
                     ref_offset=None) -> tf.Tensor:
    if callable(distance_metric):
        if r is not None:
            raise ValueError("a callable distance_metric maps one batch to its [B, B] "
                             "matrix; with a reference set give 'L2', 'squared-L2' or "
                             "'angular'")
        return tf.cast(distance_metric(x), x.dtype)
    if distance_metric == "L2":
        return _tfa_pairwise_distance(x, squared=False, r=r, ref_offset=ref_offset)
    if distance_metric == "squared-L2":
        return _tfa_pairwise_distance(x, squared=True, r=r, ref_offset=ref_offset)
    if distance_metric == "angular":
        return _tfa_angular_distance(x, r)
    raise ValueError(
        "distance_metric must be 'L2', 'squared-L2', 'angular' or a callable, "
        f"got {distance_metric!r}"
    )


def _pair_masks(labels: tf.Tensor, mask: tf.Tensor, ref_labels: tf.Tensor | None = None,
                ref_mask: tf.Tensor | None = None, ref_offset=0):
    """Positive (same label, not self) and negative pair masks among valid rows.

    Rows are the anchors, columns the reference set (without `ref_labels`:
    the batch itself). Anchor i is reference row `ref_offset + i`, left out of
    its own positives; `ref_offset` None: the anchors are not in the set.
    """
    if ref_labels is None:
        ref_labels, ref_mask = labels, mask
    valid = mask[:, None] & ref_mask[None, :]
    same = tf.equal(labels[:, None], ref_labels[None, :])
    positives = same & valid
    if ref_offset is not None:
        positives &= ~_self_columns(tf.shape(labels)[0], tf.shape(ref_labels)[0], ref_offset)
    negatives = ~same & valid
    return positives, negatives


def _masked_max(data, mask, fallback):
    """Row-wise max of `data` over `mask` ([B, ..., B]); `fallback` where a row is empty."""
    neg_inf = tf.constant(-float("inf"), data.dtype)
    m = tf.reduce_max(tf.where(mask, data, neg_inf), axis=-1)
    return tf.where(tf.reduce_any(mask, axis=-1), m, fallback)


def _masked_min(data, mask, fallback):
    """Row-wise min of `data` over `mask` ([B, ..., B]); `fallback` where a row is empty."""
    pos_inf = tf.constant(float("inf"), data.dtype)
    m = tf.reduce_min(tf.where(mask, data, pos_inf), axis=-1)
    return tf.where(tf.reduce_any(mask, axis=-1), m, fallback)


def _safe_divide(total, count):
    count = tf.cast(count, total.dtype)
    return tf.where(count > 0, total / tf.maximum(count, 1.0), tf.zeros_like(total))


def triplet_semihard_loss(
    embeddings,
    labels,
    margin: float = 1.0,
    distance_metric="L2",
    sample_mask=None,
) -> tf.Tensor:
    """Triplet loss with semi-hard negative mining (tensorflow-addons definition).

    For every positive pair (a, p) (same label, a != p) the negative is the
    closest n with D_an > D_ap (semi-hard); if there is none, the farthest
    negative of a. Loss = mean over positive pairs of max(margin + D_ap - D_an, 0).
    Schroff et al., FaceNet, 2015.

    Args:
      embeddings: float [B, d]; tfa recommends L2-normalised embeddings.
      labels: int [B] class labels.
      margin: margin of the hinge.
      distance_metric: "L2", "squared-L2", "angular" (1 - cosine) or a callable
        mapping [B, d] embeddings to a [B, B] distance matrix.
      sample_mask: optional bool [B]; False rows are padding (not in tfa).

    Returns:
      Scalar loss (float32 for half-precision input); 0.0 without positive pairs.
    """
    x, labels, mask, _ = _check_inputs(embeddings, labels, sample_mask, keep_float64=True)
    d = _distance_matrix(x, distance_metric)
    positives, negatives = _pair_masks(labels, mask)
    big = tf.constant(float("inf"), d.dtype)
    # Row minimum over valid columns: tfa's value for a row without negatives.
    row_min = tf.reduce_min(tf.where(mask[None, :], d, big), axis=1)
    hardest_far = _masked_max(d, negatives, row_min)  # [B]
    # [a, p, n]: n is a negative of a farther from a than p.
    outside = negatives[:, None, :] & (d[:, None, :] > d[:, :, None])
    semi_hard = _masked_min(
        tf.broadcast_to(d[:, None, :], tf.shape(outside)), outside, hardest_far[:, None]
    )
    losses = tf.maximum(margin + d - semi_hard, 0.0)
    losses = tf.where(positives, losses, tf.zeros_like(losses))
    return _safe_divide(tf.reduce_sum(losses), tf.reduce_sum(tf.cast(positives, d.dtype)))


def triplet_hard_loss(
    embeddings,
    labels,
    margin: float = 1.0,
    soft: bool = False,
    distance_metric="L2",
    sample_mask=None,
    *,
    ref_embeddings=None,
    ref_labels=None,
    ref_mask=None,
    ref_offset=None,
) -> tf.Tensor:
    """Batch-hard triplet loss (tensorflow-addons definition; Hermans et al. 2017).

    Per anchor: hardest positive (largest D_ap; the smallest distance of the row
    if a has no positive) and hardest negative (smallest D_an; the largest
    distance of the row if none). Loss = mean over anchors of
    max(D_ap - D_an + margin, 0), or softplus(D_ap - D_an) when `soft`.

    Args:
      embeddings: float [B, d].
      labels: int [B] class labels.
      margin: margin of the hinge (unused when `soft`).
      soft: use the soft-margin form log(1 + exp(D_ap - D_an)).
      distance_metric: "L2", "squared-L2", "angular" or a callable.
      sample_mask: optional bool [B]; False rows are padding (not in tfa).
      ref_embeddings: optional [R, d] reference set: the anchors (the rows of
        `embeddings`) are compared with its rows instead of the batch's (e.g.
        a cross-batch memory; docs/scaling.md).
      ref_labels: [R] its labels (with `ref_embeddings`).
      ref_mask: optional [R] bool, False on its padding rows.
      ref_offset: anchor i is reference row `ref_offset + i` (not its own
        positive); None: the anchors are not in the reference set.

    Returns:
      Scalar loss (float32 for half-precision input); 0.0 for an empty batch.
    """
    x, labels, mask, _ = _check_inputs(embeddings, labels, sample_mask, keep_float64=True)
    r, r_labels, r_mask = _reference(x, labels, mask, ref_embeddings, ref_labels, ref_mask)
    if r is None:
        d = _distance_matrix(x, distance_metric)
        positives, negatives = _pair_masks(labels, mask)
    else:
        d = _distance_matrix(x, distance_metric, tf.cast(r, x.dtype), ref_offset)
        positives, negatives = _pair_masks(labels, mask, r_labels, r_mask, ref_offset)
    big = tf.constant(float("inf"), d.dtype)
    row_min = tf.reduce_min(tf.where(r_mask[None, :], d, big), axis=1)
    row_max = tf.reduce_max(tf.where(r_mask[None, :], d, -big), axis=1)
    hard_pos = _masked_max(d, positives, row_min)
    hard_neg = _masked_min(d, negatives, row_max)
    if soft:
        losses = tf.nn.softplus(hard_pos - hard_neg)
    else:
        losses = tf.maximum(hard_pos - hard_neg + margin, 0.0)
    losses = tf.where(mask, losses, tf.zeros_like(losses))
    return _safe_divide(tf.reduce_sum(losses), tf.reduce_sum(tf.cast(mask, d.dtype)))


def lifted_struct_loss(embeddings, labels, margin: float = 1.0, sample_mask=None) -> tf.Tensor:
    """Lifted structured loss (tensorflow-addons definition; Oh Song et al. 2016).

    With D the Euclidean distance, for each positive pair (i, j):
    J_ij = log(sum_{k in N(i)} exp(margin - D_ik) + sum_{l in N(j)} exp(margin - D_jl)) + D_ij,
    and the loss is 1 / (2 |P|) * sum over unordered positive pairs of max(J_ij, 0)^2.

    Args:
      embeddings: float [B, d], not normalised (as tfa recommends).
      labels: int [B] class labels.
      margin: margin term.
      sample_mask: optional bool [B]; False rows are padding (not in tfa).

    Returns:
      Scalar loss (float32 for half-precision input); 0.0 without positive pairs
      and for pairs where neither row has a negative (tfa: NaN).
    """
    x, labels, mask, _ = _check_inputs(embeddings, labels, sample_mask, keep_float64=True)
    d = _tfa_pairwise_distance(x, squared=False)
    positives, negatives = _pair_masks(labels, mask)
    has_neg = tf.reduce_any(negatives, axis=1)
    # log sum_{k in N(i)} exp(margin - D_ik) per row, then of the two rows of each pair.
    lse = _masked_logsumexp(margin - d, negatives, 1)  # [B]
    shape = tf.shape(d)
    pair_terms = tf.stack(
        [tf.broadcast_to(lse[:, None], shape), tf.broadcast_to(lse[None, :], shape)], axis=-1
    )
    pair_has = tf.stack(
        [tf.broadcast_to(has_neg[:, None], shape), tf.broadcast_to(has_neg[None, :], shape)],
        axis=-1,
    )
    pair_lse = _masked_logsumexp(pair_terms, pair_has, -1)  # [B, B]
    either = has_neg[:, None] | has_neg[None, :]
    j = pair_lse + d
    valid = positives & either
    terms = tf.where(valid, tf.square(tf.maximum(j, 0.0)), tf.zeros_like(j))
    num_positives = tf.reduce_sum(tf.cast(positives, d.dtype))
    return _safe_divide(0.5 * tf.reduce_sum(terms), num_positives)


def npairs_loss(similarity_matrix, labels) -> tf.Tensor:
    """N-pairs loss of a similarity matrix (tensorflow-addons definition; Sohn, NeurIPS 2016).

    Each row of the [B, B] similarity matrix (e.g. anchors @ positives^T) is a
    vector of logits; its target distribution is uniform over the columns with
    the row's label. Loss = mean softmax cross-entropy over rows.

    tensorflow-addons' raw form, kept for code that builds its own similarity
    matrix; the arguments follow the module's order (tfa: labels first, as
    `TfaNpairsLoss` still does). `--loss=npairs` trains `batch_npairs_loss`.

    Args:
      similarity_matrix: float [B, B] similarities.
      labels: int [B] class labels.

    Returns:
      Scalar loss (float32 for half-precision input).
    """
    s = tf.convert_to_tensor(similarity_matrix)
    if s.shape.rank is not None and (
        s.shape.rank != 2 or (None not in s.shape and s.shape[0] != s.shape[1])
    ):
        raise ValueError(f"similarity_matrix must be square [B, B], got shape {s.shape}")
    s, labels, _, _ = _check_inputs(s, labels, embeddings_name="similarity_matrix",
                                    keep_float64=True)
    target = tf.cast(tf.equal(labels[:, None], labels[None, :]), s.dtype)
    target /= tf.reduce_sum(target, axis=1, keepdims=True)
    return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=target, logits=s))


def pairwise_contrastive_loss(distances, pair_labels, margin: float = 1.0) -> tf.Tensor:
    """Contrastive loss of pairs (tensorflow-addons' `contrastive_loss`; Hadsell et al. 2006).

    Per pair: y * d^2 + (1 - y) * max(margin - d, 0)^2. Not to be confused with
    `contrastive_loss` of this module (the SST paper's batch form).

    tensorflow-addons' raw, element-wise form, kept for code that forms its own
    pairs; the arguments follow the module's order (tfa: labels first, as
    `TfaContrastiveLoss` still does). `--loss=pairwise_contrastive`
    trains `batch_pairwise_contrastive_loss`.

    Args:
      distances: float [N] distances between the two embeddings of each pair.
      pair_labels: [N] binary pair labels, 1 for a similar pair.
      margin: margin for dissimilar pairs.

    Returns:
      [N] per-pair losses (float32 for half-precision input).
    """
    d = _compute_float(tf.convert_to_tensor(distances), "distances", keep_float64=True)
    y = tf.cast(pair_labels, d.dtype)
    return y * tf.square(d) + (1.0 - y) * tf.square(tf.maximum(margin - d, 0.0))


def batch_npairs_loss(embeddings, labels, sample_mask=None, *, scale: float = 1.0,
                      ref_embeddings=None, ref_labels=None, ref_mask=None,
                      ref_offset=None) -> tf.Tensor:
    """N-pairs loss over one batch of embeddings (the form `--loss=npairs` trains).

    `npairs_loss` with the batch as both anchors and positives: the logits of
    row i are the dot products e_i . e_j of the other valid rows j != i, the
    target is uniform over the other rows with i's label; the mean is over
    valid rows that have such a row. (Sohn's L2 penalty on the embeddings is
    not included; use L2 normalisation or weight decay.)

    On unit vectors the logits lie in [-1, 1], so with `scale` 1 (Sohn's and
    tensorflow-addons' form) the softmax over the candidates stays close to
    uniform; `scale` s multiplies the logits (a temperature 1 / s, as in the
    normalised-softmax losses).

    Args:
      embeddings: float [B, d].
      labels: int [B] class labels.
      sample_mask: optional bool [B]; False rows are padding.
      scale: factor of the logits (> 0); 1 is the original loss.
      ref_embeddings: optional [R, d] reference set: the anchors (the rows of
        `embeddings`) are paired with its rows instead of the batch's (e.g.
        a cross-batch memory; docs/scaling.md).
      ref_labels: [R] its labels (with `ref_embeddings`).
      ref_mask: optional [R] bool, False on its padding rows.
      ref_offset: anchor i is reference row `ref_offset + i` (not its own
        positive); None: the anchors are not in the reference set.

    Returns:
      Scalar float32 loss; 0.0 when no row has a positive.
    """
    if not scale > 0:
        raise ValueError(f"batch_npairs_loss: scale must be > 0, got {scale}.")
    x, labels, mask, _ = _check_inputs(embeddings, labels, sample_mask)
    r, r_labels, r_mask = _reference(x, labels, mask, ref_embeddings, ref_labels, ref_mask)
    if r is None:
        positives, _ = _pair_masks(labels, mask)
        candidates = mask[None, :] & ~tf.eye(tf.shape(x)[0], dtype=tf.bool)
        logits = tf.matmul(x, x, transpose_b=True)
    else:
        positives, _ = _pair_masks(labels, mask, r_labels, r_mask, ref_offset)
        candidates = mask[:, None] & r_mask[None, :]
        if ref_offset is not None:
            candidates &= ~_self_columns(tf.shape(x)[0], tf.shape(r)[0], ref_offset)
        logits = tf.matmul(x, r, transpose_b=True)
    logits *= scale
    log_z = _masked_logsumexp(logits, candidates, 1)
    num_pos = tf.reduce_sum(tf.cast(positives, tf.float32), axis=1)
    pos_logit_sum = tf.reduce_sum(tf.where(positives, logits, tf.zeros_like(logits)), axis=1)
    has = num_pos > 0
    per_row = tf.where(has, log_z - pos_logit_sum / tf.maximum(num_pos, 1.0), 0.0)
    return _safe_divide(tf.reduce_sum(per_row), tf.reduce_sum(tf.cast(has, tf.float32)))


def batch_pairwise_contrastive_loss(embeddings, labels, margin: float = 1.0,
                                    sample_mask=None, *, ref_embeddings=None, ref_labels=None,
                                    ref_mask=None, ref_offset=None) -> tf.Tensor:
    """`pairwise_contrastive_loss` over all pairs of one batch (`--loss=pairwise_contrastive`).

    Mean over unordered pairs i < j of valid rows of
    y * d^2 + (1 - y) * max(margin - d, 0)^2, with d the Euclidean distance and
    y = 1 for a same-label pair.

    Args:
      embeddings: float [B, d].
      labels: int [B] class labels.
      margin: margin for different-label pairs.
      sample_mask: optional bool [B]; False rows are padding.
      ref_embeddings: optional [R, d] reference set: the anchors (the rows of
        `embeddings`) are paired with its rows instead of the batch's (e.g.
        a cross-batch memory; docs/scaling.md).
      ref_labels: [R] its labels (with `ref_embeddings`).
      ref_mask: optional [R] bool, False on its padding rows.
      ref_offset: anchor i is reference row `ref_offset + i` (not its own
        positive); None: the anchors are not in the reference set.
        With a reference set the mean is over the pairs (anchor, reference
        row), the anchor's own row left out.

    Returns:
      Scalar float32 loss; 0.0 with fewer than two valid rows.
    """
    x, labels, mask, _ = _check_inputs(embeddings, labels, sample_mask)
    r, r_labels, r_mask = _reference(x, labels, mask, ref_embeddings, ref_labels, ref_mask)
    if r is None:
        d = _tfa_pairwise_distance(x, squared=False)
        same = tf.equal(labels[:, None], labels[None, :])
        b = tf.shape(x)[0]
        upper = tf.linalg.band_part(tf.ones([b, b]), 0, -1) - tf.eye(b)
        pairs = (upper > 0) & mask[:, None] & mask[None, :]
    else:
        d = _tfa_pairwise_distance(x, squared=False, r=r, ref_offset=ref_offset)
        same = tf.equal(labels[:, None], r_labels[None, :])
        pairs = mask[:, None] & r_mask[None, :]
        if ref_offset is not None:
            pairs &= ~_self_columns(tf.shape(x)[0], tf.shape(r)[0], ref_offset)
    per_pair = pairwise_contrastive_loss(d, tf.cast(same, tf.float32), margin)
    total = tf.reduce_sum(tf.where(pairs, per_pair, tf.zeros_like(per_pair)))
    return _safe_divide(total, tf.reduce_sum(tf.cast(pairs, tf.float32)))


def _serializable_metric(distance_metric):
    if callable(distance_metric):
        return keras.saving.serialize_keras_object(distance_metric)
    return distance_metric


def _flat_labels(y_true) -> tf.Tensor:
    """Keras' `y_true` ([B] or [B, 1], as tensorflow-addons accepted) as [B] labels."""
    return tf.reshape(tf.convert_to_tensor(y_true), [-1])


@keras.saving.register_keras_serializable(package="sst_tf")
class TfaTripletSemiHardLoss(keras.losses.Loss):
    """tensorflow-addons' `TripletSemiHardLoss` for Keras 3 (`triplet_semihard_loss`, its defaults).

    Called as `loss(y_true=labels, y_pred=embeddings)`.
    """

    def __init__(self, margin: float = 1.0, distance_metric="L2", name: str | None = None,
                 **kwargs):
        super().__init__(name=name or "triplet_semihard_loss", reduction="none",
                         dtype=kwargs.get("dtype"))
        self.margin = margin
        self.distance_metric = distance_metric

    def call(self, y_true, y_pred):  # noqa: D102
        loss = triplet_semihard_loss(y_pred, _flat_labels(y_true), self.margin,
                                     self.distance_metric)
        return per_replica(loss)

    def get_config(self):  # noqa: D102
        return {"name": self.name, "margin": self.margin,
                "distance_metric": _serializable_metric(self.distance_metric)}


@keras.saving.register_keras_serializable(package="sst_tf")
class TfaTripletHardLoss(keras.losses.Loss):
    """tensorflow-addons' `TripletHardLoss` for Keras 3 (`triplet_hard_loss`, its defaults).

    Called as `loss(y_true=labels, y_pred=embeddings)`.
    """

    def __init__(self, margin: float = 1.0, soft: bool = False, distance_metric="L2",
                 name: str | None = None, **kwargs):
        super().__init__(name=name or "triplet_hard_loss", reduction="none",
                         dtype=kwargs.get("dtype"))
        self.margin = margin
        self.soft = soft
        self.distance_metric = distance_metric

    def call(self, y_true, y_pred):  # noqa: D102
        loss = triplet_hard_loss(y_pred, _flat_labels(y_true), self.margin, self.soft,
                                 self.distance_metric)
        return per_replica(loss)

    def get_config(self):  # noqa: D102
        return {"name": self.name, "margin": self.margin, "soft": self.soft,
                "distance_metric": _serializable_metric(self.distance_metric)}


@keras.saving.register_keras_serializable(package="sst_tf")
class TfaLiftedStructLoss(keras.losses.Loss):
    """tensorflow-addons' `LiftedStructLoss` for Keras 3 (`lifted_struct_loss`, its defaults).

    Called as `loss(y_true=labels, y_pred=embeddings)`.
    """

    def __init__(self, margin: float = 1.0, name: str | None = None, **kwargs):
        super().__init__(name=name or "lifted_struct_loss", reduction="none",
                         dtype=kwargs.get("dtype"))
        self.margin = margin

    def call(self, y_true, y_pred):  # noqa: D102
        return per_replica(lifted_struct_loss(y_pred, _flat_labels(y_true), self.margin))

    def get_config(self):  # noqa: D102
        return {"name": self.name, "margin": self.margin}


@keras.saving.register_keras_serializable(package="sst_tf")
class TfaNpairsLoss(keras.losses.Loss):
    """tensorflow-addons' `NpairsLoss` for Keras 3 (`npairs_loss`, its defaults).

    Called as `loss(y_true=labels, y_pred=similarity_matrix)`.
    """

    def __init__(self, name: str = "npairs_loss", **kwargs):
        super().__init__(name=name, reduction="none", dtype=kwargs.get("dtype"))

    def call(self, y_true, y_pred):  # noqa: D102
        return per_replica(npairs_loss(y_pred, _flat_labels(y_true)))

    def get_config(self):  # noqa: D102
        return {"name": self.name}


@keras.saving.register_keras_serializable(package="sst_tf")
class TfaContrastiveLoss(keras.losses.Loss):
    """tensorflow-addons' `ContrastiveLoss` for Keras 3: `pairwise_contrastive_loss`.

    Not the SST paper's contrastive loss (`contrastive_loss`, squared
    distance, margin 0.5, `--loss=contrastive`): this one takes distances and
    pair labels, plain distance, margin 1.

    `loss(y_true=pair_labels, y_pred=distances)`, reduced by `reduction`
    (default: mean over pairs, as in tensorflow-addons).
    """

    def __init__(self, margin: float = 1.0, reduction: str = "sum_over_batch_size",
                 name: str = "contrastive_loss", **kwargs):
        super().__init__(name=name, reduction=reduction, dtype=kwargs.get("dtype"))
        self.margin = margin

    def call(self, y_true, y_pred):  # noqa: D102
        return pairwise_contrastive_loss(tf.reshape(y_pred, [-1]), _flat_labels(y_true),
                                         self.margin)

    def get_config(self):  # noqa: D102
        return {"name": self.name, "margin": self.margin, "reduction": self.reduction}


# ---------------------------------------------------------------------------
# Modern baselines: Multi-Similarity (Wang et al. 2019), Proxy-Anchor (Kim et al. 2020)
# ---------------------------------------------------------------------------


def multi_similarity_loss(
    embeddings,
    labels,
    alpha: float = 2.0,
    beta: float = 50.0,
    base: float = 0.5,
    epsilon: float = 0.1,
    sample_mask=None,
    *,
    ref_embeddings=None,
    ref_labels=None,
    ref_mask=None,
    ref_offset=None,
) -> tf.Tensor:
    """Multi-Similarity loss with its pair mining (Wang et al., CVPR 2019).

    On cosine similarities S of the L2-normalised embeddings, for anchor i with
    positives P_i (same label, not i) and negatives N_i:
      mined negatives: k in N_i with S_ik + epsilon > min_{j in P_i} S_ij,
      mined positives: j in P_i with S_ij - epsilon < max_{k in N_i} S_ik,
      L_i = 1/alpha log(1 + sum_{mined j} exp(-alpha (S_ij - base)))
          + 1/beta  log(1 + sum_{mined k} exp( beta (S_ik - base))).
    An anchor with no mined positive or no mined negative contributes 0 (as in
    the authors' code); the loss is the sum over anchors divided by the number
    of valid rows. The mining thresholds carry no gradient.

    Args:
      embeddings: float [B, d] (normalised inside, in float32).
      labels: int [B] class labels.
      alpha: scale of positive pairs.
      beta: scale of negative pairs.
      base: similarity margin lambda.
      epsilon: mining margin.
      sample_mask: optional bool [B]; False rows are padding.
      ref_embeddings: optional [R, d] reference set: P_i and N_i are taken
        among its rows instead of the batch's.
      ref_labels: [R] its labels (with `ref_embeddings`).
      ref_mask: optional [R] bool, False on its padding rows.
      ref_offset: anchor i is reference row `ref_offset + i` (excluded from
        its own positives); None: the anchors are not in the reference set.

    Returns:
      Scalar float32 loss; 0.0 when no anchor has mined pairs.
    """
    total, count = multi_similarity_parts(
        embeddings, labels, alpha, beta, base, epsilon, sample_mask,
        ref_embeddings=ref_embeddings, ref_labels=ref_labels, ref_mask=ref_mask,
        ref_offset=ref_offset)
    return _safe_divide(total, count)


def multi_similarity_parts(embeddings, labels, alpha: float = 2.0, beta: float = 50.0,
                           base: float = 0.5, epsilon: float = 0.1, sample_mask=None, *,
                           ref_embeddings=None, ref_labels=None, ref_mask=None,
                           ref_offset=None):
    """(sum over anchors, number of valid anchors) of `multi_similarity_loss`."""
    x, labels, mask, _ = _check_inputs(embeddings, labels, sample_mask)
    r, r_labels, r_mask = _reference(x, labels, mask, ref_embeddings, ref_labels, ref_mask)
    x = tf.math.l2_normalize(x, axis=1)
    if r is None:
        s = tf.matmul(x, x, transpose_b=True)
        positives, negatives = _pair_masks(labels, mask)
    else:
        s = tf.matmul(x, tf.math.l2_normalize(r, axis=1), transpose_b=True)
        positives, negatives = _pair_masks(labels, mask, r_labels, r_mask, ref_offset)
    s_ng = tf.stop_gradient(s)
    big = tf.constant(1e30, s.dtype)
    min_pos = tf.reduce_min(tf.where(positives, s_ng, big), axis=1, keepdims=True)
    max_neg = tf.reduce_max(tf.where(negatives, s_ng, -big), axis=1, keepdims=True)
    mined_neg = negatives & (s_ng + epsilon > min_pos)
    mined_pos = positives & (s_ng - epsilon < max_neg)
    use = tf.reduce_any(mined_pos, axis=1) & tf.reduce_any(mined_neg, axis=1)
    pos_term = tf.nn.softplus(_masked_logsumexp(-alpha * (s - base), mined_pos, 1)) / alpha
    neg_term = tf.nn.softplus(_masked_logsumexp(beta * (s - base), mined_neg, 1)) / beta
    per_anchor = tf.where(use, pos_term + neg_term, tf.zeros_like(pos_term))
    return tf.reduce_sum(per_anchor), tf.reduce_sum(tf.cast(mask, s.dtype))


def proxy_anchor_loss(
    embeddings,
    labels,
    proxies,
    alpha: float = 32.0,
    delta: float = 0.1,
    sample_mask=None,
) -> tf.Tensor:
    """Proxy-Anchor loss (Kim et al., CVPR 2020).

    With s(x, p) the cosine similarity of embedding x and proxy p (one proxy per
    class), P+ the proxies with at least one positive in the batch and C the
    number of classes:
      L = 1/|P+| sum_{p in P+} log(1 + sum_{x of class p} exp(-alpha (s(x, p) - delta)))
        + 1/C    sum_{p}       log(1 + sum_{x not of class p} exp(alpha (s(x, p) + delta))).

    Args:
      embeddings: float [B, d].
      labels: int [B] class labels in [0, C).
      proxies: float [C, d] proxies (a trainable variable, see `ProxyAnchor`).
      alpha: scaling factor.
      delta: margin.
      sample_mask: optional bool [B]; False rows are padding.

    Returns:
      Scalar float32 loss.
    """
    x, labels, mask, _ = _check_inputs(embeddings, labels, sample_mask)
    p = tf.convert_to_tensor(proxies)
    if p.shape.rank is not None and p.shape.rank != 2:
        raise ValueError(f"proxies must have rank 2 [C, d], got shape {p.shape}")
    if p.shape[1] is not None and x.shape[1] is not None and p.shape[1] != x.shape[1]:
        raise ValueError(
            f"proxies have dimension {p.shape[1]} but embeddings have {x.shape[1]}"
        )
    p = tf.cast(p, tf.float32)
    num_classes = tf.shape(p)[0]
    labels = tf.cast(labels, tf.int32)
    cos = tf.matmul(tf.math.l2_normalize(x, axis=1), tf.math.l2_normalize(p, axis=1),
                    transpose_b=True)  # [B, C]
    onehot = tf.one_hot(labels, num_classes, on_value=True, off_value=False, dtype=tf.bool)
    pos = onehot & mask[:, None]
    neg = ~onehot & mask[:, None]
    pos_lse = _masked_logsumexp(-alpha * (cos - delta), pos, 0)  # [C]
    neg_lse = _masked_logsumexp(alpha * (cos + delta), neg, 0)
    with_pos = tf.reduce_any(pos, axis=0)
    pos_term = tf.reduce_sum(tf.where(with_pos, tf.nn.softplus(pos_lse), 0.0))
    pos_term = _safe_divide(pos_term, tf.reduce_sum(tf.cast(with_pos, tf.float32)))
    neg_term = tf.reduce_sum(tf.nn.softplus(neg_lse)) / tf.cast(num_classes, tf.float32)
    return pos_term + neg_term


@keras.saving.register_keras_serializable(package="sst_tf")
class ProxyAnchor(keras.layers.Layer):
    """Owns the Proxy-Anchor proxies (one trainable [d] vector per class).

    Create it under the distribution strategy's scope, give its
    `trainable_variables` to an optimizer and put the layer into the
    checkpoint; `layer(embeddings, class_indices, sample_mask)` returns the
    loss. Classes are either `0..num_classes-1` or the given `class_ids`
    (e.g. the training split's labels); `class_index(labels)` maps labels to
    proxy rows (-1 for a label that has no proxy: such a row only acts as a
    negative). The authors trained the proxies with 100x the backbone
    learning rate (`lr_multiplier`, for the trainer to use).
    """

    def __init__(self, num_classes: int | None = None, embedding_dim: int = 512,
                 alpha: float | None = None, delta: float | None = None,
                 lr_multiplier: float = loss_registry.PROXY_LR_MULTIPLIER,
                 seed: int | None = None, class_ids=None, **kwargs):
        super().__init__(**kwargs)
        if class_ids is not None:
            class_ids = sorted({int(c) for c in np.asarray(class_ids).reshape(-1)})
            if num_classes is not None and num_classes != len(class_ids):
                raise ValueError(
                    f"num_classes ({num_classes}) != number of class_ids ({len(class_ids)})")
            num_classes = len(class_ids)
        if num_classes is None or num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}")
        self.num_classes = int(num_classes)
        self.class_ids = class_ids
        self.embedding_dim = int(embedding_dim)
        defaults = loss_registry.loss_params("proxy_anchor")
        alpha = defaults["alpha"] if alpha is None else alpha
        delta = defaults["delta"] if delta is None else delta
        self.alpha = float(alpha)
        self.delta = float(delta)
        self.lr_multiplier = float(lr_multiplier)
        self.seed = seed
        # Kaiming-normal init (fan_out), as the authors' PyTorch code.
        self.proxies = self.add_weight(
            name="proxies",
            shape=(self.num_classes, self.embedding_dim),
            initializer=keras.initializers.RandomNormal(
                stddev=(2.0 / self.num_classes) ** 0.5, seed=seed),
            trainable=True,
            dtype="float32",
        )

    def class_index(self, labels) -> tf.Tensor:
        """Proxy row of each label: int32 [B], -1 where the label has no proxy."""
        labels = tf.cast(labels, tf.int64)
        if self.class_ids is None:
            inside = (labels >= 0) & (labels < self.num_classes)
            return tf.where(inside, tf.cast(labels, tf.int32), -1)
        return class_rows(tf.constant(self.class_ids, tf.int64), labels)

    def call(self, embeddings, class_indices, sample_mask=None):  # noqa: D102
        return proxy_anchor_loss(embeddings, class_indices, self.proxies, self.alpha,
                                 self.delta, sample_mask=sample_mask)

    def get_config(self):  # noqa: D102
        config = super().get_config()
        config.update(num_classes=self.num_classes, embedding_dim=self.embedding_dim,
                      alpha=self.alpha, delta=self.delta, lr_multiplier=self.lr_multiplier,
                      seed=self.seed, class_ids=self.class_ids)
        return config


# -- losses by name ----------------------------------------------------------


def make_loss(name: str, margin: float | None = None, proxy_anchor=None,
              params: Mapping[str, float | str] | None = None,
              normalize: bool | None = None) -> Callable:
    """Returns fn(embeddings, labels, targets, mask) -> scalar for a `--loss` name.

    Every default comes from `sst_tf.loss_registry`: the margin
    (`LossSpec.margin`) and the fixed parameters of the loss's geometry
    (`loss_registry.loss_params`); `params` replaces some of them (e.g.
    SST's `{"scale": 32.0}` or Multi-Similarity's `{"alpha": 1.0}`; an
    unknown key is a ValueError).

    Args:
      name: the loss, as the trainer's `--loss`.
      margin: the margin; None: the loss's default.
      proxy_anchor: the `ProxyAnchor` layer (with the training split's class
        ids) that `proxy_anchor` needs.
      params: fixed parameters replacing the registry's.
      normalize: whether the embeddings are L2-normalised; None: the loss's
        default geometry (the parameters of raw embeddings differ for SST
        and N-pairs, `LossSpec.raw_params`).
    """
    spec = loss_registry.spec(name)  # an unknown name: ValueError naming every loss
    margin = spec.margin if margin is None else margin
    p = loss_registry.loss_params(name, normalize, params)
    if name == "proxy_anchor":
        if proxy_anchor is None:
            raise ValueError("--loss=proxy_anchor needs a ProxyAnchor layer.")
        return lambda e, y, t, k: proxy_anchor(e, proxy_anchor.class_index(y), k)
    return _LOSS_FORMS[name](margin, p)


def make_reference_loss(name: str, margin: float | None = None,
                        params: Mapping[str, float | str] | None = None,
                        normalize: bool | None = None) -> Callable:
    """The reference-set form of a `--loss` name (see `loss_registry.REFERENCE_LOSSES`).

    Returns fn(embeddings, labels, targets, mask, ref_embeddings, ref_labels,
    ref_mask, ref_offset) -> scalar: the batch's rows are the anchors, the
    reference set's rows their candidates (positives and negatives; for SST
    and triplet the imposters, the targets staying in the batch). Used by the
    cross-batch memory (`sst_tf.negatives.with_memory`). N-pairs' L2 penalty
    on the embeddings is left to the batch loss. Arguments as `make_loss`.

    Raises:
      ValueError: the loss has no reference form (lifted_struct,
        proxy_anchor, triplet_semihard), naming those that have one.
    """
    spec = loss_registry.spec(name)
    if name not in loss_registry.REFERENCE_LOSSES:
        raise ValueError(
            f"--loss={name} has no form with a reference set (a cross-batch memory); the "
            f"losses that have one: {', '.join(loss_registry.REFERENCE_LOSSES)}.")
    margin = spec.margin if margin is None else margin
    p = loss_registry.loss_params(name, normalize, params)
    return _REFERENCE_FORMS[name](margin, p)


def _ref(re, ry, rm, offset=None) -> dict:
    """The reference-set keyword arguments of the losses' functions."""
    out = {"ref_embeddings": re, "ref_labels": ry, "ref_mask": rm}
    return out if offset is None else {**out, "ref_offset": offset}


def _sst_args(p: Mapping) -> dict:
    return {"scale": float(p["scale"]), "imposters": p["imposters"]}


# Each loss name -> (margin, params) -> fn(embeddings, labels, targets, mask).
_LOSS_FORMS: dict[str, Callable] = {
    "sst": lambda margin, p: lambda e, y, t, m: sst_loss(e, y, t, sample_mask=m, **_sst_args(p)),
    "triplet": lambda margin, p: lambda e, y, t, m: triplet_loss(
        e, y, t, margin=margin, sample_mask=m),
    "contrastive": lambda margin, p: lambda e, y, t, m: contrastive_loss(
        e, y, margin=margin, sample_mask=m),
    "triplet_semihard": lambda margin, p: lambda e, y, t, k: triplet_semihard_loss(
        e, y, margin, sample_mask=k),
    "triplet_hard": lambda margin, p: lambda e, y, t, k: triplet_hard_loss(
        e, y, margin, sample_mask=k),
    "triplet_hard_soft": lambda margin, p: lambda e, y, t, k: triplet_hard_loss(
        e, y, margin, soft=True, sample_mask=k),
    "lifted_struct": lambda margin, p: lambda e, y, t, k: lifted_struct_loss(
        e, y, margin, sample_mask=k),
    "npairs": lambda margin, p: lambda e, y, t, k: batch_npairs_loss(
        e, y, sample_mask=k, scale=float(p["scale"]))
    + _embedding_l2(e, k, float(p["l2_penalty"])),
    "pairwise_contrastive": lambda margin, p: lambda e, y, t, k: batch_pairwise_contrastive_loss(
        e, y, margin, sample_mask=k),
    "multi_similarity": lambda margin, p: lambda e, y, t, k: multi_similarity_loss(
        e, y, sample_mask=k, **p),
    "circle": lambda margin, p: lambda e, y, t, k: circle_loss(e, y, sample_mask=k, **p),
    "supcon": lambda margin, p: lambda e, y, t, k: supcon_loss(e, y, sample_mask=k, **p),
    "ntxent": lambda margin, p: lambda e, y, t, k: ntxent_loss(e, y, sample_mask=k, **p),
}

# The reference-set forms: fn(e, y, t, m, ref_embeddings, ref_labels, ref_mask, ref_offset).
_REFERENCE_FORMS: dict[str, Callable] = {
    "sst": lambda margin, p: lambda e, y, t, m, re, ry, rm, o: sst_loss(
        e, y, t, sample_mask=m, **_sst_args(p), **_ref(re, ry, rm)),
    "triplet": lambda margin, p: lambda e, y, t, m, re, ry, rm, o: triplet_loss(
        e, y, t, margin=margin, sample_mask=m, **_ref(re, ry, rm)),
    # Self-pairs count in the batch form (0 loss), so the offset is not needed.
    "contrastive": lambda margin, p: lambda e, y, t, m, re, ry, rm, o: contrastive_loss(
        e, y, margin=margin, sample_mask=m, **_ref(re, ry, rm)),
    "triplet_hard": lambda margin, p: lambda e, y, t, m, re, ry, rm, o: triplet_hard_loss(
        e, y, margin, sample_mask=m, **_ref(re, ry, rm, o)),
    "triplet_hard_soft": lambda margin, p: lambda e, y, t, m, re, ry, rm, o: triplet_hard_loss(
        e, y, margin, soft=True, sample_mask=m, **_ref(re, ry, rm, o)),
    "npairs": lambda margin, p: lambda e, y, t, m, re, ry, rm, o: batch_npairs_loss(
        e, y, sample_mask=m, scale=float(p["scale"]), **_ref(re, ry, rm, o)),
    "pairwise_contrastive": lambda margin, p: lambda e, y, t, m, re, ry, rm, o: (
        batch_pairwise_contrastive_loss(e, y, margin, sample_mask=m, **_ref(re, ry, rm, o))),
    "multi_similarity": lambda margin, p: lambda e, y, t, m, re, ry, rm, o: multi_similarity_loss(
        e, y, sample_mask=m, **p, **_ref(re, ry, rm, o)),
}


def _embedding_l2(embeddings, mask, weight: float) -> tf.Tensor:
    """`weight` / 2 x mean squared norm of the valid rows: N-pairs' penalty on the embeddings.

    Sohn's N-pairs loss keeps unnormalised embeddings small this way; with the
    batch as both anchors and positives this is the original's
    0.25 * weight * (mean |anchor|^2 + mean |positive|^2).
    """
    x = tf.cast(embeddings, tf.float32)
    valid = tf.cast(mask, tf.float32)
    sq = tf.reduce_sum(tf.square(x), axis=1) * valid
    return 0.5 * weight * tf.reduce_sum(sq) / tf.maximum(tf.reduce_sum(valid), 1.0)


# Names of an earlier release -> the tensorflow-addons-compatible classes.
_RENAMED = {"TripletSemiHardLoss": "TfaTripletSemiHardLoss",
            "TripletHardLoss": "TfaTripletHardLoss", "LiftedStructLoss": "TfaLiftedStructLoss",
            "NpairsLoss": "TfaNpairsLoss", "PairwiseContrastiveLoss": "TfaContrastiveLoss",
            "ContrastiveLoss": "TfaContrastiveLoss"}


def __getattr__(name: str):
    """Old class names fail with the new one (they were tensorflow-addons' classes)."""
    if name in _RENAMED:
        raise AttributeError(
            f"sst_tf.losses.{name} is now sst_tf.losses.{_RENAMED[name]} (tensorflow-addons' "
            "class with its defaults); the project's losses by name: "
            "sst_tf.fit.MetricLoss(NAME) or sst_tf.losses.make_loss(NAME).")
    raise AttributeError(f"module 'sst_tf.losses' has no attribute {name!r}")
