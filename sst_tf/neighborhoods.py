"""Neighbourhoods -> batches: the original rule and the balanced one.

Pure NumPy over embeddings and k-means cluster assignments; the local sampler
(`sst_tf.sampling.LocalSampler`, `neighborhoods=...`) turns the groups returned
here into padded batches.

* `original_neighborhoods` (the paper's code): one batch per cluster; a
  cluster larger than the batch is subsampled to `batch_size` members, a
  smaller one is kept as it is. Images of large clusters are left out of the
  epoch and small clusters give part-empty batches.
* `balanced_neighborhoods`: every image is used exactly once and all batches
  but at most one are full.
  1. Split: a cluster larger than the batch is cut into compact batch-sized
     pieces: take the remaining member farthest from the cluster centre, and
     its `batch_size - 1` nearest remaining members form one full batch;
     repeat while more than `batch_size` members remain. The rest (fewer than
     `batch_size` members, the core near the centre) is a partial piece.
  2. Pack: partial pieces are packed into batches, largest first: a batch is
     opened with the largest remaining piece, then filled with the piece whose
     centre is nearest to the batch's current centre; a piece that does not
     fit contributes its members nearest to the batch centre and keeps the
     rest for later batches.
  3. A last batch of fewer than `batch_size / 2` images is evened out with
     the full batch nearest to it (no batch of one or two images).
  Cost: O(n^2 d / B) for a cluster of n members, O(P^2 d) for P pieces; well
  under a second for SOP-sized data (60k x 512, B = 200).
"""

from __future__ import annotations

import numpy as np

MODES = ("original", "balanced")


def _check(embeddings: np.ndarray | None, clusters: np.ndarray, batch_size: int) -> np.ndarray:
    clusters = np.asarray(clusters)
    if clusters.ndim != 1:
        raise ValueError(f"clusters must be 1-D [N], got shape {clusters.shape}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if embeddings is not None and (
        np.ndim(embeddings) != 2 or len(embeddings) != len(clusters)
    ):
        raise ValueError(
            f"embeddings must be [N={len(clusters)}, d], got shape {np.shape(embeddings)}."
        )
    return clusters


def _cluster_members(clusters: np.ndarray) -> list[np.ndarray]:
    """Member index arrays of each cluster id present, in id order."""
    order = np.argsort(clusters, kind="stable")
    ids, starts = np.unique(clusters[order], return_index=True)
    return np.split(order, starts[1:]) if len(ids) else []


def original_neighborhoods(
    clusters: np.ndarray, batch_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """The original rule: one group per cluster, subsampled to `batch_size`."""
    clusters = _check(None, clusters, batch_size)
    groups = []
    for members in _cluster_members(clusters):
        if len(members) > batch_size:
            members = np.sort(rng.choice(members, batch_size, replace=False))
        groups.append(members)
    return groups


def _split_cluster(x: np.ndarray, members: np.ndarray, batch_size: int):
    """Cuts one cluster into full compact pieces + one partial remainder."""
    full = []
    rest = members
    centre = x[members].mean(axis=0)
    while len(rest) > batch_size:
        pts = x[rest]
        far = int(np.argmax(((pts - centre) ** 2).sum(axis=1)))
        d = ((pts - pts[far]) ** 2).sum(axis=1)
        take = np.argpartition(d, batch_size - 1)[:batch_size]
        full.append(np.sort(rest[take]))
        rest = np.delete(rest, take)
    return full, rest


def balanced_neighborhoods(
    embeddings: np.ndarray, clusters: np.ndarray, batch_size: int
) -> list[np.ndarray]:
    """Splits large clusters and packs small ones (see module docstring).

    Args:
      embeddings: [N, d] embeddings the clusters were computed from.
      clusters: int [N] cluster id of each point.
      batch_size: B.

    Returns:
      Groups of indices (sorted inside each group): a partition of range(N)
      into ceil(N / B) groups, all of size B except at most two, none
      smaller than min(N, B // 2).
    """
    clusters = _check(embeddings, clusters, batch_size)
    x = np.asarray(embeddings, np.float64)
    groups: list[np.ndarray] = []
    pieces: list[np.ndarray] = []
    for members in _cluster_members(clusters):
        full, rest = _split_cluster(x, members, batch_size)
        groups.extend(full)
        if len(rest) == batch_size:
            groups.append(np.sort(rest))
        elif len(rest):
            pieces.append(rest)
    # Pack partial pieces; centres kept as (sum, count) for cheap updates.
    pieces.sort(key=len, reverse=True)
    sums = np.array([x[p].sum(axis=0) for p in pieces]).reshape(len(pieces), x.shape[1])
    alive = np.ones(len(pieces), bool)
    for start in range(len(pieces)):
        if not alive[start]:
            continue
        alive[start] = False
        batch = [pieces[start]]
        size = len(pieces[start])
        bsum = sums[start].copy()
        while size < batch_size and alive.any():
            cand = np.flatnonzero(alive)
            counts = np.array([len(pieces[i]) for i in cand], np.float64)
            centres = sums[cand] / counts[:, None]
            j = cand[int(np.argmin(((centres - bsum / size) ** 2).sum(axis=1)))]
            room = batch_size - size
            if len(pieces[j]) <= room:
                take, keep = pieces[j], pieces[j][:0]
            else:
                d = ((x[pieces[j]] - bsum / size) ** 2).sum(axis=1)
                order = np.argsort(d, kind="stable")
                take, keep = pieces[j][order[:room]], pieces[j][order[room:]]
            batch.append(take)
            size += len(take)
            bsum += x[take].sum(axis=0)
            pieces[j] = keep
            sums[j] -= x[take].sum(axis=0)
            alive[j] = len(keep) > 0
        groups.append(np.sort(np.concatenate(batch)))
    _even_out_last(x, groups, batch_size)
    return groups


def _even_out_last(x: np.ndarray, groups: list[np.ndarray], batch_size: int) -> None:
    """Evens out a tiny last batch with its nearest full one (in place).

    A leftover of fewer than batch_size / 2 images (one image, say) would make
    a batch without triplets; it takes the members of the full batch nearest
    to it (those closest to its centre) until both hold about half.
    """
    sizes = [len(g) for g in groups]
    if len(groups) < 2 or min(sizes) >= batch_size // 2:
        return
    small = int(np.argmin(sizes))
    centre = x[groups[small]].mean(axis=0)
    full = [i for i in range(len(groups)) if i != small]
    near = full[int(np.argmin([((x[groups[i]].mean(axis=0) - centre) ** 2).sum()
                               for i in full]))]
    move = (len(groups[near]) - len(groups[small])) // 2
    d = ((x[groups[near]] - centre) ** 2).sum(axis=1)
    order = np.argsort(d, kind="stable")
    groups[small] = np.sort(np.concatenate([groups[small], groups[near][order[:move]]]))
    groups[near] = np.sort(groups[near][order[move:]])


def neighborhood_groups(
    mode: str,
    embeddings: np.ndarray,
    clusters: np.ndarray,
    batch_size: int,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """Groups of indices by `mode` ("original" or "balanced")."""
    if mode == "original":
        return original_neighborhoods(clusters, batch_size, rng)
    if mode == "balanced":
        return balanced_neighborhoods(embeddings, clusters, batch_size)
    raise ValueError(f"neighborhoods must be one of {'|'.join(MODES)}, got {mode!r}.")


def coverage_and_fill(groups: list[np.ndarray], num_points: int, batch_size: int):
    """(share of points in some group, mean group size / batch_size)."""
    if not groups:
        return 0.0, 0.0
    used = np.unique(np.concatenate(groups))
    return len(used) / num_points, float(np.mean([len(g) for g in groups]) / batch_size)
