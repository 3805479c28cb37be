"""The data-set types: a `Split` (images or files + labels) and a `Dataset`.

Every reader returns a `Dataset` of two splits. Nothing here builds a TF graph.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Split:
    """One split of a data set.

    Exactly one of `images` and `paths` is set.

    Attributes:
      labels: int64 [N] class ids in [0, num_classes).
      class_names: name of each class id.
      images: uint8 [N, H, W, 3] RGB images held in memory, or None.
      paths: N image file paths (JPEG/PNG/...), or None.
    """

    labels: np.ndarray
    class_names: tuple[str, ...]
    images: np.ndarray | None = None
    paths: tuple[str, ...] | None = None

    def __post_init__(self):
        if (self.images is None) == (self.paths is None):
            raise ValueError("Split needs exactly one of `images` and `paths`.")
        n = len(self.images) if self.images is not None else len(self.paths)
        if len(self.labels) != n:
            raise ValueError(f"Split has {n} images but {len(self.labels)} labels.")
        if self.images is not None and (
            self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[-1] != 3
        ):
            raise ValueError(
                f"Split.images must be uint8 [N, H, W, 3], got {self.images.dtype} "
                f"{self.images.shape}."
            )

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        """Number of distinct labels present in this split."""
        return int(len(np.unique(self.labels)))

    @property
    def in_memory(self) -> bool:
        """True when the images are held as a uint8 array."""
        return self.images is not None


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A named data set with a train and a test split."""

    name: str
    train: Split
    test: Split


def subset(split: Split, indices: Sequence[int] | np.ndarray) -> Split:
    """Returns the split restricted to `indices` (for tests and quick runs)."""
    idx = np.asarray(indices, np.int64)
    if split.images is not None:
        return Split(split.labels[idx], split.class_names, images=split.images[idx])
    return Split(split.labels[idx], split.class_names, paths=tuple(split.paths[i] for i in idx))
