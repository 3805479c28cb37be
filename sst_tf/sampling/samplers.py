"""Samplers: which training images form each mini-batch, and their targets.

Pure NumPy over indices, labels and embeddings: a sampler never touches pixels.
`plan(epoch)` returns an `EpochPlan` (`sst_tf.sampling.plans`).

`LocalSampler` is local sampling (docs/method.md#local-sampling). With
`neighborhoods="original"` it is the paper's sampler: on `refresh(embeddings)`
it runs k-means with `n // batch_size` clusters; each cluster is one batch
(clusters larger than the batch are subsampled, smaller ones kept). With
`"classes"` (the trainer's default; robust from scratch, see
docs/samplers.md) a batch is a set of neighbouring classes with random members;
with `"mixed"` a k-means neighbourhood plus random images with a class
guarantee (every rule: `sst_tf.sampling.neighborhoods`). Targets are the k
nearest same-class members by the refreshed embeddings, and batch order is
shuffled. `RandomSampler` cuts a random
permutation into batches. `ClassBalancedSampler` makes P classes x K images
batches, every image at most once per epoch.

All are deterministic functions of (seed, epoch, embeddings): the epoch RNG is
`np.random.default_rng([seed, epoch])`, so nothing but the last refreshed
embeddings needs saving to resume.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from sst_tf import kmeans as kmeans_lib
from sst_tf import neighbors
from sst_tf.sampling import neighborhoods as neighborhoods_lib
from sst_tf.sampling.plans import (
    EpochPlan,
    batch_has_triplet,
    composition_statistics,
    plan_statistics,
    repeat_views,
)


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

    def _groups(self, rng: np.random.Generator, epoch: int) -> list[np.ndarray]:
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
        groups = self._groups(rng, epoch)
        plan = self._assemble(groups, rng)
        plan.stats["plan_seconds"] = time.perf_counter() - start
        return plan


def _check_two_classes_fit(labels: np.ndarray, batch_size: int, members_per_class: int) -> None:
    """Refuses class-neighbourhood batches that can never hold two classes.

    A class takes min(members_per_class, its size) rows of a batch; with no
    two classes fitting, no batch has an imposter and nothing trains.

    Raises:
      ValueError: naming --batch_size and --members_per_class.
    """
    _, counts = np.unique(labels, return_counts=True)
    rows = np.sort(np.minimum(counts[counts >= 2], members_per_class))
    if len(rows) >= 2 and rows[0] + rows[1] > batch_size:
        raise ValueError(
            f"--batch_size={batch_size} cannot hold two classes of --members_per_class="
            f"{members_per_class} images (the smallest classes take {rows[0]} and {rows[1]} "
            "rows): no batch would have an imposter; raise --batch_size or lower "
            "--members_per_class.")


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
    pieces and packs small ones (`balanced_neighborhoods`): every image once per
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
          neighborhoods: "original" (the paper's rule), "classes", "mixed" or "balanced".
          local_share: ("mixed") share of each batch from its neighbourhood.
          min_classes: ("mixed") classes with >= 2 members in every batch.
          warmup_epochs: epochs of random batches before the first k-means.
          members_per_class: ("classes") images per class in a batch.
          kmeans_method: "sklearn" or "tf" (`sst_tf.kmeans`).
          **kwargs: as `_Sampler`.
        """
        super().__init__(*args, **kwargs)
        if neighborhoods not in neighborhoods_lib.NEIGHBORHOODS:
            modes = "|".join(neighborhoods_lib.NEIGHBORHOODS)
            raise ValueError(f"neighborhoods must be one of {modes}, got {neighborhoods!r}.")
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
        if neighborhoods == "classes":
            _check_two_classes_fit(self.labels, self.batch_size, self.members_per_class)
        self._clusters: np.ndarray | None = None
        self._cluster_epoch = 0

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
        if epoch >= self.warmup_epochs and neighborhoods_lib.needs_clusters(self.neighborhoods):
            self._cluster(epoch)

    def _cluster(self, epoch: int) -> None:
        seed = int(np.random.default_rng([self.seed, epoch, 1]).integers(2**31 - 1))
        self._clusters = kmeans_lib.kmeans(
            self._embeddings, self.num_clusters, method=self.kmeans_method, seed=seed,
            max_iter=self.kmeans_max_iter,
        ).labels

    def plan(self, epoch: int) -> EpochPlan:
        """Builds the plan of `epoch` (random batches in warm-up epochs)."""
        warm = epoch < self.warmup_epochs
        if (not warm and self._clusters is None and self._embeddings is not None
                and neighborhoods_lib.needs_clusters(self.neighborhoods)):
            self._cluster(self._cluster_epoch)  # refreshed during warm-up, planned after
        plan = super().plan(epoch)
        plan.stats["warmup"] = float(warm)
        return plan

    def _groups(self, rng: np.random.Generator, epoch: int) -> list[np.ndarray]:
        if epoch < self.warmup_epochs:
            return neighborhoods_lib.random_groups(self.num_train, self.batch_size, rng)
        return neighborhoods_lib.neighborhood_groups(
            self.neighborhoods, self._embeddings, self.labels, self._clusters,
            self.batch_size, rng, members_per_class=self.members_per_class,
            local_share=self.local_share, min_classes=self.min_classes)


class RandomSampler(_Sampler):
    """Random batches: a fresh permutation cut into `ceil(n / B)` batches."""

    @property
    def needs_embeddings(self) -> bool:  # type: ignore[override]
        """Embeddings are only needed for target tables."""
        return self.compute_targets

    def _groups(self, rng: np.random.Generator, epoch: int) -> list[np.ndarray]:
        return neighborhoods_lib.random_groups(self.num_train, self.batch_size, rng)


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

    def _groups(self, rng: np.random.Generator, epoch: int) -> list[np.ndarray]:
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


class MultiViewSampler:
    """A sampler whose every planned image appears `views` times in its batch.

    The inner sampler plans batches of B / views images; `plan` repeats each
    row (`plans.repeat_views`), and the pipeline augments every copy on its
    own. Everything else (refresh, statistics, ...) is the inner sampler's.
    """

    def __init__(self, sampler: _Sampler, views: int):
        """Wraps `sampler` (made with batch size B / views)."""
        self.sampler, self.views = sampler, int(views)

    def plan(self, epoch: int) -> EpochPlan:
        """The inner sampler's plan of `epoch`, each row repeated `views` times."""
        return repeat_views(self.sampler.plan(epoch), self.views)

    def __getattr__(self, name: str):
        return getattr(self.sampler, name)


def make_sampler(name: str, labels: np.ndarray, batch_size: int, views: int = 1,
                 **kwargs) -> _Sampler | MultiViewSampler:
    """Creates a sampler by name (`local`, `random` or `class_balanced`).

    Args:
      name: the sampler.
      labels: int [N] labels of the training split.
      batch_size: rows per batch B.
      views: each image this many times per batch, each copy augmented on its
        own (B / views images per batch; 2: two views, as SimCLR and SupCon).
      **kwargs: the sampler's options.

    Raises:
      ValueError: unknown name, B not a multiple of `views`, or views with
        target tables (`compute_targets`).
    """
    if name not in SAMPLERS:
        raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}, got {name!r}.")
    if views < 1 or batch_size % views:
        raise ValueError(f"batch_size {batch_size} must be a multiple of views {views} (>= 1).")
    if views == 1:
        return SAMPLERS[name](labels, batch_size, **kwargs)
    if kwargs.get("compute_targets", True):
        raise ValueError("views > 1 needs a sampler without target tables "
                         "(compute_targets=False): a target is one row of its batch.")
    return MultiViewSampler(SAMPLERS[name](labels, batch_size // views, **kwargs), views)


def refresh_due(epoch: int, every: int) -> bool:
    """Whether epoch `epoch` (0-based) starts with a refresh: the first, then every `every`."""
    return epoch % every == 0


def refresh_sampler(sampler: _Sampler, epoch: int,
                    embed: Callable[[], np.ndarray]) -> np.ndarray | None:
    """Refreshes a sampler for `epoch`: the one refresh of the trainer and of `fit`.

    Args:
      sampler: the sampler.
      epoch: the epoch the refresh is for (0-based).
      embed: returns the training split's current embeddings [N, d]; called
        only when the sampler needs embeddings (local sampling).

    Returns:
      The embeddings the sampler was refreshed with (None: it needs none).
    """
    embeddings = embed() if sampler.needs_embeddings else None
    sampler.refresh(embeddings, epoch)
    return embeddings
