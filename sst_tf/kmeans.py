"""k-means in TensorFlow (or scikit-learn): the sampler's refresh and NMI.

Two users: the local sampler's refresh clusters the training embeddings into
`n // batch_size` neighbourhoods (SOP: 60k x 512 into ~300 clusters), and the
NMI of `sst_tf.evaluation` clusters a test split into one cluster per class
(SOP: 60k x 512 into ~11,000 clusters). `kmeans(..., method=...)` runs either
scikit-learn's `KMeans` (Lloyd, CPU, float64) or `tf_kmeans`, a TensorFlow
implementation that runs wherever TensorFlow places it (the GPU when there is
one).

`tf_kmeans`:
  * init: k-means++ (`kmeans_plusplus`), by default greedy as scikit-learn
    (each new centre is the best of `2 + log(k)` candidates drawn with
    probability proportional to D^2, the squared distance to the nearest
    centre so far); `n_local_trials=1` is plain k-means++. Or `random` (k
    distinct points). Seeded with stateless random ops: the same seed on the
    same device gives the same result.
  * k-means++ in blocks: done one centre at a time, each new centre needs the
    distances of all N points to its candidates, a thin [N, trials] product
    per centre that reads all of x from memory k times. Here a block draws a
    pool of proposals from the D^2 of the block's start, computes their
    distances to all points in one [pool, N] matrix product, then picks
    centres one after another from the pool by rejection: a proposal p is
    kept with probability D^2_now(p) / D^2_start(p), which makes every kept
    proposal an exact draw from the current D^2 distribution (the
    distances only shrink). When the pool runs out a new block starts. The
    result has the same distribution as the sequential algorithm; the cost
    is one big matrix product per block instead of k thin ones.
  * Lloyd iterations in one `tf.function`: assignments from chunked squared
    distances ||x||^2 - 2 x.c + ||c||^2 (at most `chunk_size` x k floats
    live at once; by default the chunk keeps that block near 128 MiB),
    centres from `unsorted_segment_sum`. An empty cluster's centre moves to
    the point farthest from its own centre (the next farthest for the next
    empty cluster, as scikit-learn does). Stops when no label changes, when
    the squared centre shift falls below `tol` x mean feature variance
    (scikit-learn's rule) or after `max_iter` iterations.
  * Works in float32 (scikit-learn here gets float64).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math

import numpy as np
import tensorflow as tf
from sklearn.cluster import KMeans

from sst_tf.config import KMEANS_METHODS

# Elements of the largest [rows, N] or [rows, k] float32 block (32 Mi floats = 128 MiB).
_BLOCK_ELEMENTS = 1 << 25

METHODS = KMEANS_METHODS  # the --kmeans choices


@dataclasses.dataclass
class KMeansResult:
    """Result of a k-means run.

    Attributes:
      labels: int64 [N] cluster of each point.
      centers: float32 [k, d] cluster centres.
      inertia: sum of squared distances of points to their centres.
      n_iter: Lloyd iterations run.
    """

    labels: np.ndarray
    centers: np.ndarray
    inertia: float
    n_iter: int


def _check(x: np.ndarray, n_clusters: int) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"k-means input must be a non-empty [N, d] array, got shape {x.shape}.")
    if not 1 <= n_clusters <= x.shape[0]:
        raise ValueError(f"n_clusters must be in [1, N={x.shape[0]}], got {n_clusters}.")
    if not np.isfinite(x).all():
        raise ValueError("k-means input contains NaN or Inf.")
    return x


def _sq_dist(x: tf.Tensor, x_sq: tf.Tensor, c: tf.Tensor) -> tf.Tensor:
    """[n, k] squared distances, clamped at 0."""
    c_sq = tf.reduce_sum(tf.square(c), axis=1)
    d = x_sq[:, None] - 2.0 * tf.matmul(x, c, transpose_b=True) + c_sq[None, :]
    return tf.maximum(d, 0.0)


def _assign(x: tf.Tensor, x_sq: tf.Tensor, c: tf.Tensor, chunk: int):
    """Nearest centre and its squared distance for every row, in chunks of rows."""
    n = tf.shape(x)[0]
    num_chunks = (n + chunk - 1) // chunk
    labels = tf.TensorArray(tf.int32, size=num_chunks, infer_shape=False)
    dists = tf.TensorArray(tf.float32, size=num_chunks, infer_shape=False)
    for i in tf.range(num_chunks):
        lo = i * chunk
        hi = tf.minimum(lo + chunk, n)
        d = _sq_dist(x[lo:hi], x_sq[lo:hi], c)
        a = tf.argmin(d, axis=1, output_type=tf.int32)
        labels = labels.write(i, a)
        dists = dists.write(i, tf.gather(d, a, batch_dims=1))
    return labels.concat(), dists.concat()


def _pool_sq_dist(x: tf.Tensor, x_sq: tf.Tensor, idx: tf.Tensor) -> tf.Tensor:
    """[P, N] squared distances from the points x[idx] to every row of x."""
    d = (tf.gather(x_sq, idx)[:, None] - 2.0 * tf.matmul(tf.gather(x, idx), x, transpose_b=True)
         + x_sq[None, :])
    return tf.maximum(d, 0.0)


@tf.function(reduce_retracing=True)
def _kmeans_pp(x, k, seed, n_local_trials, pool_size):
    """Indices [k] of k-means++ centres, drawn in blocks (module docstring)."""
    n = tf.shape(x)[0]
    x_sq = tf.reduce_sum(tf.square(x), axis=1)
    first = tf.random.stateless_uniform([], seed, 0, n, dtype=tf.int32)
    closest = tf.tensor_scatter_nd_update(_pool_sq_dist(x, x_sq, first[None])[0], [[first]], [0.0])
    chosen = tf.TensorArray(tf.int32, size=k)
    chosen = chosen.write(0, first)
    count = tf.constant(1)
    block = tf.constant(0)
    while count < k:
        block += 1
        bseed = tf.random.experimental.stateless_fold_in(seed, block)
        weight = tf.cast(closest, tf.float64)
        total = tf.reduce_sum(weight)
        u = tf.random.stateless_uniform([pool_size], bseed, dtype=tf.float64) * total
        by_d2 = tf.searchsorted(tf.cumsum(weight), u, side="right", out_type=tf.int32)
        # All D^2 zero (fewer distinct points than k): any point will do.
        any_point = tf.random.stateless_uniform([pool_size], bseed, 0, n, dtype=tf.int32)
        pool = tf.where(total > 0, tf.minimum(by_d2, n - 1), any_point)
        keep_u = tf.random.stateless_uniform(
            [pool_size], tf.random.experimental.stateless_fold_in(bseed, 1))
        start_d2 = tf.gather(closest, pool)
        dist = _pool_sq_dist(x, x_sq, pool)  # [pool, N]
        ptr = tf.constant(0)
        while count < k and ptr < pool_size:
            # Proposal p is an exact draw from the current D^2 when kept with
            # probability D^2_now(p) / D^2_start(p).
            kept = (keep_u[ptr:] * tf.gather(start_d2, tf.range(ptr, pool_size))
                    < tf.gather(closest, pool[ptr:])) | (total <= 0)
            rank = tf.cumsum(tf.cast(kept, tf.int32))
            if rank[-1] < n_local_trials:
                ptr = pool_size  # the pool is used up: next block
            else:
                rows = ptr + tf.cast(tf.where(kept & (rank <= n_local_trials))[:, 0], tf.int32)
                cand = tf.minimum(tf.gather(dist, rows), closest[None, :])  # [trials, N]
                best = tf.argmin(tf.reduce_sum(cand, axis=1), output_type=tf.int32)
                new = pool[rows[best]]
                closest = tf.tensor_scatter_nd_update(cand[best], [[new]], [0.0])
                chosen = chosen.write(count, new)
                count += 1
                ptr = rows[-1] + 1
    return chosen.stack()


@tf.function(reduce_retracing=True)
def _lloyd(x, centers, max_iter, tol, chunk):
    """Lloyd iterations from `centers`; returns (labels, centers, inertia, n_iter)."""
    x_sq = tf.reduce_sum(tf.square(x), axis=1)
    k = tf.shape(centers)[0]
    labels, dists = _assign(x, x_sq, centers, chunk)
    it = tf.constant(0)
    shift = tf.constant(np.inf, tf.float32)
    changed = tf.constant(True)
    while it < max_iter and shift > tol and changed:
        sums = tf.math.unsorted_segment_sum(x, labels, k)
        counts = tf.math.unsorted_segment_sum(tf.ones_like(x_sq), labels, k)
        new = tf.where(counts[:, None] > 0, sums / tf.maximum(counts[:, None], 1.0), centers)
        # Empty clusters move to the points farthest from their centres.
        empty = tf.cast(tf.where(counts == 0)[:, 0], tf.int32)
        far = tf.math.top_k(dists, k=tf.size(empty)).indices
        new = tf.tensor_scatter_nd_update(new, empty[:, None], tf.gather(x, far))
        new = tf.reshape(new, tf.shape(centers))
        shift = tf.reduce_sum(tf.square(new - centers))
        centers = new
        new_labels, dists = _assign(x, x_sq, centers, chunk)
        changed = tf.reduce_any(tf.not_equal(new_labels, labels))
        labels = new_labels
        it += 1
    return labels, centers, tf.reduce_sum(dists), it


def _trials(n_clusters: int, n_local_trials: int | None) -> int:
    trials = 2 + int(math.log(n_clusters)) if n_local_trials is None else int(n_local_trials)
    if trials < 1:
        raise ValueError(f"n_local_trials must be >= 1, got {n_local_trials}.")
    return trials


def _pool_size(n: int, n_clusters: int, trials: int) -> int:
    """Proposals per k-means++ block: all centres' worth, capped at one 128 MiB block."""
    wanted = int(1.25 * (n_clusters - 1) * trials) + trials
    return max(trials, min(wanted, _BLOCK_ELEMENTS // n))


def kmeans_plusplus(
    x: np.ndarray,
    n_clusters: int,
    seed: int = 0,
    n_local_trials: int | None = None,
    device: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """k-means++ initial centres in TensorFlow (blocked; see the module docstring).

    Args:
      x: [N, d] points (cast to float32).
      n_clusters: k, 1 <= k <= N.
      seed: seed of the stateless random draws.
      n_local_trials: candidates per centre, the best (lowest cost) is kept;
        default `2 + int(log(k))` (greedy, as scikit-learn); 1 is plain k-means++.
      device: TF device string (default: TensorFlow's placement, GPU if any).

    Returns:
      (centres [k, d] float32, indices [k] int64 of the chosen rows of x).
    """
    x = _check(x, n_clusters).astype(np.float32, copy=False)
    with tf.device(device) if device else contextlib.nullcontext():
        idx = _init_indices(tf.constant(x), n_clusters, seed, _trials(n_clusters, n_local_trials))
    idx = idx.numpy().astype(np.int64)
    return x[idx], idx


def _init_indices(xt: tf.Tensor, k: int, seed: int, trials: int) -> tf.Tensor:
    seed_t = tf.constant([seed % (2**31 - 1), 7919], tf.int32)
    pool = _pool_size(int(xt.shape[0]), k, trials)
    return _kmeans_pp(xt, tf.constant(k), seed_t, tf.constant(trials), tf.constant(pool))


def tf_kmeans(
    x: np.ndarray,
    n_clusters: int,
    seed: int = 0,
    max_iter: int = 100,
    tol: float = 1e-4,
    init: str | np.ndarray = "k-means++",
    chunk_size: int | None = None,
    device: str | None = None,
    n_local_trials: int | None = None,
) -> KMeansResult:
    """k-means (Lloyd) in TensorFlow; see the module docstring.

    Args:
      x: [N, d] points (cast to float32).
      n_clusters: k, 1 <= k <= N.
      seed: seed of the initialisation.
      max_iter: maximum Lloyd iterations.
      tol: stop when the squared centre shift < tol x mean per-feature variance.
      init: "k-means++" (`kmeans_plusplus`), "random" (k distinct points) or a
        [k, d] array of initial centres.
      chunk_size: rows per distance chunk (memory: chunk_size x k floats);
        default keeps one chunk near 128 MiB.
      device: TF device string (default: TensorFlow's placement, GPU if any).
      n_local_trials: k-means++ candidates per centre (default 2 + log(k)).

    Returns:
      KMeansResult.
    """
    x = _check(x, n_clusters).astype(np.float32, copy=False)
    k = int(n_clusters)
    given = None
    if isinstance(init, np.ndarray):
        given = init.astype(np.float32)
        if given.shape != (k, x.shape[1]) or not np.isfinite(given).all():
            raise ValueError(f"init array must be finite with shape {(k, x.shape[1])}, got "
                             f"{init.shape}.")
    elif init not in ("k-means++", "random"):
        raise ValueError(f"init must be 'k-means++', 'random' or an array, got {init!r}.")
    if chunk_size is None:
        chunk_size = max(1, _BLOCK_ELEMENTS // k)
    if chunk_size < 1 or max_iter < 1:
        raise ValueError(f"chunk_size and max_iter must be >= 1, got {chunk_size}, {max_iter}.")
    trials = _trials(k, n_local_trials)
    scaled_tol = float(tol * np.mean(np.var(x, axis=0)))
    with tf.device(device) if device else contextlib.nullcontext():
        xt = tf.constant(x)
        if given is not None:
            centers = tf.constant(given)
        elif init == "random":
            seed_t = tf.constant([seed % (2**31 - 1), 7919], tf.int32)
            perm = tf.random.experimental.stateless_shuffle(tf.range(x.shape[0]), seed_t)
            centers = tf.gather(xt, perm[:k])
        else:
            centers = tf.gather(xt, _init_indices(xt, k, seed, trials))
        labels, centers, inertia, n_iter = _lloyd(
            xt, centers, tf.constant(max_iter), tf.constant(scaled_tol, tf.float32),
            tf.constant(min(chunk_size, x.shape[0])))
    return KMeansResult(labels.numpy().astype(np.int64), centers.numpy(), float(inertia),
                        int(n_iter))


def sklearn_kmeans(
    x: np.ndarray, n_clusters: int, seed: int = 0, max_iter: int = 100, tol: float = 1e-4
) -> KMeansResult:
    """scikit-learn `KMeans` (k-means++, one init, Lloyd) on float64 copies."""
    x = _check(x, n_clusters)
    km = KMeans(n_clusters=n_clusters, n_init=1, max_iter=max_iter, tol=tol, random_state=seed)
    labels = km.fit_predict(x.astype(np.float64))
    return KMeansResult(labels.astype(np.int64), km.cluster_centers_.astype(np.float32),
                        float(km.inertia_), int(km.n_iter_))


def kmeans(x: np.ndarray, n_clusters: int, method: str = "sklearn", seed: int = 0,
           max_iter: int = 100, **kwargs) -> KMeansResult:
    """k-means by `method` ("sklearn" or "tf"); kwargs go to the implementation."""
    if method == "sklearn":
        return sklearn_kmeans(x, n_clusters, seed=seed, max_iter=max_iter, **kwargs)
    if method == "tf":
        return tf_kmeans(x, n_clusters, seed=seed, max_iter=max_iter, **kwargs)
    raise ValueError(f"kmeans method must be one of {METHODS}, got {method!r}.")
