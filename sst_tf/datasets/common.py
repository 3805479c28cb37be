"""Shared pieces of the benchmark readers: layout errors, count checks, splits.

Every reader of an official layout turns its annotation files into a list of
(relative path, original class id) records, splits them by class for the
zero-shot protocol of docs/method.md#protocol, checks the image and class counts against
the official numbers, checks that the listed files exist, and finally drops
images that cannot be decoded (`sst_tf.datasets.images`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
from absl import logging

from sst_tf.datasets import images as images_lib
from sst_tf.datasets.splits import Dataset, Split

# Official zero-shot splits (docs/method.md#protocol): split -> (images, classes).
OFFICIAL_COUNTS: dict[str, dict[str, tuple[int, int]]] = {
    "cub": {"train": (5864, 100), "test": (5924, 100)},
    "cars196": {"train": (8054, 98), "test": (8131, 98)},
    "sop": {"train": (59551, 11318), "test": (60502, 11316)},
}

# Image file extensions the readers of user folders accept (lower case).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


Counts = dict[str, tuple[int, int]]


def resolve_counts(name: str, expected_counts: Counts | str | None) -> Counts | None:
    """`"official"` -> the official counts of `name` (None if it has none); else as given."""
    if expected_counts == "official":
        return OFFICIAL_COUNTS.get(name)
    return expected_counts  # type: ignore[return-value]


class DatasetLayoutError(ValueError):
    """A data folder does not hold what the reader expects (names the path)."""


def find_root(data_dir: str, folder: str, marker: str) -> str:
    """Finds the folder holding `marker`: `data_dir` itself or `data_dir/folder`.

    Args:
      data_dir: folder the user pointed `--data_dir` at.
      folder: the official top-level folder name (e.g. `CUB_200_2011`).
      marker: a file that must be in the root (e.g. `images.txt`).

    Returns:
      The root folder.

    Raises:
      DatasetLayoutError: naming both places that were looked at.
    """
    for root in (os.path.join(data_dir, folder), data_dir):
        if os.path.isfile(os.path.join(root, marker)):
            return root
    raise DatasetLayoutError(
        f"{os.path.join(data_dir, folder, marker)} not found (nor "
        f"{os.path.join(data_dir, marker)}): --data_dir must hold the official {folder} "
        "layout; scripts/prepare_data.py unpacks the downloaded archives into it."
    )


def require_file(path: str, what: str) -> str:
    """Returns `path` if it is a file, else raises an error naming it and `what`."""
    if not os.path.isfile(path):
        raise DatasetLayoutError(f"{path} not found ({what}).")
    return path


def check_counts(
    name: str,
    split_name: str,
    labels: np.ndarray,
    expected: tuple[int, int] | None,
    source: str,
) -> None:
    """Checks a split's image and class counts against the official numbers.

    Args:
      name: data-set name, for the message.
      split_name: `train` or `test`.
      labels: the split's labels (one per listed image).
      expected: (images, classes), or None to skip the check.
      source: the file(s) the split was read from, for the message.

    Raises:
      DatasetLayoutError: saying what was found, what was expected, and where.
    """
    if expected is None:
        return
    found = (len(labels), len(np.unique(labels)))
    if found != tuple(expected):
        raise DatasetLayoutError(
            f"{name} {split_name} split: found {found[0]} images in {found[1]} classes, "
            f"expected {expected[0]} images in {expected[1]} classes (read from {source}). "
            "The copy looks incomplete or modified; re-extract the official archive "
            "(scripts/prepare_data.py), or pass --nocheck_counts to use a deliberate subset."
        )


def check_files_exist(paths: Sequence[str], name: str, source: str) -> None:
    """Raises naming the first missing files when a listed image does not exist."""
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise DatasetLayoutError(
            f"{name}: {len(missing)} of {len(paths)} images listed in {source} are "
            f"missing: {shown}"
        )


def split_from_records(
    paths: Sequence[str], class_ids: Sequence[int], names: Mapping[int, str]
) -> Split:
    """Builds a path `Split` whose labels are 0..C-1 in order of the original ids.

    Args:
      paths: image file paths.
      class_ids: original class id of each image (any integers).
      names: original class id -> class name.

    Returns:
      `Split` with `labels[i]` indexing `class_names`.
    """
    ids = np.asarray(class_ids, np.int64)
    uniq, labels = np.unique(ids, return_inverse=True)
    class_names = tuple(names.get(int(c), str(int(c))) for c in uniq)
    return Split(labels.astype(np.int64), class_names, paths=tuple(paths))


def finalize(
    name: str,
    train: Split,
    test: Split,
    *,
    check_images: bool = True,
    strict_images: bool = False,
    cache_dir: str | None = None,
) -> Dataset:
    """Drops undecodable images (or fails with `strict_images`) and logs a summary.

    Args:
      name: data-set name.
      train: train split (paths).
      test: test split (paths).
      check_images: decode every image once up front (cached) and drop the ones
        that fail; False trusts the files.
      strict_images: fail on the first undecodable image instead of skipping.
      cache_dir: where the decode check caches its result (see
        `sst_tf.datasets.images.check_images`).

    Returns:
      The `Dataset`.
    """
    splits = {}
    for split_name, split in (("train", train), ("test", test)):
        if check_images:
            split = images_lib.drop_undecodable(
                split, f"{name}/{split_name}", strict=strict_images, cache_dir=cache_dir
            )
        splits[split_name] = split
    shared = set(splits["train"].class_names) & set(splits["test"].class_names)
    logging.info(
        "%s: train %d images / %d classes, test %d images / %d classes, %d class names shared.",
        name,
        len(splits["train"]),
        splits["train"].num_classes,
        len(splits["test"]),
        splits["test"].num_classes,
        len(shared),
    )
    return Dataset(name, splits["train"], splits["test"])
