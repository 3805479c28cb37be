"""CUB and SOP through their TFDS builders (`--data_source=tfds`).

TFDS stores the images as encoded bytes in record files, while the sampler
and pipeline address images by index. So the first run writes each image's
original bytes (no re-encoding) to one file, once, under
`<tfds data dir>/sst_tf_files/<builder>/<version>/`, with a manifest written
last (atomically); later runs read the manifest. From there on a TFDS data set
is a path data set like the official layouts, with the same split rules, count
checks and image checks.

- `caltech_birds2011`: TFDS splits the images of all 200 classes into train
  and test; both are merged and re-split by class (labels 0-99 train,
  100-199 test), as docs/method.md#protocol requires.
- `stanford_online_products`: the TFDS train/test splits are the official
  zero-shot lists.
"""

from __future__ import annotations

import csv
import os
import tempfile

from absl import logging

from sst_tf.datasets import common
from sst_tf.datasets.splits import Dataset

BUILDERS = {"cub": "caltech_birds2011", "sop": "stanford_online_products"}
_MANIFEST = "manifest.tsv"


def _extension(data: bytes) -> str:
    if data.startswith(b"\xff\xd8"):
        return ".jpg"
    if data.startswith(b"\x89PNG"):
        return ".png"
    if data[:3] == b"GIF":
        return ".gif"
    if data[:2] == b"BM":
        return ".bmp"
    return ".img"


def _row(name: str, ex: dict, split: str, super_names: list[str]) -> tuple[int, str, str]:
    """(class id, class name, tfds split) of one example of builder `name`.

    Class names match the official-layout readers: `001.black_footed_albatross`
    for CUB, `<super class>/<class id 1..>` (e.g. `bicycle/1`) for SOP.
    """
    if name == "caltech_birds2011":
        label = int(ex["label"])
        text = ex.get("label_name", b"")
        text = text.decode() if isinstance(text, bytes) else str(text)
        return label, f"{label + 1:03d}.{text}" if text else f"{label + 1:03d}", split
    label = int(ex["class_id"])
    sup = int(ex["super_class_id"])
    sup_name = super_names[sup] if sup < len(super_names) else str(sup)
    return label, f"{sup_name}/{label + 1}", split


def export_files(
    name: str, data_dir: str | None = None, download: bool = True
) -> list[tuple[str, int, str, str]]:
    """Writes the images of TFDS builder `name` to files once; returns the manifest.

    Args:
      name: TFDS builder (`caltech_birds2011` or `stanford_online_products`).
      data_dir: TFDS data dir (None: TFDS's default, `~/tensorflow_datasets`).
      download: let TFDS download and prepare the data if it is not there.

    Returns:
      Rows (path, class id, class name, tfds split) in TFDS order.
    """
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=data_dir)
    # builder.data_dir is <tfds data dir>/<name>/<version>.
    root = data_dir or os.path.dirname(os.path.dirname(os.fspath(builder.data_dir)))
    out_dir = os.path.join(root, "sst_tf_files", name, str(builder.version))
    manifest = os.path.join(out_dir, _MANIFEST)
    if os.path.isfile(manifest):
        with open(manifest, newline="") as f:
            rows = [(os.path.join(out_dir, p), int(c), n, s)
                    for p, c, n, s in csv.reader(f, delimiter="\t")]
        logging.info("%s: %d images from %s", name, len(rows), manifest)
        return rows
    decoders = {"image": tfds.decode.SkipDecoding()}
    super_names: list[str] = []
    if name == "caltech_birds2011":
        decoders["segmentation_mask"] = tfds.decode.SkipDecoding()
    else:
        super_names = list(builder.info.features["super_class_id"].names)
    os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
    rows = []
    logging.info("%s: writing the images to %s (once)...", name, out_dir)
    for split in ("train", "test"):
        ds = tfds.load(name, split=split, data_dir=data_dir, download=download,
                       decoders=decoders, shuffle_files=False)
        for ex in ds.as_numpy_iterator():
            data = bytes(ex["image"])
            rel = os.path.join("images", f"{len(rows):06d}{_extension(data)}")
            with open(os.path.join(out_dir, rel), "wb") as f:
                f.write(data)
            rows.append((rel, *_row(name, ex, split, super_names)))
            if len(rows) % 10000 == 0:
                logging.info("%s: %d images written", name, len(rows))
    fd, tmp = tempfile.mkstemp(dir=out_dir, suffix=".tmp")
    with os.fdopen(fd, "w", newline="") as f:
        csv.writer(f, delimiter="\t").writerows(rows)
    os.replace(tmp, manifest)
    return [(os.path.join(out_dir, r[0]), *r[1:]) for r in rows]


def load(
    dataset: str,
    data_dir: str | None = None,
    download: bool = True,
    expected_counts: common.Counts | str | None = "official",
    check_images: bool = True,
    strict_images: bool = False,
    cache_dir: str | None = None,
) -> Dataset:
    """Reads `cub` or `sop` through TFDS.

    Args:
      dataset: `cub` or `sop`.
      data_dir: TFDS data dir (None: TFDS's default).
      download: let TFDS download and prepare the data when missing.
      expected_counts: {split: (images, classes)} to check, "official", or None.
      check_images: decode every image once and drop undecodable ones.
      strict_images: fail on an undecodable image instead.
      cache_dir: cache of the image check.

    Returns:
      `Dataset` with the zero-shot split of docs/method.md#protocol.
    """
    if dataset not in BUILDERS:
        raise ValueError(
            f"--data_source=tfds supports {sorted(BUILDERS)}, not {dataset!r} "
            "(cars196's TFDS download is broken upstream: use its official files)."
        )
    name = BUILDERS[dataset]
    counts = common.resolve_counts(dataset, expected_counts)
    rows = export_files(name, data_dir, download)
    if dataset == "cub":
        in_train = [r[1] < 100 for r in rows]
    else:
        in_train = [r[3] == "train" for r in rows]
    splits = {}
    for split_name, want in (("train", True), ("test", False)):
        sel = [r for r, t in zip(rows, in_train, strict=True) if t == want]
        split = common.split_from_records([r[0] for r in sel], [r[1] for r in sel],
                                          {r[1]: r[2] for r in sel})
        common.check_counts(dataset, split_name, split.labels,
                            (counts or {}).get(split_name), f"TFDS {name}")
        splits[split_name] = split
    return common.finalize(dataset, splits["train"], splits["test"], check_images=check_images,
                           strict_images=strict_images, cache_dir=cache_dir)
