"""Neighbourhood rules: which training images go together, behind one function.

Pure NumPy over embeddings, labels and k-means cluster assignments;
`neighborhood_groups(mode, ...)` is the one entry point, and the local sampler
(`sst_tf.sampling.LocalSampler`, `neighborhoods=...`) turns the groups returned
here into padded batches.

* `class_neighborhoods` ("classes", the trainer's default): batches of
  neighbouring classes with random members of each (no k-means).
* `mixed_neighborhoods` ("mixed"): a k-means neighbourhood topped up with
  random images and a class guarantee.

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

from sst_tf.config import NEIGHBORHOODS


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


def effective_min_classes(labels: np.ndarray, batch_size: int, min_classes: int) -> int:
    """The class guarantee a batch can actually get.

    At most the number of classes with >= 2 images in the split and at most
    `(batch_size - 1) // 2` (each guaranteed class needs two rows).
    """
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    return int(max(0, min(min_classes, int((counts >= 2).sum()), (batch_size - 1) // 2)))


def mixed_neighborhoods(
    clusters: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    local_share: float,
    min_classes: int,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """Neighbourhood batches mixed with random examples and a class guarantee.

    Each k-means cluster gives the local part of one batch: up to
    `round(local_share * batch_size)` of its members (a random subset of a
    larger cluster), capped so that `2 * min_classes` rows stay free. Every
    batch then gets, while it has fewer than `min_classes` classes with at
    least two members, the missing members of such a class (a class already
    present once first, then the class with most unused images), and is
    filled up to `batch_size` with unused images in random order. Images not
    placed by then make further batches the same way. Guarantee/filler images
    are drawn from images not yet used this epoch; only when none of a needed
    class is left is an image of another batch repeated.

    Properties (tested as invariants): every image is in some batch (coverage
    1.0), no image twice in one batch, no batch larger than `batch_size`, and
    every batch holds at least `effective_min_classes(labels, batch_size,
    min_classes)` classes with >= 2 members. With `local_share=1` and
    `min_classes=0` the clusters are those of the original rule, topped up to
    full batches with the images it leaves out; with `local_share=0` it is
    random batches with the class guarantee.

    Args:
      clusters: int [N] k-means cluster of each training image.
      labels: int [N] labels.
      batch_size: B.
      local_share: share of each batch taken from its neighbourhood, in [0, 1].
      min_classes: classes with >= 2 members promised in every batch.
      rng: the epoch's random generator.

    Returns:
      List of index arrays (the batches, unpadded).
    """
    clusters = np.asarray(clusters)
    labels = np.asarray(labels)
    if clusters.shape != labels.shape or clusters.ndim != 1:
        raise ValueError(
            f"clusters and labels must be 1-D of equal length, got {clusters.shape} "
            f"and {labels.shape}.")
    if not 0.0 <= local_share <= 1.0:
        raise ValueError(f"local_share must be in [0, 1], got {local_share}.")
    if min_classes < 0:
        raise ValueError(f"min_classes must be >= 0, got {min_classes}.")
    b = int(batch_size)
    p = effective_min_classes(labels, b, min_classes)
    local_size = min(int(round(local_share * b)), b - 2 * p)
    n = len(labels)
    class_ids, y = np.unique(labels, return_inverse=True)  # y: class index per image
    class_size = np.bincount(y, minlength=len(class_ids))
    used = np.zeros(n, bool)
    unused_left = class_size.copy()
    batches: list[list[int]] = []
    for c in rng.permutation(np.unique(clusters)):
        members = np.flatnonzero(clusters == c)
        if len(members) > local_size:
            members = rng.choice(members, local_size, replace=False)
        if len(members):
            used[members] = True
            np.subtract.at(unused_left, y[members], 1)
            batches.append([int(i) for i in members])
    order = rng.permutation(n)  # the random filler order
    by_class = [order[y[order] == c] for c in range(len(class_ids))]
    cursor = 0

    def mark(out: list[int]) -> list[int]:
        fresh = [i for i in out if not used[i]]
        used[fresh] = True
        np.subtract.at(unused_left, y[fresh], 1)
        return out

    def take(cls: int | None, count: int, exclude: set[int]) -> list[int]:
        nonlocal cursor
        out: list[int] = []
        if cls is None:
            while len(out) < count and cursor < n:
                i = int(order[cursor])
                cursor += 1
                if not used[i] and i not in exclude:
                    out.append(i)
            return mark(out)
        for i in by_class[cls]:
            if len(out) == count:
                break
            if not used[i] and i not in exclude:
                out.append(int(i))
        if len(out) < count:  # none of this class left unused: repeat an image
            spare = [int(i) for i in by_class[cls] if i not in exclude and i not in out]
            out.extend(spare[: count - len(out)])
        return mark(out)

    def complete(batch: list[int]) -> np.ndarray:
        members = set(batch)
        counts = np.bincount(y[batch], minlength=len(class_ids))
        while int((counts >= 2).sum()) < p:
            # Prefer completing a class present once, then adding a new class,
            # using unused images; repeat an image only when nothing else works.
            singles = np.flatnonzero(counts == 1)
            fresh_score = np.where((counts == 0) & (class_size >= 2), unused_left, -1)
            fresh = np.flatnonzero((fresh_score == fresh_score.max()) & (fresh_score >= 0))
            open_singles = singles[unused_left[singles] >= 1]
            if len(open_singles):
                pick = open_singles
            elif len(fresh) and fresh_score.max() >= 2:
                pick = fresh
            elif len(singles):
                pick = singles
            else:
                pick = fresh
            cls = int(pick[rng.integers(len(pick))])
            extra = take(cls, 2 - int(counts[cls]), members)
            batch.extend(extra)
            members.update(extra)
            counts[cls] += len(extra)
        batch.extend(take(None, b - len(batch), members))
        return np.sort(np.asarray(batch, np.int64))

    groups = [complete(batch) for batch in batches]
    while not used.all():  # images no batch took yet: more batches
        first = int(np.flatnonzero(~used)[0])
        groups.append(complete(mark([first])))
    return groups


def class_neighborhoods(
    embeddings: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    members_per_class: int,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """Batches of neighbouring classes, each with random members of its classes.

    Local sampling at the class level: a batch holds P = batch_size //
    members_per_class classes that are neighbours in the embedding (a seed
    class and the classes with the nearest centroids; more than P when
    classes are smaller than K and the batch has room), and K =
    `members_per_class` members of each, drawn at random within the class
    (when fewer than P classes have two images or more, P is that number and
    K = batch_size // P). So imposters come from confusable classes (the point of local
    sampling) while the positives of a class are spread over the whole class,
    not one look-alike corner of it (with image neighbourhoods, targets are
    look-alikes and classes split into fragments; see docs/samplers.md).

    Each epoch every image is used: per class a random order is consumed K at
    a time; the seed class of each batch is the one with the most images
    left. A class with fewer than K images left is completed with images of
    it used earlier this epoch (so it still has min(K, class size) members).
    Classes with one image only are added where a batch has room.

    Properties (tested as invariants): every image in some batch, no image
    twice in one batch, no batch larger than `batch_size`, and every batch
    holds at least P classes with at least min(K, class size) >= 2 members.
    Cost per batch: O(C d) for C classes (no C x C matrix).

    Args:
      embeddings: [N, d] refreshed embeddings (for the class centroids).
      labels: int [N] labels.
      batch_size: B.
      members_per_class: K (>= 2).
      rng: the epoch's random generator.

    Returns:
      List of index arrays (the batches, unpadded).
    """
    labels = np.asarray(labels)
    x = np.asarray(embeddings, np.float64)
    if x.ndim != 2 or len(x) != len(labels):
        raise ValueError(f"embeddings must be [N={len(labels)}, d], got {x.shape}.")
    if members_per_class < 2:
        raise ValueError(f"members_per_class must be >= 2, got {members_per_class}.")
    b = int(batch_size)
    k = min(int(members_per_class), b)
    class_ids, y = np.unique(labels, return_inverse=True)
    size = np.bincount(y, minlength=len(class_ids))
    multi = np.flatnonzero(size >= 2)
    p = max(1, min(b // k, len(multi)))
    k = max(k, b // p)  # fewer classes than batch_size // K: more members each
    orders = [rng.permutation(np.flatnonzero(y == c)) for c in range(len(class_ids))]
    pos = np.zeros(len(class_ids), np.int64)
    centroids = np.zeros((len(class_ids), x.shape[1]))
    np.add.at(centroids, y, x)
    centroids /= size[:, None]
    batches: list[list[int]] = []
    while True:
        left = size - pos
        left[size < 2] = 0
        if left.sum() == 0:
            break
        best = np.flatnonzero(left == left.max())
        seed = int(best[rng.integers(len(best))])
        # The seed class and its nearest classes, those with images left first;
        # at least P classes, more (with images left) while they fit.
        dist = ((centroids[multi] - centroids[seed]) ** 2).sum(axis=1)
        near = multi[np.argsort(dist, kind="stable")]
        has_left = left[near] > 0
        batch: list[int] = []
        chosen = 0
        for c in np.concatenate([near[has_left], near[~has_left]]):
            want = min(k, int(size[c]))
            if chosen >= p and (left[c] == 0 or len(batch) + want > b):
                break
            take = orders[c][pos[c] : pos[c] + want].tolist()
            pos[c] += len(take)
            if len(take) < want:  # complete with images of the class used earlier
                spare = [int(i) for i in orders[c][: pos[c] - len(take)] if i not in take]
                take += [spare[j] for j in rng.permutation(len(spare))[: want - len(take)]]
            batch.extend(int(i) for i in take)
            chosen += 1
        batches.append(batch)
    singles = [int(orders[c][0]) for c in np.flatnonzero(size == 1)]
    for i in rng.permutation(len(singles)):
        room = [j for j, batch in enumerate(batches) if len(batch) < b]
        if room:
            batches[room[int(rng.integers(len(room)))]].append(singles[i])
        else:
            batches.append([singles[i]])
    return [np.sort(np.asarray(batch, np.int64)) for batch in batches]


def random_groups(num_points: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A random permutation of range(num_points) cut into batch-sized groups."""
    perm = rng.permutation(num_points)
    return [perm[i : i + batch_size] for i in range(0, num_points, batch_size)]


def needs_clusters(mode: str) -> bool:
    """Whether neighbourhood rule `mode` works on k-means clusters."""
    return mode in ("original", "balanced", "mixed")


def neighborhood_groups(
    mode: str,
    embeddings: np.ndarray,
    labels: np.ndarray,
    clusters: np.ndarray | None,
    batch_size: int,
    rng: np.random.Generator,
    members_per_class: int = 10,
    local_share: float = 0.5,
    min_classes: int = 0,
) -> list[np.ndarray]:
    """Groups of training indices (unpadded batches) by neighbourhood rule `mode`.

    Args:
      mode: one of `NEIGHBORHOODS`: "classes" (`class_neighborhoods`), "mixed"
        (`mixed_neighborhoods`), "original" (`original_neighborhoods`, the
        paper's rule) or "balanced" (`balanced_neighborhoods`).
      embeddings: [N, d] refreshed embeddings.
      labels: int [N] labels.
      clusters: int [N] k-means cluster of each point (rules that need them,
        `needs_clusters(mode)`), else None.
      batch_size: B.
      rng: the epoch's random generator.
      members_per_class: ("classes") images per class in a batch.
      local_share: ("mixed") share of each batch from its neighbourhood.
      min_classes: ("mixed") classes with >= 2 members promised in every batch.

    Returns:
      List of index arrays.
    """
    if mode not in NEIGHBORHOODS:
        raise ValueError(f"neighborhoods must be one of {'|'.join(NEIGHBORHOODS)}, got {mode!r}.")
    if needs_clusters(mode) and clusters is None:
        raise ValueError(f"neighborhoods={mode!r} needs k-means clusters.")
    if mode == "classes":
        return class_neighborhoods(embeddings, labels, batch_size, members_per_class, rng)
    if mode == "mixed":
        return mixed_neighborhoods(clusters, labels, batch_size, local_share, min_classes, rng)
    if mode == "original":
        return original_neighborhoods(clusters, batch_size, rng)
    return balanced_neighborhoods(embeddings, clusters, batch_size)
