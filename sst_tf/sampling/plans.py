"""Epoch plans: the batches of one epoch, their statistics, and padding.

An `EpochPlan` is a stack of fixed-size batches:

  indices  int64 [num_batches, B]   training-split indices (padding rows repeat
                                     real members of their batch, masked out)
  targets  int32 [num_batches, B, k] batch-local target neighbours, -1 = none
  mask     bool  [num_batches, B]   False on padding rows

`plan_statistics` (coverage, fill, classes) and `composition_statistics` (what
the batches are made of: the diagnostics of local sampling, logged every
epoch) describe a plan; `pad_plan` pads it to a multiple of the replicas.
"""

from __future__ import annotations

import dataclasses

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


def repeat_views(plan: EpochPlan, views: int) -> EpochPlan:
    """Each row of `plan` `views` times in a row (the batch grows `views` times).

    The pipeline seeds each row's augmentation by its position, so the copies
    are different augmentations of one image with its label: the two views
    of SimCLR / SupCon. Plans with target tables are refused (a target
    indexes one row; which view would it be?).

    Raises:
      ValueError: `views` < 1, or a plan with targets.
    """
    if views < 1:
        raise ValueError(f"views must be >= 1, got {views}.")
    if views == 1:
        return plan
    if (plan.targets >= 0).any():
        raise ValueError("plans with target neighbours (--loss=sst or triplet) cannot be "
                         "repeated into views: a target is one row of its batch.")
    nb, b = plan.indices.shape
    return EpochPlan(
        indices=np.repeat(plan.indices, views, axis=1),
        targets=np.full((nb, b * views, plan.targets.shape[-1]), -1, np.int32),
        mask=np.repeat(plan.mask, views, axis=1),
        stats={**plan.stats, "views": float(views)})


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
    distance ratio near 1 means the batch triplets are not told apart by the
    refreshed embeddings, whatever the loss.

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
      (their ratio).
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
    return out


def pad_plan(plan: EpochPlan, multiple: int) -> EpochPlan:
    """Pads an epoch plan with fully masked batches to a multiple of `multiple`.

    Args:
      plan: the plan (indices [nb, B], targets [nb, B, k], mask [nb, B]).
      multiple: batches per step (replicas in sync).

    Returns:
      The same plan when nothing is missing, else a copy with extra batches
      that repeat the first batch's indices (valid images to load) with
      mask False and targets -1.
    """
    nb = plan.indices.shape[0]
    extra = (-nb) % multiple
    if extra == 0 or nb == 0:
        return plan
    rep = lambda a, fill: np.concatenate(  # noqa: E731
        [a, np.full((extra, *a.shape[1:]), fill, a.dtype)])
    indices = np.concatenate([plan.indices, np.repeat(plan.indices[:1], extra, 0)])
    stats = dict(plan.stats)
    stats["padding_batches"] = int(extra)
    return dataclasses.replace(plan, indices=indices, targets=rep(plan.targets, -1),
                               mask=rep(plan.mask, False), stats=stats)
