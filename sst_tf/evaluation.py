"""Retrieval metrics in bounded memory (docs/method.md#evaluation).

Recall@K, MAP@R and R-Precision come from one chunked nearest-neighbour pass:
the queries are processed `chunk_size` rows at a time against all N items,
each chunk keeps only its top-K neighbours (`tf.math.top_k`, on the
accelerator when TensorFlow sees one) and reduces them to per-query numbers
at once. Peak extra memory is a few [chunk_size, N] float32 blocks (the
default chunk keeps one block near 128 MiB; measured < 1 GiB extra at
N = 60,000, see BENCHMARKS.md); an N x N matrix is never built.

Conventions:
  * Distance is squared Euclidean, computed in float32.
  * The query itself is never its own neighbour (other items that are exact
    duplicates of it are ordinary neighbours at distance 0).
  * Ties: neighbours are ordered by (distance, index), i.e. among items at
    exactly the same computed distance the lower index ranks first. Results
    are therefore deterministic and independent of `chunk_size` (up to
    float32 rounding of the distances themselves).
  * Recall@K is averaged over all N queries; a query whose class has no
    other item counts as a miss.
  * MAP@R and R-Precision skip queries with no other same-class item (R = 0);
    they are averaged over the remaining queries and the number skipped is
    logged and returned by `evaluate` as "num_queries_skipped".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from absl import logging
from sklearn.cluster import KMeans
from sklearn.metrics import normalized_mutual_info_score

from sst_tf import kmeans as kmeans_lib

# Elements of the [chunk, N] distance block per chunk (32 Mi floats = 128 MiB).
_DEFAULT_BLOCK_ELEMENTS = 1 << 25


def _validate(embeddings, labels, min_rows: int = 2):
    """Converts to NumPy float32 / int class ids and checks the inputs."""
    if isinstance(embeddings, tf.Tensor | tf.Variable):
        embeddings = embeddings.numpy()
    if isinstance(labels, tf.Tensor | tf.Variable):
        labels = labels.numpy()
    emb = np.asarray(embeddings)
    lab = np.asarray(labels)
    if emb.ndim != 2:
        raise ValueError(f"embeddings must have rank 2 [N, d], got shape {emb.shape}")
    if lab.ndim != 1:
        raise ValueError(f"labels must have rank 1 [N], got shape {lab.shape}")
    if emb.shape[0] != lab.shape[0]:
        raise ValueError(f"labels has length {lab.shape[0]} but embeddings has {emb.shape[0]} rows")
    if emb.shape[0] == 0 or emb.shape[1] == 0:
        raise ValueError(f"embeddings is empty (shape {emb.shape})")
    if emb.shape[0] < min_rows:
        raise ValueError(f"embeddings needs at least {min_rows} rows, got {emb.shape[0]}")
    emb = emb.astype(np.float32, copy=False)
    if not np.isfinite(emb).all():
        raise ValueError("embeddings contains NaN or infinite values")
    _, class_ids = np.unique(lab, return_inverse=True)
    return emb, class_ids.reshape(-1).astype(np.int32)


def _check_ks(ks) -> tuple[int, ...]:
    if isinstance(ks, int | np.integer):
        ks = (ks,)
    ks = tuple(ks)
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"ks must be positive ints, got {k!r}")
    return tuple(int(k) for k in ks)


@tf.function(reduce_retracing=True)
def _chunk_stats(queries, q_index, q_class, q_r, items, item_sq, item_class, k):
    """Per-query first-hit rank, AP@R and R-Precision for one chunk of queries."""
    # ||q||^2 is constant per row: ranking by ||x||^2 - 2 q.x is the same order.
    score = item_sq[None, :] - 2.0 * tf.matmul(queries, items, transpose_b=True)
    n = tf.shape(items)[0]
    is_self = tf.equal(tf.range(n)[None, :], q_index[:, None])
    neg = tf.where(is_self, tf.constant(-np.inf, tf.float32), -score)
    _, idx = tf.math.top_k(neg, k=k, sorted=True)  # lower index first on ties
    hit = tf.equal(tf.gather(item_class, idx), q_class[:, None])  # [c, k]
    hit_f = tf.cast(hit, tf.float32)
    pos = tf.range(1, k + 1, dtype=tf.int32)[None, :]
    first = tf.where(
        tf.reduce_any(hit, axis=1),
        tf.argmax(tf.cast(hit, tf.int32), axis=1, output_type=tf.int32),
        tf.fill([tf.shape(hit)[0]], tf.int32.max),  # no hit in top-k
    )
    within_r = tf.cast(pos <= q_r[:, None], tf.float32)
    hits_r = hit_f * within_r
    prec = tf.cumsum(hits_r, axis=1) / tf.cast(pos, tf.float32)
    r = tf.maximum(tf.cast(q_r, tf.float32), 1.0)
    ap = tf.reduce_sum(prec * hits_r, axis=1) / r
    rp = tf.reduce_sum(hits_r, axis=1) / r
    return first, ap, rp


def retrieval_stats(
    embeddings, labels, ks: Sequence[int] = (1, 2, 4, 8), chunk_size: int | None = None,
    with_r: bool = True,
) -> dict:
    """One chunked pass: Recall@K for all `ks`, and MAP@R / R-Precision.

    Args:
      embeddings: [N, d] float array or tensor, N >= 2.
      labels: [N] labels (any type NumPy can sort).
      ks: the K of Recall@K.
      chunk_size: queries per chunk; default keeps the [chunk, N] block near
        128 MiB.
      with_r: also compute MAP@R / R-Precision (needs top-(max R) per query).

    Returns:
      {"recall": {k: float}, "map@r": float, "r_precision": float,
       "num_queries": N, "num_queries_skipped": #queries with R = 0}.
    """
    ks = _check_ks(ks)
    emb, cls = _validate(embeddings, labels)
    n = emb.shape[0]
    counts = np.bincount(cls)
    r_all = (counts[cls] - 1).astype(np.int32)
    max_r = int(r_all.max()) if with_r else 0
    k = min(n - 1, max(max(ks, default=1), max_r, 1))
    if chunk_size is None:
        chunk_size = max(1, min(n, _DEFAULT_BLOCK_ELEMENTS // n))
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int | np.integer):
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    items = tf.constant(emb)
    item_sq = tf.reduce_sum(tf.square(items), axis=1)
    item_class = tf.constant(cls)
    first = np.empty(n, np.int32)
    ap = np.empty(n, np.float64)
    rp = np.empty(n, np.float64)
    kt = tf.constant(k, tf.int32)
    for s in range(0, n, chunk_size):
        e = min(n, s + chunk_size)
        f, a, p = _chunk_stats(
            items[s:e], tf.range(s, e, dtype=tf.int32), item_class[s:e],
            tf.constant(r_all[s:e] if with_r else np.zeros(e - s, np.int32)),
            items, item_sq, item_class, kt,
        )
        first[s:e], ap[s:e], rp[s:e] = f.numpy(), a.numpy(), p.numpy()
    result = {
        "recall": {kk: float(np.mean(first < kk)) for kk in ks},
        "num_queries": int(n),
    }
    if with_r:
        keep = r_all > 0
        skipped = int(n - keep.sum())
        if skipped:
            logging.info("MAP@R / R-Precision: skipped %d of %d queries with no other "
                         "item of their class.", skipped, n)
        result["map@r"] = float(ap[keep].mean()) if keep.any() else 0.0
        result["r_precision"] = float(rp[keep].mean()) if keep.any() else 0.0
        result["num_queries_skipped"] = skipped
    return result


def recall_at_k(
    embeddings, labels, ks: Sequence[int] = (1, 2, 4, 8), chunk_size: int | None = None
) -> dict[int, float]:
    """Recall@K: fraction of queries with a same-label item among their K nearest.

    The query itself is excluded; ties ranked by lower index (module docstring).

    Args:
      embeddings: [N, d] float array or tensor, N >= 2.
      labels: [N] labels.
      ks: the K values.
      chunk_size: queries per chunk (default: automatic).

    Returns:
      {k: recall} for every k in `ks`.
    """
    return retrieval_stats(embeddings, labels, ks, chunk_size, with_r=False)["recall"]


def map_at_r(embeddings, labels, chunk_size: int | None = None) -> float:
    """MAP@R (Musgrave et al. 2020); queries with no other same-class item are skipped.

    Returns:
      Mean over non-skipped queries of (1/R) sum_{i<=R, hit at i} precision@i.
    """
    return retrieval_stats(embeddings, labels, (), chunk_size)["map@r"]


def r_precision(embeddings, labels, chunk_size: int | None = None) -> float:
    """R-Precision: hits among the R nearest / R, skipping queries with R = 0."""
    return retrieval_stats(embeddings, labels, (), chunk_size)["r_precision"]


def nmi(embeddings, labels, seed: int = 0, n_init: int = 1, kmeans: str = "tf",
        max_iter: int = 300) -> float:
    """NMI between k-means clusters of the embeddings and the labels.

    k-means into as many clusters as there are classes, scored by
    `normalized_mutual_info_score(average_method="arithmetic")`. Both methods
    use greedy k-means++ seeding (`2 + log(k)` candidates per centre), Lloyd
    iterations up to `max_iter`, scikit-learn's stopping tolerance (1e-4), and
    keep the lowest-inertia of `n_init` runs:
      * "tf" (default): `sst_tf.kmeans.tf_kmeans` in float32, seeds
        `seed, seed + 1, ...`; on the GPU when TensorFlow sees one, bounded
        memory (chunked distances).
      * "sklearn": `sklearn.cluster.KMeans(random_state=seed, n_init=n_init)`
        on the float32 embeddings.

    Cost: N x #classes x d per Lloyd iteration plus a seeding of about
    `2 + log(k)` times that. BENCHMARKS.md, sections `nmi` and `nmi_sop`, has
    measured times and NMI of both methods on the same clustered embeddings;
    at the size of the SOP test split (60,502 x 512, 11,316 clusters) the TF
    k-means took 76 s on one CPU core, faster than faiss' k-means in the same
    run (93 s at its defaults, with an NMI 0.05 lower; 107 s from the same
    seeding, same NMI), where scikit-learn was estimated at over an hour. Use
    `evaluate(..., with_nmi=False)` to skip it.

    Args:
      embeddings: [N, d] float array or tensor.
      labels: [N] labels.
      seed: k-means seed.
      n_init: k-means restarts (1 by default to bound the cost).
      kmeans: "tf" or "sklearn".
      max_iter: maximum Lloyd iterations per run.

    Returns:
      NMI in [0, 1].
    """
    if kmeans not in kmeans_lib.METHODS:
        raise ValueError(f"kmeans must be one of {'|'.join(kmeans_lib.METHODS)}, got {kmeans!r}")
    if n_init < 1 or max_iter < 1:
        raise ValueError(f"n_init and max_iter must be >= 1, got {n_init}, {max_iter}")
    emb, cls = _validate(embeddings, labels, min_rows=1)
    n_classes = int(cls.max()) + 1
    if n_classes > emb.shape[0]:
        raise ValueError("more classes than embeddings")
    if kmeans == "sklearn":
        km = KMeans(n_clusters=n_classes, random_state=seed, n_init=n_init, max_iter=max_iter)
        pred = km.fit_predict(emb)
    else:
        runs = [kmeans_lib.tf_kmeans(emb, n_classes, seed=seed + i, max_iter=max_iter)
                for i in range(n_init)]
        pred = min(runs, key=lambda r: r.inertia).labels
    return float(normalized_mutual_info_score(cls, pred, average_method="arithmetic"))


def evaluate(
    embeddings, labels, ks: Sequence[int] = (1, 2, 4, 8), seed: int = 0,
    chunk_size: int | None = None, with_nmi: bool = True, kmeans: str = "tf",
) -> dict[str, float]:
    """All retrieval metrics in one dict.

    Args:
      embeddings: [N, d] float array or tensor, N >= 2.
      labels: [N] labels.
      ks: the K of Recall@K.
      seed: k-means seed for NMI.
      chunk_size: queries per chunk (default: automatic).
      with_nmi: compute NMI (k-means into one cluster per class; see `nmi`).
      kmeans: k-means of the NMI, "tf" or "sklearn" (see `nmi`).

    Raises:
      ValueError: fewer than 2 classes, or inputs the metrics cannot use.

    Returns:
      {"recall@<k>" for each k, "map@r", "r_precision", "nmi" (if with_nmi),
       "num_queries": N, "num_queries_skipped": queries left out of MAP@R and
       R-Precision because no other item shares their label}.
    """
    if with_nmi and kmeans not in kmeans_lib.METHODS:
        raise ValueError(f"kmeans must be one of {'|'.join(kmeans_lib.METHODS)}, got {kmeans!r}")
    lab = np.asarray(labels)
    classes = np.unique(lab)
    # Inputs of other shapes get the shape checks' errors below.
    if lab.ndim == 1 and 0 < len(lab) == len(embeddings) and len(classes) < 2:
        raise ValueError(f"labels hold {len(classes)} class(es): retrieval metrics need at "
                         "least 2 (with one class every neighbour is a hit, every metric 1).")
    stats = retrieval_stats(embeddings, labels, ks, chunk_size, with_r=True)
    out: dict[str, float] = {f"recall@{k}": v for k, v in stats["recall"].items()}
    out["map@r"] = stats["map@r"]
    out["r_precision"] = stats["r_precision"]
    if with_nmi:
        out["nmi"] = nmi(embeddings, labels, seed=seed, kmeans=kmeans)
    out["num_queries"] = stats["num_queries"]
    out["num_queries_skipped"] = stats["num_queries_skipped"]
    return out
