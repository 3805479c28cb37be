"""Benchmark data-set readers: official layouts, TFDS builders and user folders.

Each reader returns an `sst_tf.datasets.splits.Dataset` of two path splits with
the zero-shot split of docs/method.md#protocol (`cub`, `cars196`, `sop`) or the user's own
split (`folder`), after checking the official counts and dropping (or, with
`strict_images`, refusing) images that cannot be decoded. `sst_tf.data`
registers them under their names; `load` is what it calls.
"""

from __future__ import annotations

from sst_tf.datasets import cars196, cub, folder, sop, tfds_source
from sst_tf.datasets.splits import Dataset

# The --data_source choices: a local folder in the official layout, or a TFDS builder.
DATA_SOURCES = ("files", "tfds")


def check_data_source(data_source: str) -> None:
    """Raises ValueError naming --data_source unless it is one of `DATA_SOURCES`."""
    if data_source not in DATA_SOURCES:
        raise ValueError(
            f"--data_source must be {' or '.join(DATA_SOURCES)}, got {data_source!r}.")


def load(
    name: str,
    data_dir: str | None,
    data_source: str = "files",
    check_counts: bool = True,
    check_images: bool = True,
    strict_images: bool = False,
    cache_dir: str | None = None,
) -> Dataset:
    """Loads benchmark data set `name`.

    Args:
      name: `cub`, `cars196`, `sop` or `folder`.
      data_dir: the data folder (for `data_source="tfds"`: TFDS's data dir, or
        None for TFDS's default).
      data_source: "files" (official layout / user folder under `data_dir`) or
        "tfds" (`cub`, `sop` only).
      check_counts: check the official image and class counts (`cub`,
        `cars196`, `sop`); turn off only for a deliberate subset.
      check_images: decode every image once up front (cached) and drop the
        undecodable ones with a warning and a count.
      strict_images: fail on the first undecodable image instead.
      cache_dir: cache of the image check (default `~/.cache/sst_tf`).

    Returns:
      The `Dataset`.
    """
    options = dict(check_images=check_images, strict_images=strict_images, cache_dir=cache_dir)
    counts = "official" if check_counts else None
    if data_source == "tfds":
        return tfds_source.load(name, data_dir, expected_counts=counts, **options)
    check_data_source(data_source)
    if name == "folder":
        return folder.load(data_dir, **options)
    readers = {"cub": cub, "cars196": cars196, "sop": sop}
    if name not in readers:
        raise ValueError(f"no benchmark reader for {name!r}; choose one of cub, cars196, sop, "
                         "folder.")
    return readers[name].load(data_dir, expected_counts=counts, **options)
