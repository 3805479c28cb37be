"""Target-neighbour tables and pairwise distance helpers.

Both public functions accept either NumPy arrays (the sampler's path; results
are NumPy) or TensorFlow tensors (usable inside `tf.function`, e.g. to pick
targets online from the current embeddings; results are tensors).
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

    NumPy input (the sampler) is computed in float64 and returns a NumPy int32
    array. Tensor input is computed in float32 and returns an int32 tensor; it
    works inside `tf.function` (the batch size may be dynamic; `k` is a Python
    int). NaN checks and empty-input checks need concrete values: they run for
    NumPy input and for eager tensors.

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
    if _is_tensor(embeddings) or _is_tensor(labels) or _is_tensor(sample_mask):
        return _target_neighbors_tf(embeddings, labels, k, sample_mask)
    return _target_neighbors_np(embeddings, labels, k, sample_mask)


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


def _target_neighbors_np(embeddings, labels, k, sample_mask):
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


def _target_neighbors_tf(embeddings, labels, k, sample_mask):
    emb = tf.convert_to_tensor(embeddings)
    lab = tf.convert_to_tensor(labels)
    mask = None if sample_mask is None else tf.cast(sample_mask, tf.bool)
    _check_shapes(
        emb.shape.as_list() if emb.shape.rank is not None else [None] * 2,
        lab.shape.as_list() if lab.shape.rank is not None else [None],
        None if mask is None else mask.shape.as_list(),
    )
    if tf.executing_eagerly() and bool(tf.reduce_any(tf.math.is_nan(tf.cast(emb, tf.float32)))):
        raise ValueError("embeddings contains NaN")
    n = tf.shape(emb)[0]
    d = pairwise_squared_distances(emb)
    valid = tf.equal(lab[:, None], lab[None, :])
    valid = tf.logical_and(valid, tf.logical_not(tf.eye(n, dtype=tf.bool)))
    if mask is not None:
        valid = tf.logical_and(valid, tf.logical_and(mask[:, None], mask[None, :]))
    neg = tf.where(valid, -d, tf.constant(-np.inf, tf.float32))
    kk = tf.minimum(k, n)
    # top_k puts the lower index first among equal values.
    _, idx = tf.math.top_k(neg, k=kk, sorted=True)
    ok = tf.gather(valid, idx, batch_dims=1)
    idx = tf.where(ok, idx, -1)
    idx = tf.pad(idx, [[0, 0], [0, k - kk]], constant_values=-1)
    idx = tf.ensure_shape(tf.cast(idx, tf.int32), [None, k])
    return idx
