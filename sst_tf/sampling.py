"""Epoch plans: which training images form each mini-batch, and their targets.

Pure NumPy over indices, labels and embeddings: a sampler never touches pixels.
An `EpochPlan` is a stack of fixed-size batches:

  indices  int64 [num_batches, B]   training-split indices (padding rows repeat
                                     real members of their batch, masked out)
  targets  int32 [num_batches, B, k] batch-local target neighbours, -1 = none
  mask     bool  [num_batches, B]   False on padding rows

`LocalSampler` is local sampling (docs/method.md#local-sampling). With
`neighborhoods="original"` it is the paper's sampler: on `refresh(embeddings)`
it runs k-means with `n // batch_size` clusters; each cluster is one batch
(clusters larger than the batch are subsampled, smaller ones kept). With
`"classes"` (the trainer's default; robust from scratch, see
docs/samplers.md) a batch is a set of neighbouring classes with random members;
with `"mixed"` a k-means neighbourhood plus random images with a class
guarantee. Targets are the k nearest same-class members by the refreshed
embeddings, and batch order is shuffled. `RandomSampler` cuts a random
permutation into batches. `ClassBalancedSampler` makes P classes x K images
batches, every image at most once per epoch. `composition_statistics`
describes what the batches of a plan are made of (logged every epoch).

All are deterministic functions of (seed, epoch, embeddings): the epoch RNG is
`np.random.default_rng([seed, epoch])`, so nothing but the last refreshed
embeddings needs saving to resume.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from sst_tf import kmeans as kmeans_lib
from sst_tf import neighborhoods as neighborhoods_lib
from sst_tf import neighbors


@dataclasses.dataclass
class EpochPlan:
    """The batches of one epoch (see module docstring for shapes)."""

    indices: np.ndarray
    targets: np.ndarray
    mask: np.ndarray
    stats: dict[str, float]

    @property
    def num_batches(self) -> int:
        """Number of batches in the plan."""
        return int(self.indices.shape[0])


def batch_has_triplet(labels: np.ndarray, targets: np.ndarray, mask: np.ndarray) -> bool:
    """Whether a batch holds at least one (anchor, target, imposter) triplet.

    Args:
      labels: [B] labels of the batch rows.
      targets: [B, k] batch-local target indices, -1 = none.
      mask: [B] valid rows.
    """
    has_target = mask & (targets >= 0).any(axis=1)
    if not has_target.any():
        return False
    valid_labels = labels[mask]
    for a in np.flatnonzero(has_target):
        if (valid_labels != labels[a]).any():
            return True
    return False


def plan_statistics(
    plan_indices: np.ndarray,
    plan_mask: np.ndarray,
    labels: np.ndarray,
    num_train: int,
) -> dict[str, float]:
    """Coverage, fill and class statistics of a plan.

    Args:
      plan_indices: [nb, B] training indices.
      plan_mask: [nb, B] valid rows.
      labels: [num_train] training labels.
      num_train: size of the training split.

    Returns:
      dict with `num_batches`, `coverage` (share of training images used at
      least once), `mean_fill` (mean share of valid rows per batch) and
      `mean_classes_per_batch`.
    """
    nb = plan_indices.shape[0]
    if nb == 0:
        return {"num_batches": 0, "coverage": 0.0, "mean_fill": 0.0, "mean_classes_per_batch": 0.0}
    used = np.unique(plan_indices[plan_mask])
    classes = [
        len(np.unique(labels[row[m]])) for row, m in zip(plan_indices, plan_mask, strict=True)
    ]
    return {
        "num_batches": int(nb),
        "coverage": float(len(used) / num_train),
        "mean_fill": float(plan_mask.mean()),
        "mean_classes_per_batch": float(np.mean(classes)),
    }


def composition_statistics(
    plan_indices: np.ndarray,
    plan_targets: np.ndarray | None,
    plan_mask: np.ndarray,
    labels: np.ndarray,
    embeddings: np.ndarray | None = None,
) -> dict[str, float]:
    """What the batches of a plan are made of (the diagnostics of local sampling).

    The paper's rule trained from scratch shows as few classes with >= 2
    members per batch and one class taking most of the batch (classes then
    break into fragments; see docs/samplers.md). A target/imposter
    distance ratio near 1, or `sst_at_refresh` near log 2 = 0.693, means the
    batch triplets are not told apart by the refreshed embeddings (the
    collapse signature; a training loss stuck there means the same).

    Args:
      plan_indices: [nb, B] training indices.
      plan_targets: [nb, B, k] batch-local targets (-1: none), or None.
      plan_mask: [nb, B] valid rows.
      labels: [num_train] training labels.
      embeddings: optional [num_train, d] refreshed embeddings (for distances).

    Returns:
      dict with, averaged over batches: `mean_paired_classes_per_batch`
      (classes with >= 2 members), `min_paired_classes_per_batch` (the
      smallest over the plan), `mean_members_per_class`, `largest_class_share`
      (rows of the batch's largest class / valid rows), `anchor_share` (valid
      rows with at least one target; without targets: rows whose class has a
      second member), `imposter_share` (per anchor, share of the other valid
      rows that are imposters); with embeddings also `target_distance` (mean
      D_at), `imposter_distance` (mean D_ai over anchors), `distance_ratio`
      (their ratio) and `sst_at_refresh` (mean SST loss of the batches by the
      refreshed embeddings).
    """
    nb = plan_indices.shape[0]
    keys = ("mean_paired_classes_per_batch", "min_paired_classes_per_batch",
            "mean_members_per_class", "largest_class_share", "anchor_share", "imposter_share")
    if nb == 0:
        return {key: 0.0 for key in keys}
    paired, members, largest, imp_share = [], [], [], []
    anchors = rows = 0
    d_at_sum = d_ai_sum = 0.0
    d_at_n = d_ai_n = 0
    sst_values = []
    for b in range(nb):
        m = plan_mask[b]
        y = labels[plan_indices[b]]
        yv = y[m]
        _, counts = np.unique(yv, return_counts=True)
        paired.append(int((counts >= 2).sum()))
        members.append(float(m.sum()) / len(counts))
        largest.append(float(counts.max()) / float(m.sum()))
        if plan_targets is not None:
            tgt = np.where(m[:, None], plan_targets[b], -1)
            is_anchor = m & (tgt >= 0).any(axis=1)
        else:
            tgt = None
            same_count = (y[:, None] == yv[None, :]).sum(axis=1)
            is_anchor = m & (same_count >= 2)
        anchors += int(is_anchor.sum())
        rows += int(m.sum())
        other = m.sum() - 1
        if is_anchor.any() and other > 0:
            imp = ((y[is_anchor][:, None] != yv[None, :]).sum(axis=1)) / other
            imp_share.extend(imp.tolist())
        if embeddings is None or tgt is None or not is_anchor.any():
            continue
        d = neighbors.pairwise_squared_distances(embeddings[plan_indices[b]])
        imposter = (y[:, None] != y[None, :]) & m[:, None] & m[None, :]
        a_idx = np.flatnonzero(is_anchor)
        t = tgt[a_idx]  # [A, k]
        ok = t >= 0
        ts = np.where(ok, t, 0)
        d_at = d[a_idx[:, None], ts]  # [A, k]
        d_at_sum += float(d_at[ok].sum())
        d_at_n += int(ok.sum())
        imp_a = imposter[a_idx]  # [A, B]
        d_ai_sum += float(d[a_idx][imp_a].sum())
        d_ai_n += int(imp_a.sum())
        valid = ok[:, :, None] & imp_a[:, None, :]  # [A, k, B]
        if valid.any():
            z = d_at[:, :, None] - 0.5 * (d[a_idx][:, None, :] + d[ts])
            sst_values.append(float(np.logaddexp(0.0, z[valid]).mean()))
    out = {
        "mean_paired_classes_per_batch": float(np.mean(paired)),
        "min_paired_classes_per_batch": float(np.min(paired)),
        "mean_members_per_class": float(np.mean(members)),
        "largest_class_share": float(np.mean(largest)),
        "anchor_share": float(anchors / max(rows, 1)),
        "imposter_share": float(np.mean(imp_share)) if imp_share else 0.0,
    }
    if embeddings is not None and plan_targets is not None and d_at_n and d_ai_n:
        out["target_distance"] = d_at_sum / d_at_n
        out["imposter_distance"] = d_ai_sum / d_ai_n
        out["distance_ratio"] = out["target_distance"] / max(out["imposter_distance"], 1e-12)
        if sst_values:
            out["sst_at_refresh"] = float(np.mean(sst_values))
    return out


NEIGHBORHOODS = ("classes", "mixed", "original", "balanced")


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


class _Sampler:
    """Shared machinery: batch assembly, targets, empty-batch dropping, stats."""

    needs_embeddings = True

    def __init__(
        self,
        labels: np.ndarray,
        batch_size: int,
        num_targets: int = 5,
        seed: int = 0,
        compute_targets: bool = True,
        drop_empty: bool = True,
    ):
        """Creates the sampler.

        Args:
          labels: int [N] labels of the training split.
          batch_size: fixed batch size B (>= 2).
          num_targets: k target neighbours per anchor (>= 1).
          seed: base seed; epoch e uses `default_rng([seed, e])`.
          compute_targets: whether plans carry target tables (losses over
            triplets need them; contrastive does not).
          drop_empty: drop batches with no triplet (docs/method.md#local-sampling, step 5:
            such a batch is skipped). Only applies when targets are computed.
        """
        labels = np.asarray(labels)
        if labels.ndim != 1 or len(labels) == 0:
            raise ValueError(f"labels must be a non-empty 1-D array, got shape {labels.shape}.")
        if batch_size < 2:
            raise ValueError(f"batch_size must be >= 2, got {batch_size}.")
        if num_targets < 1:
            raise ValueError(f"num_targets must be >= 1, got {num_targets}.")
        self.labels = labels
        self.batch_size = int(batch_size)
        self.num_targets = int(num_targets)
        self.seed = int(seed)
        self.compute_targets = compute_targets
        self.drop_empty = drop_empty and compute_targets
        self._embeddings: np.ndarray | None = None

    @property
    def num_train(self) -> int:
        """Size of the training split."""
        return len(self.labels)

    def refresh(self, embeddings: np.ndarray | None, epoch: int = 0) -> None:
        """Stores refreshed embeddings of the whole training split ([N, d])."""
        if embeddings is None:
            if self.compute_targets:
                raise ValueError(f"{type(self).__name__} needs embeddings to compute targets.")
            self._embeddings = None
            return
        embeddings = np.asarray(embeddings, np.float32)
        if embeddings.ndim != 2 or embeddings.shape[0] != self.num_train:
            raise ValueError(
                f"embeddings must be [{self.num_train}, d], got {embeddings.shape}."
            )
        if not np.isfinite(embeddings).all():
            raise ValueError("embeddings contain NaN or Inf: the model has diverged.")
        self._embeddings = embeddings

    def _groups(self, rng: np.random.Generator) -> list[np.ndarray]:
        raise NotImplementedError

    def _assemble(self, groups: list[np.ndarray], rng: np.random.Generator) -> EpochPlan:
        b, k = self.batch_size, self.num_targets
        idx_rows, tgt_rows, mask_rows = [], [], []
        empty = 0
        for members in groups:
            members = np.asarray(members, np.int64)
            if len(members) == 0:
                continue
            n = len(members)
            row = np.resize(members, b)  # padding rows repeat real members
            mask = np.arange(b) < n
            if self.compute_targets:
                emb = self._embeddings[row]
                tgt = np.asarray(
                    neighbors.target_neighbors(emb, self.labels[row], k, sample_mask=mask),
                    np.int32,
                )
                tgt = np.where(mask[:, None], tgt, -1).astype(np.int32)
                if not batch_has_triplet(self.labels[row], tgt, mask):
                    empty += 1
                    if self.drop_empty:
                        continue
            else:
                tgt = np.full((b, k), -1, np.int32)
            idx_rows.append(row)
            tgt_rows.append(tgt)
            mask_rows.append(mask)
        num_groups = sum(1 for g in groups if len(g))
        order = rng.permutation(len(idx_rows))
        indices = np.array(idx_rows, np.int64).reshape(-1, b)[order]
        targets = np.array(tgt_rows, np.int32).reshape(-1, b, k)[order]
        mask = np.array(mask_rows, bool).reshape(-1, b)[order]
        stats = plan_statistics(indices, mask, self.labels, self.num_train)
        stats["empty_batch_share"] = float(empty / max(num_groups, 1))
        stats["dropped_batches"] = int(empty if self.drop_empty else 0)
        stats.update(composition_statistics(
            indices, targets if self.compute_targets else None, mask, self.labels,
            self._embeddings))
        return EpochPlan(indices, targets, mask, stats)

    def plan(self, epoch: int) -> EpochPlan:
        """Builds the plan of `epoch` from the last refreshed embeddings."""
        if self._embeddings is None and (self.compute_targets or self.needs_embeddings):
            raise RuntimeError(f"{type(self).__name__}.plan() called before refresh().")
        start = time.perf_counter()
        rng = np.random.default_rng([self.seed, epoch])
        groups = self._groups(rng)
        plan = self._assemble(groups, rng)
        plan.stats["plan_seconds"] = time.perf_counter() - start
        return plan


class LocalSampler(_Sampler):
    """Local sampling: batches from neighbourhoods of the refreshed embeddings.

    `neighborhoods="original"` (this class's default) is the paper's rule:
    k-means, one batch per cluster, larger clusters subsampled.
    `neighborhoods="classes"` (the trainer's default, `--neighborhoods`)
    builds batches of neighbouring classes with random members of each
    (`class_neighborhoods`, no k-means). `neighborhoods="mixed"` mixes each
    k-means neighbourhood with random images and guarantees `min_classes`
    classes with >= 2 members per batch (`mixed_neighborhoods`). During the
    first `warmup_epochs` epochs batches are random (no k-means).
    `neighborhoods="balanced"` splits large k-means clusters into batch-sized
    pieces and packs small ones (`sst_tf.neighborhoods`): every image once per
    epoch, full batches. `kmeans_method` picks scikit-learn or the TF k-means
    (`sst_tf.kmeans`, on the GPU when there is one).
    """

    needs_embeddings = True

    def __init__(
        self,
        *args,
        kmeans_max_iter: int = 100,
        neighborhoods: str = "original",
        local_share: float = 0.5,
        min_classes: int = 0,
        warmup_epochs: int = 0,
        members_per_class: int = 10,
        kmeans_method: str = "sklearn",
        **kwargs,
    ):
        """See `_Sampler.__init__`.

        Args:
          *args: as `_Sampler`.
          kmeans_max_iter: bound on k-means iterations.
          neighborhoods: "original" (the paper's rule), "classes" or "mixed".
          local_share: ("mixed") share of each batch from its neighbourhood.
          min_classes: ("mixed") classes with >= 2 members in every batch.
          warmup_epochs: epochs of random batches before the first k-means.
          members_per_class: ("classes") images per class in a batch.
          kmeans_method: "sklearn" or "tf" (`sst_tf.kmeans`).
          **kwargs: as `_Sampler`.
        """
        super().__init__(*args, **kwargs)
        if neighborhoods not in NEIGHBORHOODS:
            raise ValueError(f"neighborhoods must be one of {'|'.join(NEIGHBORHOODS)}, "
                             f"got {neighborhoods!r}.")
        if not 0.0 <= local_share <= 1.0:
            raise ValueError(f"local_share must be in [0, 1], got {local_share}.")
        if min_classes < 0:
            raise ValueError(f"min_classes must be >= 0, got {min_classes}.")
        if warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}.")
        if kmeans_method not in kmeans_lib.METHODS:
            raise ValueError(f"kmeans must be one of {'|'.join(kmeans_lib.METHODS)}, "
                             f"got {kmeans_method!r}.")
        self.kmeans_method = kmeans_method
        self.kmeans_max_iter = kmeans_max_iter
        self.neighborhoods = neighborhoods
        self.local_share = float(local_share)
        self.min_classes = int(min_classes)
        self.warmup_epochs = int(warmup_epochs)
        if members_per_class < 2:
            raise ValueError(f"members_per_class must be >= 2, got {members_per_class}.")
        self.members_per_class = int(members_per_class)
        self._clusters: np.ndarray | None = None
        self._cluster_epoch = 0
        self._plan_epoch = 0

    @property
    def num_clusters(self) -> int:
        """`n_train // batch_size` clusters (at least 1)."""
        return max(1, self.num_train // self.batch_size)

    def refresh(self, embeddings: np.ndarray | None, epoch: int = 0) -> None:
        """Stores the embeddings and runs k-means on them (seeded by seed, epoch).

        In warm-up epochs k-means is skipped (the plan is random); it then runs
        at the first plan after the warm-up.
        """
        super().refresh(embeddings, epoch)
        if self._embeddings is None:
            raise ValueError("LocalSampler needs embeddings.")
        self._clusters = None
        self._cluster_epoch = epoch
        if epoch >= self.warmup_epochs and self.neighborhoods != "classes":
            self._cluster(epoch)

    def _cluster(self, epoch: int) -> None:
        seed = int(np.random.default_rng([self.seed, epoch, 1]).integers(2**31 - 1))
        self._clusters = kmeans_lib.kmeans(
            self._embeddings, self.num_clusters, method=self.kmeans_method, seed=seed,
            max_iter=self.kmeans_max_iter,
        ).labels

    def plan(self, epoch: int) -> EpochPlan:
        """Builds the plan of `epoch` (random batches in warm-up epochs)."""
        self._plan_epoch = epoch
        warm = epoch < self.warmup_epochs
        if (not warm and self._clusters is None and self._embeddings is not None
                and self.neighborhoods != "classes"):
            self._cluster(self._cluster_epoch)  # refreshed during warm-up, planned after
        plan = super().plan(epoch)
        plan.stats["warmup"] = float(warm)
        return plan

    def _groups(self, rng: np.random.Generator) -> list[np.ndarray]:
        if self._plan_epoch < self.warmup_epochs:
            perm = rng.permutation(self.num_train)
            b = self.batch_size
            return [perm[i : i + b] for i in range(0, self.num_train, b)]
        if self.neighborhoods == "classes":
            return class_neighborhoods(self._embeddings, self.labels, self.batch_size,
                                       self.members_per_class, rng)
        if self.neighborhoods == "balanced":
            return neighborhoods_lib.balanced_neighborhoods(
                self._embeddings, self._clusters, self.batch_size)
        if self.neighborhoods == "mixed":
            return mixed_neighborhoods(self._clusters, self.labels, self.batch_size,
                                       self.local_share, self.min_classes, rng)
        groups = []
        for c in range(self.num_clusters):
            members = np.flatnonzero(self._clusters == c)
            if len(members) > self.batch_size:  # the original rule: subsample
                members = np.sort(rng.choice(members, self.batch_size, replace=False))
            groups.append(members)
        return groups


class RandomSampler(_Sampler):
    """Random batches: a fresh permutation cut into `ceil(n / B)` batches."""

    @property
    def needs_embeddings(self) -> bool:  # type: ignore[override]
        """Embeddings are only needed for target tables."""
        return self.compute_targets

    def _groups(self, rng: np.random.Generator) -> list[np.ndarray]:
        perm = rng.permutation(self.num_train)
        return [perm[i : i + self.batch_size] for i in range(0, self.num_train, self.batch_size)]


class ClassBalancedSampler(_Sampler):
    """P classes x K images per batch, every image at most once per epoch.

    The batch layout most metric-learning papers use (Multi-Similarity,
    Proxy-Anchor, batch-hard triplet): `batch_size = P * K` with
    K = `samples_per_class`.

    One epoch: each class's images are shuffled and cut into chunks of K (a
    last chunk of 2..K-1 images is kept as a short chunk; a single left-over
    image is not used, since it would have no positive). Batches are then
    drawn one at a time from the P classes with the most chunks left (ties
    broken at random; this greedy order leaves the fewest chunks unused), each
    contributing its next chunk. The epoch ends when fewer than P classes have
    chunks left. So every batch holds exactly P
    classes, exactly K images of each unless a class ran short, and no image
    appears twice in an epoch; images not used in an epoch show as coverage < 1.
    """

    def __init__(self, labels: np.ndarray, batch_size: int, samples_per_class: int = 4,
                 **kwargs):
        """See `_Sampler.__init__`; `samples_per_class` is K (batch_size must be P * K)."""
        super().__init__(labels, batch_size, **kwargs)
        k = int(samples_per_class)
        if k < 2:
            raise ValueError(f"samples_per_class must be >= 2, got {samples_per_class}.")
        if self.batch_size % k:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be a multiple of samples_per_class ({k})."
            )
        self.samples_per_class = k
        self.classes_per_batch = self.batch_size // k
        if self.classes_per_batch < 2:
            raise ValueError(
                f"batch_size ({self.batch_size}) must hold at least 2 classes of "
                f"samples_per_class ({k}) images."
            )
        classes, counts = np.unique(self.labels, return_counts=True)
        usable = int((counts >= 2).sum())
        if usable < self.classes_per_batch:
            raise ValueError(
                f"class-balanced batches need {self.classes_per_batch} classes with >= 2 images "
                f"(--batch_size / --samples_per_class), but the training split has {usable}: "
                "lower --batch_size or raise --samples_per_class."
            )
        self._members = [np.flatnonzero(self.labels == c) for c in classes]

    @property
    def needs_embeddings(self) -> bool:  # type: ignore[override]
        """Embeddings are only needed for target tables."""
        return self.compute_targets

    def _groups(self, rng: np.random.Generator) -> list[np.ndarray]:
        k, p = self.samples_per_class, self.classes_per_batch
        chunks: list[list[np.ndarray]] = []
        for members in self._members:
            perm = rng.permutation(members)
            class_chunks = [perm[i : i + k] for i in range(0, len(perm), k)]
            chunks.append([c for c in class_chunks if len(c) >= 2][::-1])  # pop() from the end
        left = np.array([len(c) for c in chunks], np.float64)
        groups = []
        while (left > 0).sum() >= p:
            # The P classes with the most chunks left, ties broken at random:
            # this greedy order leaves the fewest chunks unused.
            chosen = np.lexsort((rng.random(len(chunks)), -left))[:p]
            groups.append(np.concatenate([chunks[c].pop() for c in chosen]))
            left[chosen] -= 1
        return groups



SAMPLERS = {"local": LocalSampler, "random": RandomSampler,
            "class_balanced": ClassBalancedSampler}


def make_sampler(name: str, labels: np.ndarray, batch_size: int, **kwargs) -> _Sampler:
    """Creates a sampler by name (`local`, `random` or `class_balanced`)."""
    if name not in SAMPLERS:
        raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}, got {name!r}.")
    return SAMPLERS[name](labels, batch_size, **kwargs)
