"""CUB-200-2011 from the official `CUB_200_2011` folder.

Layout (as extracted from `CUB_200_2011.tgz`)::

    CUB_200_2011/images.txt               "<image id> <class dir>/<file>.jpg"
    CUB_200_2011/image_class_labels.txt   "<image id> <class id 1..200>"
    CUB_200_2011/classes.txt              "<class id> <class dir>" (optional here)
    CUB_200_2011/images/<class dir>/<file>.jpg

Zero-shot split (docs/method.md#protocol): classes 1-100 train (5,864 images), 101-200
test (5,924). The official `train_test_split.txt` is not used: it splits images
of the same classes. The TFDS builder `caltech_birds2011` is read by
`sst_tf.datasets.tfds_source`.
"""

from __future__ import annotations

import os

from sst_tf.datasets import common
from sst_tf.datasets.splits import Dataset

NUM_TRAIN_CLASSES = 100


def _read_pairs(path: str) -> dict[int, str]:
    out = {}
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.split(maxsplit=1)
            if len(parts) != 2:
                raise common.DatasetLayoutError(
                    f"{path}:{lineno}: expected '<id> <value>', got {line.strip()!r}."
                )
            try:
                out[int(parts[0])] = parts[1].strip()
            except ValueError as e:
                raise common.DatasetLayoutError(
                    f"{path}:{lineno}: expected an integer id, got {parts[0]!r}."
                ) from e
    return out


def load(
    data_dir: str,
    expected_counts: common.Counts | str | None = "official",
    check_images: bool = True,
    strict_images: bool = False,
    cache_dir: str | None = None,
) -> Dataset:
    """Reads CUB-200-2011 from `data_dir` (or `data_dir/CUB_200_2011`).

    Args:
      data_dir: folder holding `CUB_200_2011/` (or that folder itself).
      expected_counts: {split: (images, classes)} to check, "official" (the
        numbers of docs/method.md#protocol), or None to skip the check (a deliberate subset).
      check_images: decode every image once and drop undecodable ones.
      strict_images: fail on an undecodable image instead.
      cache_dir: cache of the image check.

    Returns:
      `Dataset` "cub": train = classes 1-100, test = classes 101-200.

    Raises:
      DatasetLayoutError: a missing file (named), a malformed line, or counts
        that differ from `expected_counts`.
    """
    counts = common.resolve_counts("cub", expected_counts)
    root = common.find_root(data_dir, "CUB_200_2011", "images.txt")
    images_txt = os.path.join(root, "images.txt")
    labels_txt = common.require_file(
        os.path.join(root, "image_class_labels.txt"), "CUB class labels of the images"
    )
    images = _read_pairs(images_txt)
    labels = {k: int(v) for k, v in _read_pairs(labels_txt).items()}
    unlabeled = sorted(set(images) - set(labels))
    if unlabeled:
        raise common.DatasetLayoutError(
            f"{labels_txt} has no label for {len(unlabeled)} image ids of {images_txt}, "
            f"e.g. {unlabeled[:5]}."
        )
    classes_txt = os.path.join(root, "classes.txt")
    if os.path.isfile(classes_txt):
        names = {int(k): v for k, v in _read_pairs(classes_txt).items()}
    else:  # the class folder of an image is the class name ("001.Black_footed_Albatross")
        names = {labels[i]: images[i].split("/")[0] for i in images}

    splits = {}
    source = f"{images_txt} and {labels_txt}"
    for split_name, in_split in (
        ("train", lambda c: c <= NUM_TRAIN_CLASSES),
        ("test", lambda c: c > NUM_TRAIN_CLASSES),
    ):
        ids = [i for i in sorted(images) if in_split(labels[i])]
        paths = [os.path.join(root, "images", images[i]) for i in ids]
        split = common.split_from_records(paths, [labels[i] for i in ids], names)
        common.check_counts("cub", split_name, split.labels,
                            (counts or {}).get(split_name), source)
        common.check_files_exist(paths, "cub", images_txt)
        splits[split_name] = split
    return common.finalize("cub", splits["train"], splits["test"], check_images=check_images,
                           strict_images=strict_images, cache_dir=cache_dir)
