"""Softmax-contrastive losses on labels: SupCon and NT-Xent (InfoNCE), and Circle loss.

All three work on the batch's cosine-similarity matrix: every other row of
the same label is a positive of a row, every row of another label a
negative. Values and gradients follow pytorch-metric-learning (PML), its
parameter names and defaults: SupCon temperature 0.1 (Khosla et al. 2020),
NT-Xent temperature 0.07 (Chen et al. 2020, on labels: each positive pair
against the anchor's negatives), Circle m 0.4 and gamma 80 (Sun et al. 2020).
With two augmented views of each image as the only positives, NT-Xent is
SimCLR's loss: give both views one label.
"""

from __future__ import annotations

import tensorflow as tf

from sst_tf.losses.common import _check_inputs


def _pair_masks(x, labels, mask):
    """Cosine matrix [B, B] and the positive / negative pair masks (no self pairs)."""
    u = tf.math.l2_normalize(x, axis=1)
    sim = tf.matmul(u, u, transpose_b=True)
    valid = mask[:, None] & mask[None, :]
    same = tf.equal(labels[:, None], labels[None, :])
    eye = tf.eye(tf.shape(x)[0], dtype=tf.bool)
    return sim, same & valid & ~eye, ~same & valid


def _logsumexp(x, keep):
    """log(sum over `keep` of exp(x)) per row; -inf-free (1e30 below) for an empty row."""
    masked = tf.where(keep, x, tf.constant(-1e30, x.dtype))  # mask the argument, not exp
    top = tf.stop_gradient(tf.reduce_max(masked, axis=1, keepdims=True))
    total = tf.reduce_sum(tf.where(keep, tf.exp(masked - top), 0.0), axis=1)
    return tf.math.log(tf.maximum(total, 1e-30)) + top[:, 0]


def _mean_nonzero(losses):
    """PML's AvgNonZeroReducer: the mean of the positive entries, 0 when there is none."""
    positive = losses > 0
    count = tf.reduce_sum(tf.cast(positive, losses.dtype))
    return tf.math.divide_no_nan(tf.reduce_sum(tf.where(positive, losses, 0.0)), count)


def supcon_loss(embeddings, labels, temperature: float = 0.1, sample_mask=None) -> tf.Tensor:
    """Supervised contrastive loss (SupCon), as PML's `SupConLoss`.

    Per row a: minus the mean over its positives p of log softmax(s_ap / T)
    over all its other rows (positives and negatives); averaged over the
    rows with a positive loss.

    Args:
      embeddings: [B, d] (normalised here).
      labels: [B] labels.
      temperature: T.
      sample_mask: optional [B] bool, False on padding rows.

    Returns:
      Scalar float32; 0.0 when the batch has no positive or no negative pair.
    """
    x, labels, mask, _ = _check_inputs(embeddings, labels, sample_mask)
    sim, pos, neg = _pair_masks(x, labels, mask)
    logits = sim / temperature
    log_prob = logits - _logsumexp(logits, pos | neg)[:, None]
    npos = tf.reduce_sum(tf.cast(pos, tf.float32), axis=1)
    mean_pos = tf.reduce_sum(tf.where(pos, log_prob, 0.0), axis=1) / tf.maximum(npos, 1.0)
    loss = _mean_nonzero(-mean_pos)
    return tf.where(tf.reduce_any(pos) & tf.reduce_any(neg), loss, 0.0)


def ntxent_loss(embeddings, labels, temperature: float = 0.07, sample_mask=None) -> tf.Tensor:
    """NT-Xent / InfoNCE on labels, as PML's `NTXentLoss`.

    Per positive pair (a, p): -log(exp(s_ap / T) / (exp(s_ap / T) + sum over
    the negatives n of a of exp(s_an / T))); averaged over the positive pairs.
    Arguments as `supcon_loss`.
    """
    x, labels, mask, _ = _check_inputs(embeddings, labels, sample_mask)
    sim, pos, neg = _pair_masks(x, labels, mask)
    logits = sim / temperature
    negatives = _logsumexp(logits, neg)  # per anchor; very negative without negatives
    has_neg = tf.reduce_any(neg, axis=1)
    per_pair = tf.nn.softplus(tf.where(has_neg[:, None], negatives[:, None] - logits, -1e30))
    count = tf.reduce_sum(tf.cast(pos, tf.float32))
    loss = tf.math.divide_no_nan(tf.reduce_sum(tf.where(pos, per_pair, 0.0)), count)
    return tf.where(tf.reduce_any(neg), loss, 0.0)


def circle_loss(embeddings, labels, m: float = 0.4, gamma: float = 80.0,
                sample_mask=None) -> tf.Tensor:
    """Circle loss on pairs, as PML's `CircleLoss`.

    Per row: softplus(logsumexp over positives of -gamma a_p (s_p - (1 - m))
    + logsumexp over negatives of gamma a_n (s_n - m)), with the weights
    a_p = relu(1 + m - s_p) and a_n = relu(s_n + m) held constant; rows
    without a positive or a negative count 0; averaged over the rows with a
    positive loss. Arguments as `supcon_loss`; `m` the relaxation, `gamma` the
    scale.
    """
    x, labels, mask, _ = _check_inputs(embeddings, labels, sample_mask)
    sim, pos, neg = _pair_masks(x, labels, mask)
    ap = tf.stop_gradient(tf.nn.relu(1.0 + m - sim))
    an = tf.stop_gradient(tf.nn.relu(sim + m))
    logit_p = -gamma * ap * (sim - (1.0 - m))
    logit_n = gamma * an * (sim - m)
    has = tf.reduce_any(pos, axis=1) & tf.reduce_any(neg, axis=1)
    total = _logsumexp(logit_p, pos) + _logsumexp(logit_n, neg)
    losses = tf.where(has, tf.nn.softplus(tf.where(has, total, 0.0)), 0.0)
    return _mean_nonzero(losses)
