"""A user's own images: `DIR/train/<class>/*` and `DIR/test/<class>/*`.

Each sub-folder of a split is one class (its files, searched recursively, with
a JPEG/PNG/BMP/GIF/WebP extension); other files are skipped and counted. The
two splits may share classes or not, as the user made them; each split's
labels index its own sorted class names.
"""

from __future__ import annotations

import os

from absl import logging

from sst_tf.datasets import common
from sst_tf.datasets.splits import Dataset


def read_split(split_dir: str) -> tuple[list[str], list[int], dict[int, str], int]:
    """Lists one split folder.

    Args:
      split_dir: `DIR/train` or `DIR/test`.

    Returns:
      (paths, class ids, {class id: class folder name}, number of skipped
      non-image files).

    Raises:
      DatasetLayoutError: the folder is missing or holds no class folder with images.
    """
    if not os.path.isdir(split_dir):
        raise common.DatasetLayoutError(
            f"{split_dir} not found: --dataset=folder needs DIR/train/<class>/* and "
            "DIR/test/<class>/* image files."
        )
    paths, classes, names, skipped = [], [], {}, 0
    class_dirs = sorted(d for d in os.listdir(split_dir)
                        if os.path.isdir(os.path.join(split_dir, d)) and not d.startswith("."))
    for name in class_dirs:
        files = []
        for dirpath, dirnames, filenames in os.walk(os.path.join(split_dir, name)):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fn in sorted(filenames):
                if fn.startswith("."):
                    continue
                if fn.lower().endswith(common.IMAGE_EXTENSIONS):
                    files.append(os.path.join(dirpath, fn))
                else:
                    skipped += 1
        if not files:
            logging.warning("%s has no image files; class %r left out.",
                            os.path.join(split_dir, name), name)
            continue
        cid = len(names)
        names[cid] = name
        paths += files
        classes += [cid] * len(files)
    if not paths:
        raise common.DatasetLayoutError(
            f"{split_dir} holds no class folder with image files "
            f"({', '.join(common.IMAGE_EXTENSIONS)})."
        )
    return paths, classes, names, skipped


def load(
    data_dir: str,
    check_images: bool = True,
    strict_images: bool = False,
    cache_dir: str | None = None,
    expected_counts: dict[str, tuple[int, int]] | None = None,
) -> Dataset:
    """Reads `data_dir/train/<class>/*` and `data_dir/test/<class>/*`.

    Args:
      data_dir: the folder holding `train/` and `test/`.
      check_images: decode every image once and drop undecodable ones.
      strict_images: fail on an undecodable image instead.
      cache_dir: cache of the image check.
      expected_counts: optional {split: (images, classes)} to check.

    Returns:
      `Dataset` "folder".

    Raises:
      DatasetLayoutError: a missing split folder, an empty split, or a train
        split with fewer than 2 classes (no triplets possible).
    """
    splits = {}
    for split_name in ("train", "test"):
        split_dir = os.path.join(data_dir, split_name)
        paths, classes, names, skipped = read_split(split_dir)
        if skipped:
            logging.warning("%s: skipped %d files without an image extension.",
                            split_dir, skipped)
        split = common.split_from_records(paths, classes, names)
        common.check_counts("folder", split_name, split.labels,
                            (expected_counts or {}).get(split_name), split_dir)
        splits[split_name] = split
    if splits["train"].num_classes < 2:
        raise common.DatasetLayoutError(
            f"{os.path.join(data_dir, 'train')} has {splits['train'].num_classes} class "
            "folder(s) with images; metric learning needs at least 2."
        )
    return common.finalize("folder", splits["train"], splits["test"],
                           check_images=check_images, strict_images=strict_images,
                           cache_dir=cache_dir)
