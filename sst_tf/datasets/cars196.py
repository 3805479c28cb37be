"""CARS196 (Stanford Cars) from the official `car_ims/` + `cars_annos.mat` files.

Layout (`car_ims.tgz` extracted next to `cars_annos.mat`)::

    DATA_DIR/cars_annos.mat   struct array `annotations` (relative_im_path,
                              bbox_x1, bbox_y1, bbox_x2, bbox_y2, class 1..196,
                              test 0/1) and cell array `class_names`
    DATA_DIR/car_ims/000001.jpg ... 016185.jpg

Zero-shot split (docs/method.md#protocol): classes 1-98 train (8,054 images), 99-196 test
(8,131); the `test` flag of the annotations (a same-class split) is ignored.
TFDS's `cars196` download is broken upstream, so there is no TFDS source.
"""

from __future__ import annotations

import os

import numpy as np

from sst_tf.datasets import common
from sst_tf.datasets.splits import Dataset

NUM_TRAIN_CLASSES = 98


def _unwrap(value):
    """Unwraps MATLAB's nested 1x1 arrays down to a Python scalar or string."""
    while isinstance(value, np.ndarray):
        if value.size != 1:
            if value.dtype.kind in "US":
                return "".join(value.ravel().tolist())
            raise ValueError(f"expected a scalar, got an array of shape {value.shape}")
        value = value.ravel()[0]
    if isinstance(value, bytes):
        value = value.decode()
    return value.item() if isinstance(value, np.generic) else value


def read_annotations(mat_path: str) -> tuple[list[str], list[int], dict[int, str]]:
    """Reads `cars_annos.mat`.

    Args:
      mat_path: path of `cars_annos.mat`.

    Returns:
      (relative image paths, class ids 1..196, {class id: class name}).

    Raises:
      DatasetLayoutError: the file is not a readable MAT file with the
        `annotations` struct array (naming the file and what is missing).
    """
    from scipy import io as sio

    try:
        mat = sio.loadmat(mat_path)
    except Exception as e:  # scipy raises many kinds on a damaged file
        raise common.DatasetLayoutError(f"{mat_path} is not a readable MAT file: {e}") from e
    if "annotations" not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise common.DatasetLayoutError(
            f"{mat_path} has no 'annotations' variable (found {found}); "
            "expected the Stanford Cars cars_annos.mat."
        )
    ann = mat["annotations"].ravel()
    fields = ann.dtype.names or ()
    for field in ("relative_im_path", "class"):
        if field not in fields:
            raise common.DatasetLayoutError(
                f"{mat_path}: the 'annotations' struct has no '{field}' field "
                f"(fields: {list(fields)})."
            )
    paths = [str(_unwrap(a)) for a in ann["relative_im_path"]]
    classes = [int(_unwrap(a)) for a in ann["class"]]
    names: dict[int, str] = {}
    if "class_names" in mat:
        for i, n in enumerate(mat["class_names"].ravel(), 1):
            names[i] = str(_unwrap(n)).strip()
    return paths, classes, names


def load(
    data_dir: str,
    expected_counts: common.Counts | str | None = "official",
    check_images: bool = True,
    strict_images: bool = False,
    cache_dir: str | None = None,
) -> Dataset:
    """Reads CARS196 from `data_dir` (holding `cars_annos.mat` and `car_ims/`).

    Args:
      data_dir: folder holding `cars_annos.mat` and `car_ims/` (or a `cars196/`
        folder holding them).
      expected_counts: {split: (images, classes)} to check, "official" (the
        numbers of docs/method.md#protocol), or None to skip the check (a deliberate subset).
      check_images: decode every image once and drop undecodable ones.
      strict_images: fail on an undecodable image instead.
      cache_dir: cache of the image check.

    Returns:
      `Dataset` "cars196": train = classes 1-98, test = classes 99-196.

    Raises:
      DatasetLayoutError: a missing file (named), an unreadable annotation
        file, or counts that differ from `expected_counts`.
    """
    counts = common.resolve_counts("cars196", expected_counts)
    root = common.find_root(data_dir, "cars196", "cars_annos.mat")
    mat_path = os.path.join(root, "cars_annos.mat")
    rel_paths, classes, names = read_annotations(mat_path)
    if not os.path.isdir(os.path.join(root, "car_ims")):
        raise common.DatasetLayoutError(
            f"{os.path.join(root, 'car_ims')} not found: extract car_ims.tgz next to "
            f"{mat_path}."
        )
    splits = {}
    for split_name, in_split in (
        ("train", lambda c: c <= NUM_TRAIN_CLASSES),
        ("test", lambda c: c > NUM_TRAIN_CLASSES),
    ):
        idx = [i for i, c in enumerate(classes) if in_split(c)]
        paths = [os.path.join(root, rel_paths[i]) for i in idx]
        split = common.split_from_records(paths, [classes[i] for i in idx], names)
        common.check_counts("cars196", split_name, split.labels,
                            (counts or {}).get(split_name), mat_path)
        common.check_files_exist(paths, "cars196", mat_path)
        splits[split_name] = split
    return common.finalize("cars196", splits["train"], splits["test"],
                           check_images=check_images, strict_images=strict_images,
                           cache_dir=cache_dir)
