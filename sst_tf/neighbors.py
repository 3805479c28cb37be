"""Target-neighbour tables and pairwise distance helpers.

`pairwise_squared_distances` accepts NumPy arrays (results are NumPy) or
TensorFlow tensors (results are tensors, usable inside `tf.function`);
`target_neighbors` is the samplers' NumPy path.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def _is_tensor(x) -> bool:
    return isinstance(x, tf.Tensor | tf.Variable) or tf.is_symbolic_tensor(x)


def pairwise_squared_distances(a, b=None):
    """Squared Euclidean distances between the rows of `a` and the rows of `b`.

    Computed as ||a||^2 + ||b||^2 - 2 a.b^T, clamped at 0. When `b` is None the
    distances are between the rows of `a` and the diagonal is exactly 0.

    Args:
      a: [N, d] array or tensor.
      b: optional [M, d] array or tensor (defaults to `a`).

    Returns:
      [N, M] distances: float32 tensor for tensor input (any float dtype is
      cast to float32 first), float64 NumPy array for NumPy input.
    """
    if _is_tensor(a) or _is_tensor(b):
        a = tf.cast(a, tf.float32)
        same = b is None
        b = a if same else tf.cast(b, tf.float32)
        sq_a = tf.reduce_sum(tf.square(a), axis=1)
        sq_b = tf.reduce_sum(tf.square(b), axis=1)
        d = sq_a[:, None] + sq_b[None, :] - 2.0 * tf.matmul(a, b, transpose_b=True)
        d = tf.maximum(d, 0.0)
        if same:
            d = tf.linalg.set_diag(d, tf.zeros_like(sq_a))
        return d
    a = np.asarray(a, dtype=np.float64)
    same = b is None
    b = a if same else np.asarray(b, dtype=np.float64)
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    np.maximum(d, 0.0, out=d)
    if same:
        np.fill_diagonal(d, 0.0)
    return d


def _check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise ValueError(f"k must be a positive int, got {k!r}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return int(k)


def target_neighbors(embeddings, labels, k: int, sample_mask=None):
    """Per row, the `k` nearest rows of the same class (docs/method.md#local-sampling, step 3).

    Distance is squared Euclidean. A row is never its own target neighbour;
    masked rows (`sample_mask` False) are never targets and get no targets.
    Among equal distances the lower row index comes first. Rows with fewer than
    `k` same-class partners are padded with -1.

    Computed in float64 with NumPy (the samplers' path, between steps); eager
    tensors are converted. Returns a NumPy int32 array.

    Args:
      embeddings: [B, d] float array or tensor.
      labels: [B] int labels.
      k: number of target neighbours per row (>= 1).
      sample_mask: optional [B] bool; False marks padding rows.

    Returns:
      [B, k] int32 table of row indices, -1 where there is no target.

    Raises:
      ValueError: on wrong ranks, mismatched lengths, k < 1, empty input or NaN
        embeddings.
    """
    k = _check_k(k)
    if any(_is_tensor(x) and not tf.executing_eagerly() for x in (embeddings, labels)):
        raise ValueError("target_neighbors runs on concrete arrays (between steps), not "
                         "inside tf.function: pass NumPy arrays or eager tensors")
    return _target_neighbors_np(*(np.asarray(x) if x is not None else None
                                  for x in (embeddings, labels, sample_mask)), k)


def _check_shapes(emb_shape, lab_shape, mask_shape):
    if len(emb_shape) != 2:
        raise ValueError(f"embeddings must have rank 2 [B, d], got shape {tuple(emb_shape)}")
    if len(lab_shape) != 1:
        raise ValueError(f"labels must have rank 1 [B], got shape {tuple(lab_shape)}")
    if mask_shape is not None and len(mask_shape) != 1:
        raise ValueError(f"sample_mask must have rank 1 [B], got shape {tuple(mask_shape)}")
    n = emb_shape[0]
    if n is not None and lab_shape[0] is not None and n != lab_shape[0]:
        raise ValueError(f"labels has length {lab_shape[0]} but embeddings has {n} rows")
    if mask_shape is not None and n is not None and mask_shape[0] is not None:
        if mask_shape[0] != n:
            raise ValueError(f"sample_mask has length {mask_shape[0]} but embeddings has {n} rows")
    if n == 0:
        raise ValueError("embeddings is empty (0 rows)")


def _target_neighbors_np(embeddings, labels, sample_mask, k):
    emb = np.asarray(embeddings)
    lab = np.asarray(labels)
    mask = None if sample_mask is None else np.asarray(sample_mask, dtype=bool)
    _check_shapes(emb.shape, lab.shape, None if mask is None else mask.shape)
    emb = emb.astype(np.float64)
    if np.isnan(emb).any():
        raise ValueError("embeddings contains NaN")
    n = emb.shape[0]
    d = pairwise_squared_distances(emb)
    valid = lab[:, None] == lab[None, :]
    np.fill_diagonal(valid, False)
    if mask is not None:
        valid &= mask[:, None] & mask[None, :]
    d = np.where(valid, d, np.inf)
    kk = min(k, n)
    order = np.argsort(d, axis=1, kind="stable")[:, :kk]
    ok = np.take_along_axis(valid, order, axis=1)
    out = np.full((n, k), -1, dtype=np.int32)
    out[:, :kk] = np.where(ok, order, -1)
    return out
