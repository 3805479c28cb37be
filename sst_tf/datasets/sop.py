"""Stanford Online Products from the official `Stanford_Online_Products` folder.

Layout (as extracted from `Stanford_Online_Products.zip`)::

    Stanford_Online_Products/Ebay_train.txt   header "image_id class_id super_class_id path"
    Stanford_Online_Products/Ebay_test.txt    same columns
    Stanford_Online_Products/<super>_final/<product>_<n>.JPG

The official split is already zero-shot (docs/method.md#protocol): 11,318 train classes
(59,551 images), 11,316 test classes (60,502). The TFDS builder
`stanford_online_products` is read by `sst_tf.datasets.tfds_source`.
"""

from __future__ import annotations

import os

from sst_tf.datasets import common
from sst_tf.datasets.splits import Dataset

_COLUMNS = ("image_id", "class_id", "super_class_id", "path")


def class_name(class_id: int, path: str) -> str:
    """`<super class>/<class id>`, e.g. `bicycle/1` for `bicycle_final/111085122871_0.JPG`."""
    top = path.replace("\\", "/").split("/")[0]
    top = top[: -len("_final")] if top.endswith("_final") else top
    return f"{top}/{class_id}"


def read_list(path: str) -> tuple[list[str], list[int]]:
    """Reads `Ebay_train.txt` / `Ebay_test.txt`.

    Args:
      path: the list file.

    Returns:
      (relative image paths, class ids).

    Raises:
      DatasetLayoutError: wrong header or a malformed line (file and line named).
    """
    paths, classes = [], []
    with open(path) as f:
        header = f.readline().split()
        if tuple(header) != _COLUMNS:
            raise common.DatasetLayoutError(
                f"{path}:1: expected the header {' '.join(_COLUMNS)!r}, got {' '.join(header)!r}."
            )
        for lineno, line in enumerate(f, 2):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 4 or not parts[1].isdigit():
                raise common.DatasetLayoutError(
                    f"{path}:{lineno}: expected 4 columns ({' '.join(_COLUMNS)}), "
                    f"got {line.strip()!r}."
                )
            classes.append(int(parts[1]))
            paths.append(parts[3])
    return paths, classes


def load(
    data_dir: str,
    expected_counts: common.Counts | str | None = "official",
    check_images: bool = True,
    strict_images: bool = False,
    cache_dir: str | None = None,
) -> Dataset:
    """Reads Stanford Online Products from `data_dir` (or `.../Stanford_Online_Products`).

    Args:
      data_dir: folder holding `Stanford_Online_Products/` (or that folder).
      expected_counts: {split: (images, classes)} to check, "official" (the
        numbers of docs/method.md#protocol), or None to skip the check (a deliberate subset).
      check_images: decode every image once and drop undecodable ones.
      strict_images: fail on an undecodable image instead.
      cache_dir: cache of the image check.

    Returns:
      `Dataset` "sop" with the official train/test lists.

    Raises:
      DatasetLayoutError: a missing file (named), a malformed list, counts
        that differ from `expected_counts`, or classes shared by both lists.
    """
    counts = common.resolve_counts("sop", expected_counts)
    root = common.find_root(data_dir, "Stanford_Online_Products", "Ebay_train.txt")
    splits, class_sets = {}, {}
    for split_name, list_name in (("train", "Ebay_train.txt"), ("test", "Ebay_test.txt")):
        list_path = common.require_file(os.path.join(root, list_name),
                                        f"the SOP {split_name} list")
        rel, classes = read_list(list_path)
        names = {c: class_name(c, p) for p, c in zip(rel, classes, strict=True)}
        paths = [os.path.join(root, p) for p in rel]
        split = common.split_from_records(paths, classes, names)
        common.check_counts("sop", split_name, split.labels,
                            (counts or {}).get(split_name), list_path)
        common.check_files_exist(paths, "sop", list_path)
        splits[split_name] = split
        class_sets[split_name] = set(classes)
    shared = class_sets["train"] & class_sets["test"]
    if shared and counts is not None:
        raise common.DatasetLayoutError(
            f"sop: {len(shared)} class ids appear in both Ebay_train.txt and Ebay_test.txt "
            f"of {root} (e.g. {sorted(shared)[:5]}); the official split is zero-shot."
        )
    return common.finalize("sop", splits["train"], splits["test"], check_images=check_images,
                           strict_images=strict_images, cache_dir=cache_dir)
