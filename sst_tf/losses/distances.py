"""Distances between embeddings: squared Euclidean, Euclidean and cosine.

`squared_euclidean` (the paper's losses, `sst_tf.neighbors`) is the plain
Gram-matrix form clamped at 0; `euclidean` and `cosine_distance` are
tensorflow-addons' forms (exact zeros on the diagonal, a zero gradient where
a distance is 0); `distance_matrix` picks one by tensorflow-addons' names. Each
takes an optional reference set `r` (rows of other batches, a memory): then
the matrix is [B, R], and `ref_offset` says where the batch sits in `r`.
"""

from __future__ import annotations

import tensorflow as tf

from sst_tf.neighbors import pairwise_squared_distances as squared_euclidean

__all__ = ["cosine_distance", "distance_matrix", "euclidean", "self_columns", "squared_euclidean"]


def euclidean(x: tf.Tensor, squared: bool = False, r: tf.Tensor | None = None,
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
    return tf.where(self_columns(tf.shape(x)[0], tf.shape(r)[0], ref_offset),
                    tf.zeros_like(d), d)


def self_columns(b, n, ref_offset) -> tf.Tensor:
    """[b, n] bool: True at (i, ref_offset + i), where anchor i sits in the reference set."""
    rows = tf.cast(ref_offset, tf.int32) + tf.range(b)[:, None]
    return tf.equal(tf.range(n)[None, :], rows)


def cosine_distance(x: tf.Tensor, r: tf.Tensor | None = None) -> tf.Tensor:
    """1 - cosine similarity of the rows (to the rows of `r`), clamped at 0 (tfa's form)."""
    x = tf.math.l2_normalize(x, axis=1)
    y = x if r is None else tf.math.l2_normalize(r, axis=1)
    return tf.maximum(1.0 - tf.matmul(x, y, transpose_b=True), 0.0)


def distance_matrix(x: tf.Tensor, distance_metric, r: tf.Tensor | None = None,
                    ref_offset=None) -> tf.Tensor:
    """[B, B] (or [B, R] to `r`) distances by tensorflow-addons' name or a callable.

    `distance_metric`: "L2" (`euclidean`), "squared-L2", "angular"
    (`cosine_distance`), or a callable mapping [B, d] to [B, B] (no `r`).
    """
    if callable(distance_metric):
        if r is not None:
            raise ValueError("a callable distance_metric maps one batch to its [B, B] "
                             "matrix; with a reference set give 'L2', 'squared-L2' or "
                             "'angular'")
        return tf.cast(distance_metric(x), x.dtype)
    if distance_metric == "L2":
        return euclidean(x, squared=False, r=r, ref_offset=ref_offset)
    if distance_metric == "squared-L2":
        return euclidean(x, squared=True, r=r, ref_offset=ref_offset)
    if distance_metric == "angular":
        return cosine_distance(x, r)
    raise ValueError(
        "distance_metric must be 'L2', 'squared-L2', 'angular' or a callable, "
        f"got {distance_metric!r}"
    )
