"""k-means for the local sampler's refresh: scikit-learn or TensorFlow.

The refresh clusters the training embeddings into `n // batch_size`
neighbourhoods (SOP: 60k x 512 into ~300 clusters). `kmeans(..., method=...)`
runs either scikit-learn's `KMeans` (Lloyd, CPU, float64) or `tf_kmeans`, a
TensorFlow implementation that runs wherever TensorFlow places it (the GPU
when there is one) so a refresh does not wait on the host CPU.

`tf_kmeans`:
  * init: greedy k-means++ (as scikit-learn: each new centre is the best of
    `2 + log(k)` candidates drawn with probability proportional to D^2), or
    `random` (k distinct points); seeded with stateless random ops, so the same
    seed on the same device gives the same result.
  * Lloyd iterations in one `tf.function`: assignments from chunked squared
    distances ||x||^2 - 2 x.c + ||c||^2 (at most `chunk_size` x k floats live at
    once), centres from `unsorted_segment_sum`; stops when the squared centre
    shift falls below `tol` x mean feature variance (scikit-learn's rule) or
    after `max_iter` iterations. An empty cluster keeps its previous centre.
  * Works in float32 (scikit-learn here gets float64).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math

import numpy as np
import tensorflow as tf

METHODS = ("sklearn", "tf")


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


def _kmeans_pp(x, x_sq, k, seed: tf.Tensor, n_local_trials):
    """Greedy k-means++ initial centres [k, d]."""
    n = tf.shape(x)[0]
    first = tf.random.stateless_uniform([], seed, 0, n, dtype=tf.int32)
    centers = tf.TensorArray(tf.float32, size=k, element_shape=x.shape[1:])
    centers = centers.write(0, x[first])
    closest = _sq_dist(x, x_sq, x[first][None, :])[:, 0]
    for j in tf.range(1, k):
        # Candidates with probability proportional to the current D^2.
        total = tf.reduce_sum(closest)
        cum = tf.cumsum(closest)
        u = tf.random.stateless_uniform(
            [n_local_trials], tf.random.experimental.stateless_fold_in(seed, j)) * total
        cand = tf.minimum(tf.searchsorted(cum, u, side="right", out_type=tf.int32), n - 1)
        cand_x = tf.gather(x, cand)
        d = tf.minimum(_sq_dist(x, x_sq, cand_x), closest[:, None])  # [n, trials]
        best = tf.argmin(tf.reduce_sum(d, axis=0), output_type=tf.int32)
        closest = d[:, best]
        centers = centers.write(j, cand_x[best])
    return centers.stack()


@tf.function(reduce_retracing=True)
def _lloyd(x, centers, max_iter, tol, chunk):
    """Lloyd iterations from `centers`; returns (labels, centers, inertia, n_iter)."""
    x_sq = tf.reduce_sum(tf.square(x), axis=1)
    k = tf.shape(centers)[0]
    it = tf.constant(0)
    shift = tf.constant(np.inf, tf.float32)
    while it < max_iter and shift > tol:
        labels, _ = _assign(x, x_sq, centers, chunk)
        sums = tf.math.unsorted_segment_sum(x, labels, k)
        counts = tf.math.unsorted_segment_sum(tf.ones_like(x_sq), labels, k)
        new = tf.where(counts[:, None] > 0, sums / tf.maximum(counts[:, None], 1.0), centers)
        new = tf.reshape(new, tf.shape(centers))
        shift = tf.reduce_sum(tf.square(new - centers))
        centers = new
        it += 1
    labels, dists = _assign(x, x_sq, centers, chunk)
    return labels, centers, tf.reduce_sum(dists), it


@tf.function(reduce_retracing=True)
def _init_pp(x, k, seed, n_local_trials):
    x_sq = tf.reduce_sum(tf.square(x), axis=1)
    return _kmeans_pp(x, x_sq, k, seed, n_local_trials)


def tf_kmeans(
    x: np.ndarray,
    n_clusters: int,
    seed: int = 0,
    max_iter: int = 100,
    tol: float = 1e-4,
    init: str = "k-means++",
    chunk_size: int = 8192,
    device: str | None = None,
) -> KMeansResult:
    """k-means (Lloyd) in TensorFlow; see the module docstring.

    Args:
      x: [N, d] points (cast to float32).
      n_clusters: k, 1 <= k <= N.
      seed: seed of the initialisation.
      max_iter: maximum Lloyd iterations.
      tol: stop when the squared centre shift < tol x mean per-feature variance.
      init: "k-means++" (greedy, as scikit-learn) or "random".
      chunk_size: rows per distance chunk (memory: chunk_size x k floats).
      device: TF device string (default: TensorFlow's placement, GPU if any).

    Returns:
      KMeansResult.
    """
    x = _check(x, n_clusters).astype(np.float32, copy=False)
    if init not in ("k-means++", "random"):
        raise ValueError(f"init must be 'k-means++' or 'random', got {init!r}.")
    if chunk_size < 1 or max_iter < 1:
        raise ValueError(f"chunk_size and max_iter must be >= 1, got {chunk_size}, {max_iter}.")
    scaled_tol = float(tol * np.mean(np.var(x, axis=0)))
    seed_t = tf.constant([seed % (2**31 - 1), 7919], tf.int32)
    with tf.device(device) if device else contextlib.nullcontext():
        xt = tf.constant(x)
        k = int(n_clusters)
        if init == "random":
            perm = tf.random.experimental.stateless_shuffle(tf.range(x.shape[0]), seed_t)
            centers = tf.gather(xt, perm[:k])
        else:
            trials = 2 + int(math.log(k))
            centers = _init_pp(xt, tf.constant(k), seed_t, tf.constant(trials))
        labels, centers, inertia, n_iter = _lloyd(
            xt, centers, tf.constant(max_iter), tf.constant(scaled_tol, tf.float32),
            tf.constant(min(chunk_size, x.shape[0])))
    return KMeansResult(labels.numpy().astype(np.int64), centers.numpy(), float(inertia),
                        int(n_iter))


def sklearn_kmeans(
    x: np.ndarray, n_clusters: int, seed: int = 0, max_iter: int = 100, tol: float = 1e-4
) -> KMeansResult:
    """scikit-learn `KMeans` (k-means++, one init, Lloyd) on float64 copies."""
    from sklearn.cluster import KMeans

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
