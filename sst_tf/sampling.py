"""Epoch plans: which training images form each mini-batch, and their targets.

Pure NumPy over indices, labels and embeddings: a sampler never touches pixels.
An `EpochPlan` is a stack of fixed-size batches:

  indices  int64 [num_batches, B]   training-split indices (padding rows repeat
                                     real members of their batch, masked out)
  targets  int32 [num_batches, B, k] batch-local target neighbours, -1 = none
  mask     bool  [num_batches, B]   False on padding rows

`LocalSampler` is the paper's sampler (METHOD.md 3): on `refresh(embeddings)`
it runs k-means with `n // batch_size` clusters; each cluster is one batch
(clusters larger than the batch are subsampled, smaller ones kept), targets are
the k nearest same-class members by the refreshed embeddings, and batch order
is shuffled. `RandomSampler` cuts a random permutation into batches.
`ClassBalancedSampler` makes P classes x K images batches, every image at
most once per epoch.

All are deterministic functions of (seed, epoch, embeddings): the epoch RNG is
`np.random.default_rng([seed, epoch])`, so nothing but the last refreshed
embeddings needs saving to resume.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

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
          drop_empty: drop batches with no triplet from the plan (METHOD.md 3.5:
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
    """The paper's local sampler: k-means neighbourhoods as batches."""

    needs_embeddings = True

    def __init__(self, *args, kmeans_max_iter: int = 100, **kwargs):
        """See `_Sampler.__init__`; `kmeans_max_iter` bounds k-means iterations."""
        super().__init__(*args, **kwargs)
        self.kmeans_max_iter = kmeans_max_iter
        self._clusters: np.ndarray | None = None

    @property
    def num_clusters(self) -> int:
        """`n_train // batch_size` clusters (at least 1)."""
        return max(1, self.num_train // self.batch_size)

    def refresh(self, embeddings: np.ndarray | None, epoch: int = 0) -> None:
        """Stores the embeddings and runs k-means on them (seeded by seed, epoch)."""
        from sklearn.cluster import KMeans

        super().refresh(embeddings, epoch)
        if self._embeddings is None:
            raise ValueError("LocalSampler needs embeddings.")
        seed = int(np.random.default_rng([self.seed, epoch, 1]).integers(2**31 - 1))
        km = KMeans(
            n_clusters=self.num_clusters, n_init=1, max_iter=self.kmeans_max_iter, random_state=seed
        )
        self._clusters = km.fit_predict(self._embeddings.astype(np.float64))

    def _groups(self, rng: np.random.Generator) -> list[np.ndarray]:
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
