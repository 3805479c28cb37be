"""Masked reductions of the losses: means, log-sum-exps, maxima and minima over masks.

A row or batch with nothing in its mask reduces to a fixed value (0, or the
caller's fallback) with a zero gradient, never to NaN.
"""

from __future__ import annotations

import tensorflow as tf


def masked_mean(values, valid, count):
    """Sum of `values` where `valid`, divided by `count` (0 when `count` is 0)."""
    total = tf.reduce_sum(tf.where(valid, values, tf.zeros_like(values)))
    return tf.math.divide_no_nan(total, count)


def masked_logsumexp(x: tf.Tensor, mask: tf.Tensor, axis: int) -> tf.Tensor:
    """log(sum over mask of exp(x)) along `axis`; -inf-free: empty sums give -1e30.

    Every exponential of the losses goes through here. The mask is applied to
    the argument of exp, not to its result: entries outside the mask are
    replaced by -1e30 before exp (exp -> 0, gradient 0), so an entry that
    would overflow cannot turn a finite value into a NaN gradient (0 x inf).
    The shift by the row maximum keeps every exp within [0, 1].
    """
    neg = tf.constant(-1e30, x.dtype)
    has = tf.reduce_any(mask, axis=axis, keepdims=True)
    x = tf.where(mask, x, neg)
    m = tf.stop_gradient(tf.where(has, tf.reduce_max(x, axis=axis, keepdims=True), 0.0))
    s = tf.reduce_sum(tf.exp(x - m), axis=axis)
    m = tf.squeeze(m, axis=axis)
    has = tf.squeeze(has, axis=axis)
    return tf.where(has, m + tf.math.log(tf.where(has, s, tf.ones_like(s))), neg)


def masked_max(data, mask, fallback):
    """Row-wise max of `data` over `mask` ([B, ..., B]); `fallback` where a row is empty."""
    neg_inf = tf.constant(-float("inf"), data.dtype)
    m = tf.reduce_max(tf.where(mask, data, neg_inf), axis=-1)
    return tf.where(tf.reduce_any(mask, axis=-1), m, fallback)


def masked_min(data, mask, fallback):
    """Row-wise min of `data` over `mask` ([B, ..., B]); `fallback` where a row is empty."""
    pos_inf = tf.constant(float("inf"), data.dtype)
    m = tf.reduce_min(tf.where(mask, data, pos_inf), axis=-1)
    return tf.where(tf.reduce_any(mask, axis=-1), m, fallback)


def safe_divide(total, count):
    """`total / count`, 0 where `count` is 0 (a loss with nothing to average)."""
    count = tf.cast(count, total.dtype)
    return tf.where(count > 0, total / tf.maximum(count, 1.0), tf.zeros_like(total))
