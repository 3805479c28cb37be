"""Pair and triplet losses: tensorflow-addons' losses, their batch forms, Multi-Similarity.

tensorflow-addons reached end of life with TF 2.15; its metric-learning
losses are re-implemented here for Keras 3 with the same definitions and
defaults, checked against golden values recorded with tensorflow-addons 0.23
(tests/test_tfa_parity.py, scripts/make_tfa_fixtures.py). Multi-Similarity
(Wang et al. 2019) mines and weights the pairs of the batch.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from sst_tf.config import NPAIRS_PAIRS
from sst_tf.losses import distances, reductions
from sst_tf.losses.common import _check_inputs, _compute_float, per_replica
from sst_tf.losses.reference import reference_set

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
        positives &= ~distances.self_columns(tf.shape(labels)[0], tf.shape(ref_labels)[0],
                                             ref_offset)
    negatives = ~same & valid
    return positives, negatives


def _semihard_negatives(d, negatives, fallback) -> tf.Tensor:
    """[a, p]: the distance from a to its closest negative farther than p, else `fallback[a]`.

    One sort of each anchor's negative distances and a binary search per
    positive: O(B^2 log B) time and O(B^2) memory (tensorflow-addons builds a
    [B, B, B] tensor). The value is gathered from `d`, so the gradient flows
    to that one negative, as through tensorflow-addons' masked minimum.
    """
    big = tf.constant(float("inf"), d.dtype)
    order = tf.argsort(tf.where(negatives, d, big), axis=1, stable=True)  # negatives first
    ascending = tf.gather(tf.where(negatives, d, big), order, batch_dims=1)
    # First sorted negative strictly farther than each column's distance.
    first = tf.searchsorted(ascending, d, side="right", out_type=tf.int32)
    count = tf.reduce_sum(tf.cast(negatives, tf.int32), axis=1, keepdims=True)
    found = first < count
    last = tf.shape(d)[1] - 1
    column = tf.gather(order, tf.minimum(first, last), batch_dims=1)
    farther = tf.gather(d, column, batch_dims=1)
    return tf.where(found, farther, fallback[:, None])


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
    d = distances.distance_matrix(x, distance_metric)
    positives, negatives = _pair_masks(labels, mask)
    big = tf.constant(float("inf"), d.dtype)
    # Row minimum over valid columns: tfa's value for a row without negatives.
    row_min = tf.reduce_min(tf.where(mask[None, :], d, big), axis=1)
    hardest_far = reductions.masked_max(d, negatives, row_min)  # [B]
    semi_hard = _semihard_negatives(d, negatives, hardest_far)
    losses = tf.maximum(margin + d - semi_hard, 0.0)
    losses = tf.where(positives, losses, tf.zeros_like(losses))
    return reductions.safe_divide(tf.reduce_sum(losses), tf.reduce_sum(tf.cast(positives, d.dtype)))


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
    r, r_labels, r_mask = reference_set(x, labels, mask, ref_embeddings, ref_labels, ref_mask)
    if r is None:
        d = distances.distance_matrix(x, distance_metric)
        positives, negatives = _pair_masks(labels, mask)
    else:
        d = distances.distance_matrix(x, distance_metric, tf.cast(r, x.dtype), ref_offset)
        positives, negatives = _pair_masks(labels, mask, r_labels, r_mask, ref_offset)
    big = tf.constant(float("inf"), d.dtype)
    row_min = tf.reduce_min(tf.where(r_mask[None, :], d, big), axis=1)
    row_max = tf.reduce_max(tf.where(r_mask[None, :], d, -big), axis=1)
    hard_pos = reductions.masked_max(d, positives, row_min)
    hard_neg = reductions.masked_min(d, negatives, row_max)
    if soft:
        losses = tf.nn.softplus(hard_pos - hard_neg)
    else:
        losses = tf.maximum(hard_pos - hard_neg + margin, 0.0)
    losses = tf.where(mask, losses, tf.zeros_like(losses))
    return reductions.safe_divide(tf.reduce_sum(losses), tf.reduce_sum(tf.cast(mask, d.dtype)))


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
    d = distances.euclidean(x, squared=False)
    positives, negatives = _pair_masks(labels, mask)
    has_neg = tf.reduce_any(negatives, axis=1)
    # log sum_{k in N(i)} exp(margin - D_ik) per row, then of the two rows of each pair.
    lse = reductions.masked_logsumexp(margin - d, negatives, 1)  # [B]
    shape = tf.shape(d)
    pair_terms = tf.stack(
        [tf.broadcast_to(lse[:, None], shape), tf.broadcast_to(lse[None, :], shape)], axis=-1
    )
    pair_has = tf.stack(
        [tf.broadcast_to(has_neg[:, None], shape), tf.broadcast_to(has_neg[None, :], shape)],
        axis=-1,
    )
    pair_lse = reductions.masked_logsumexp(pair_terms, pair_has, -1)  # [B, B]
    either = has_neg[:, None] | has_neg[None, :]
    j = pair_lse + d
    valid = positives & either
    terms = tf.where(valid, tf.square(tf.maximum(j, 0.0)), tf.zeros_like(j))
    num_positives = tf.reduce_sum(tf.cast(positives, d.dtype))
    return reductions.safe_divide(0.5 * tf.reduce_sum(terms), num_positives)


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


def _one_pair_per_class(labels: tf.Tensor, mask: tf.Tensor):
    """Sohn's N pairs of a batch: the first two valid rows of every class that has two.

    Returns (anchors, positives), int32 [N] each, N the classes with two valid
    rows: anchors[k] is the first row of the k-th such class (in label order),
    positives[k] its second row, as pytorch-metric-learning's `NPairsLoss`
    picks them (the first positive pair of each label). Two stable sorts (by
    label, then valid rows first) make it O(B log B); N is a dynamic size,
    which XLA bounds by B.
    """
    order = tf.argsort(labels, stable=True)
    order = tf.gather(order, tf.argsort(tf.cast(~tf.gather(mask, order), tf.int32),
                                        stable=True))
    s, v = tf.gather(labels, order), tf.gather(mask, order)
    pos = tf.range(tf.shape(s)[0])
    first = v & ((pos == 0) | tf.not_equal(s, tf.roll(s, 1, 0)))
    has_next = (pos < tf.shape(s)[0] - 1) & tf.equal(s, tf.roll(s, -1, 0)) & tf.roll(v, -1, 0)
    at = tf.cast(tf.where(first & has_next)[:, 0], tf.int32)
    return tf.gather(order, at), tf.gather(order, at + 1)


def batch_npairs_loss(embeddings, labels, sample_mask=None, *, scale: float = 1.0,
                      l2_penalty: float = 0.0, pairs: str = "all", ref_embeddings=None,
                      ref_labels=None, ref_mask=None, ref_offset=None) -> tf.Tensor:
    """N-pairs loss over one batch of embeddings (the form `--loss=npairs` trains).

    `pairs` "all" (the default): `npairs_loss` with the batch as both anchors
    and positives: the logits of row i are the dot products e_i . e_j of the
    other valid rows j != i, the target is uniform over the other rows with
    i's label; the mean is over valid rows that have such a row. "per_class":
    Sohn's N pairs, one anchor and one positive per class of the batch (its
    first two rows): the logits of anchor k are its dot products with the N
    positives, the target is its own; the mean is over the N anchors
    (pytorch-metric-learning's `NPairsLoss`; an N x N problem, N the classes
    with two rows, against B x B). Both add Sohn's L2 penalty on the
    embeddings (`l2_penalty`, `_embedding_l2`; 0 by default, constant on unit
    vectors).

    On unit vectors the logits lie in [-1, 1], so with `scale` 1 (Sohn's and
    tensorflow-addons' form) the softmax over the candidates stays close to
    uniform; `scale` s multiplies the logits (a temperature 1 / s, as in the
    normalised-softmax losses).

    Args:
      embeddings: float [B, d].
      labels: int [B] class labels.
      sample_mask: optional bool [B]; False rows are padding.
      scale: factor of the logits (> 0); 1 is the original loss.
      l2_penalty: weight of the penalty on the batch's embeddings (left out
        with a reference set: the batch loss counts it once).
      pairs: "all" or "per_class" (above; `NPAIRS_PAIRS`).
      ref_embeddings: optional [R, d] reference set (with `pairs` "all"): the anchors (the rows of
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
    if pairs not in NPAIRS_PAIRS:
        raise ValueError(f"batch_npairs_loss: pairs must be one of {', '.join(NPAIRS_PAIRS)}; "
                         f"got {pairs!r}.")
    if pairs == "per_class" and ref_embeddings is not None:
        raise ValueError("batch_npairs_loss: pairs='per_class' has no reference-set form "
                         "(its candidates are the batch's own positives).")
    x, labels, mask, _ = _check_inputs(embeddings, labels, sample_mask)
    if pairs == "per_class":
        anchors, partners = _one_pair_per_class(labels, mask)
        logits = scale * tf.matmul(tf.gather(x, anchors), tf.gather(x, partners),
                                   transpose_b=True)
        log_z = reductions.masked_logsumexp(logits, tf.ones_like(logits, tf.bool), 1)
        per_row = log_z - tf.linalg.diag_part(logits)
        loss = reductions.safe_divide(tf.reduce_sum(per_row), tf.size(anchors))
        if l2_penalty:
            loss += _embedding_l2(x, mask, float(l2_penalty))
        return loss
    r, r_labels, r_mask = reference_set(x, labels, mask, ref_embeddings, ref_labels, ref_mask)
    if r is None:
        positives, _ = _pair_masks(labels, mask)
        candidates = mask[None, :] & ~tf.eye(tf.shape(x)[0], dtype=tf.bool)
        logits = tf.matmul(x, x, transpose_b=True)
    else:
        positives, _ = _pair_masks(labels, mask, r_labels, r_mask, ref_offset)
        candidates = mask[:, None] & r_mask[None, :]
        if ref_offset is not None:
            candidates &= ~distances.self_columns(tf.shape(x)[0], tf.shape(r)[0], ref_offset)
        logits = tf.matmul(x, r, transpose_b=True)
    logits *= scale
    log_z = reductions.masked_logsumexp(logits, candidates, 1)
    num_pos = tf.reduce_sum(tf.cast(positives, tf.float32), axis=1)
    pos_logit_sum = tf.reduce_sum(tf.where(positives, logits, tf.zeros_like(logits)), axis=1)
    has = num_pos > 0
    per_row = tf.where(has, log_z - pos_logit_sum / tf.maximum(num_pos, 1.0), 0.0)
    loss = reductions.safe_divide(tf.reduce_sum(per_row), tf.reduce_sum(tf.cast(has, tf.float32)))
    if l2_penalty and r is None:
        loss += _embedding_l2(x, mask, float(l2_penalty))
    return loss


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
    r, r_labels, r_mask = reference_set(x, labels, mask, ref_embeddings, ref_labels, ref_mask)
    if r is None:
        d = distances.euclidean(x, squared=False)
        same = tf.equal(labels[:, None], labels[None, :])
        b = tf.shape(x)[0]
        upper = tf.linalg.band_part(tf.ones([b, b]), 0, -1) - tf.eye(b)
        pairs = (upper > 0) & mask[:, None] & mask[None, :]
    else:
        d = distances.euclidean(x, squared=False, r=r, ref_offset=ref_offset)
        same = tf.equal(labels[:, None], r_labels[None, :])
        pairs = mask[:, None] & r_mask[None, :]
        if ref_offset is not None:
            pairs &= ~distances.self_columns(tf.shape(x)[0], tf.shape(r)[0], ref_offset)
    per_pair = pairwise_contrastive_loss(d, tf.cast(same, tf.float32), margin)
    total = tf.reduce_sum(tf.where(pairs, per_pair, tf.zeros_like(per_pair)))
    return reductions.safe_divide(total, tf.reduce_sum(tf.cast(pairs, tf.float32)))


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
    return reductions.safe_divide(total, count)


def multi_similarity_parts(embeddings, labels, alpha: float = 2.0, beta: float = 50.0,
                           base: float = 0.5, epsilon: float = 0.1, sample_mask=None, *,
                           ref_embeddings=None, ref_labels=None, ref_mask=None,
                           ref_offset=None):
    """(sum over anchors, number of valid anchors) of `multi_similarity_loss`."""
    x, labels, mask, _ = _check_inputs(embeddings, labels, sample_mask)
    r, r_labels, r_mask = reference_set(x, labels, mask, ref_embeddings, ref_labels, ref_mask)
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
    pos_term = tf.nn.softplus(
        reductions.masked_logsumexp(-alpha * (s - base), mined_pos, 1)) / alpha
    neg_term = tf.nn.softplus(reductions.masked_logsumexp(beta * (s - base), mined_neg, 1)) / beta
    per_anchor = tf.where(use, pos_term + neg_term, tf.zeros_like(pos_term))
    return tf.reduce_sum(per_anchor), tf.reduce_sum(tf.cast(mask, s.dtype))
