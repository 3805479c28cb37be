"""The data-set registry: every data set by name, behind one `load_dataset`.

A data set is two `Split`s (train and test, `sst_tf.datasets.splits`). A split
holds its images either in memory (`images`: uint8 [N, H, W, 3] RGB) or as file
paths (`paths`: image files decoded by `sst_tf.datasets.images`), plus int
labels and class names. Nothing here builds a TF graph.

Readers are registered by name in `DATASETS` (`register`); `load_dataset(name,
data_dir, **kw)` calls them. This module ships `digits` (scikit-learn's bundled
8x8 digits, upscaled; retrieval of unseen images of known classes). The
benchmark readers (`cub`, `cars196`, `sop`, `folder`) live in `sst_tf.datasets`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import numpy as np
from absl import logging

from sst_tf import datasets
from sst_tf.datasets import tfds_source
from sst_tf.datasets.splits import Dataset, Split, subset

__all__ = [
    "BENCHMARK_OPTIONS", "DATASETS", "Dataset", "DatasetInfo", "HeldOut", "Split",
    "check_dataset_args", "hold_out", "load_dataset", "load_digits_dataset", "register",
    "stratified_half_split", "subset",
]


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """A registered data-set reader.

    Attributes:
      loader: `loader(data_dir, **kw) -> Dataset`, or None when the reader is not
        built yet.
      needs_data_dir: whether `--data_dir` must point at the data.
      expected: what the user must put into `data_dir` (for error messages).
      options: keyword options of the loader that come from flags (see
        `BENCHMARK_OPTIONS`); other data sets take none.
    """

    loader: Callable[..., Dataset] | None
    needs_data_dir: bool
    expected: str = ""
    options: tuple[str, ...] = ()


DATASETS: dict[str, DatasetInfo] = {}


def register(name: str, needs_data_dir: bool, expected: str = ""):
    """Decorator registering `fn(data_dir, **kw) -> Dataset` under `name`."""

    def wrap(fn: Callable[..., Dataset]) -> Callable[..., Dataset]:
        DATASETS[name] = DatasetInfo(fn, needs_data_dir, expected)
        return fn

    return wrap


# Options the benchmark readers take from the flags (`TrainConfig.reader_options`).
BENCHMARK_OPTIONS = ("data_source", "check_counts", "check_images", "strict_images")


def _benchmark_reader(name: str) -> Callable[..., Dataset]:
    """A loader for benchmark data set `name` (see `sst_tf.datasets.load`)."""

    def load(data_dir: str | None, **options) -> Dataset:
        return datasets.load(name, data_dir, **options)

    load.__doc__ = f"Loads {name} (see `sst_tf.datasets.load`)."
    return load


for _name, _expected in {
    "cub": "the official CUB_200_2011 folder (images.txt, image_class_labels.txt, images/)",
    "cars196": "the official Stanford Cars files (car_ims/ and cars_annos.mat)",
    "sop": "the official Stanford_Online_Products folder (Ebay_train.txt, Ebay_test.txt)",
    "folder": "DIR/train/<class>/* and DIR/test/<class>/* image files",
}.items():
    DATASETS[_name] = DatasetInfo(_benchmark_reader(_name), True, _expected, BENCHMARK_OPTIONS)


def check_dataset_args(name: str, data_dir: str | None, data_source: str = "files") -> None:
    """Validates a data-set name, data dir and source before any work starts.

    Args:
      name: `--dataset`.
      data_dir: `--data_dir`.
      data_source: `--data_source`: "files" (a local folder) or "tfds" (a TFDS
        builder; `data_dir` is then TFDS's data dir and optional).

    Raises:
      ValueError: naming the `--dataset`, `--data_dir` or `--data_source` flag.
    """
    if name not in DATASETS:
        raise ValueError(
            f"--dataset={name!r} is unknown; choose one of {', '.join(sorted(DATASETS))}."
        )
    info = DATASETS[name]
    datasets.check_data_source(data_source)
    if data_source == "tfds":
        builders = tfds_source.BUILDERS
        if name not in builders:
            raise ValueError(
                f"--data_source=tfds is available for {', '.join(sorted(builders))}, not "
                f"--dataset={name} (cars196's TFDS download is broken upstream; use its files)."
            )
        return
    if info.needs_data_dir:
        if not data_dir:
            raise ValueError(
                f"--data_dir is required for --dataset={name}: put {info.expected} there."
            )
        if os.path.isfile(data_dir):
            raise ValueError(
                f"--data_dir={data_dir} is a file, not a folder (--dataset={name} needs "
                f"{info.expected})."
            )
        if not os.path.isdir(data_dir):
            raise ValueError(
                f"--data_dir={data_dir} does not exist (--dataset={name} needs {info.expected})."
            )


def load_dataset(name: str, data_dir: str | None = None, **kwargs) -> Dataset:
    """Loads a registered data set.

    Args:
      name: registered name (see `DATASETS`).
      data_dir: folder holding the data, for readers that need one.
      **kwargs: reader-specific options.

    Returns:
      The `Dataset`.

    Raises:
      ValueError: unknown name or missing data dir.
      NotImplementedError: the name is known but its reader is not built yet.
    """
    check_dataset_args(name, data_dir, kwargs.get("data_source", "files"))
    info = DATASETS[name]
    if info.loader is None:
        raise NotImplementedError(
            f"data set {name!r} is not available yet: its reader (for {info.expected}) "
            "is not part of this version of sst_tf."
        )
    return info.loader(data_dir, **kwargs)


def stratified_half_split(labels: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Splits each class's indices in two halves (first half -> train).

    Args:
      labels: int [N] labels.
      seed: seed of the fixed per-class shuffle.

    Returns:
      (train_indices, test_indices), each sorted; for a class with an odd count
      the extra image goes to train.
    """
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        half = (len(idx) + 1) // 2
        train.append(idx[:half])
        test.append(idx[half:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


@dataclasses.dataclass(frozen=True)
class HeldOut:
    """A data set with part of its training split held out for validation.

    Attributes:
      dataset: the data set to train on (its training split without the held-out part).
      validation: the held-out images, or None when nothing is held out.
      kind: "classes" (whole training classes held out: the test classes are
        new classes, so the validation classes are too), "images" (images of
        every training class: the test split shows the training classes), or
        "" (nothing held out).
    """

    dataset: Dataset
    validation: Split | None
    kind: str

    def describe(self) -> str:
        """Where the validation images come from, in words."""
        if self.validation is None:
            return "the training split (images seen in training; --validation_share=0)"
        n = len(self.validation.labels)
        c = len(np.unique(self.validation.labels))
        if self.kind == "classes":
            return (f"the validation classes ({c} training classes, {n} images, held out of "
                    "training)")
        return f"held-out training images ({n} images of {c} classes, held out of training)"


def hold_out(dataset: Dataset, share: float, seed: int = 0) -> HeldOut:
    """Holds `share` of the training split out of training, for validation.

    When no class of the test split is a training class (retrieval of new
    classes: CUB, Cars196, SOP, most folder data sets) whole classes are held
    out, so validation also measures new classes; otherwise (digits) `share`
    of every class's images (at least 2 per class, keeping 2 for training).
    Nothing is held out when `share` is 0, or when it would make fewer than 2
    validation classes or leave fewer than 2 training classes (a log line
    says so).

    Args:
      dataset: the loaded data set.
      share: share of the training classes (or images) to hold out, in [0, 1).
      seed: seed of the choice (the same choice on every resume).

    Returns:
      `HeldOut`.
    """
    train = dataset.train
    nothing = HeldOut(dataset, None, "")
    if share <= 0:
        return nothing
    rng = np.random.default_rng(seed)
    labels = np.asarray(train.labels)
    names = {train.class_names[c] for c in np.unique(labels)}
    test_names = {dataset.test.class_names[c] for c in np.unique(dataset.test.labels)}
    classes, counts = np.unique(labels, return_counts=True)
    if not names & test_names:
        kind = "classes"
        usable = classes[counts >= 2]
        n = int(round(share * len(classes)))
        if n < 2 or len(usable) < n or len(classes) - n < 2:
            logging.warning("--validation_share=%g of %d training classes is fewer than 2 "
                            "classes to hold out: the thresholds come from the training "
                            "split.", share, len(classes))
            return nothing
        held = set(rng.choice(usable, n, replace=False).tolist())
        mask = np.isin(labels, sorted(held))
    else:
        kind = "images"
        mask = np.zeros(len(labels), bool)
        for c, count in zip(classes, counts, strict=True):
            k = min(int(round(share * count)), count - 2)
            if k >= 2:
                idx = np.flatnonzero(labels == c)
                mask[rng.choice(idx, k, replace=False)] = True
        if len(np.unique(labels[mask])) < 2:
            logging.warning("--validation_share=%g: too few images per class to hold out; "
                            "thresholds come from the training split.", share)
            return nothing
    rest = Dataset(dataset.name, subset(train, np.flatnonzero(~mask)), dataset.test)
    return HeldOut(rest, subset(train, np.flatnonzero(mask)), kind)


def _digits_images(upscale: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    gray = np.clip(np.round(bunch.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    big = np.kron(gray, np.ones((1, upscale, upscale), np.uint8))  # nearest upscale
    rgb = np.repeat(big[..., None], 3, axis=-1)
    return rgb, bunch.target.astype(np.int64)


@register("digits", needs_data_dir=False)
def load_digits_dataset(data_dir: str | None = None, upscale: int = 4, seed: int = 0) -> Dataset:
    """scikit-learn's 1,797 8x8 digits as RGB images, fixed 50/50 split per class.

    Args:
      data_dir: ignored (the data ships with scikit-learn).
      upscale: integer nearest-neighbour upscale factor (4 -> 32x32 images).
      seed: seed of the fixed split (the default split is the project's).

    Returns:
      `Dataset` with 901 train and 896 test images of the same 10 classes.
    """
    del data_dir
    if upscale < 1:
        raise ValueError(f"upscale must be >= 1, got {upscale}.")
    images, labels = _digits_images(upscale)
    tr, te = stratified_half_split(labels, seed)
    names = tuple(str(i) for i in range(10))
    return Dataset(
        "digits",
        Split(labels[tr], names, images=images[tr]),
        Split(labels[te], names, images=images[te]),
    )


def check_splits(train_labels: np.ndarray, test_labels: np.ndarray, name: str = "") -> None:
    """Refuses splits that cannot train or evaluate; logs classes of one image.

    * a train split with fewer than 2 classes: no triplet / imposter exists;
    * a train split whose every class holds one image: no positive pair exists;
    * a test split with fewer than 2 classes: every neighbour is a hit, so
      Recall@K, MAP@R and NMI say nothing;
    * classes with a single image: allowed and counted (in train such an image
      has no target neighbour but is an imposter for others; in test it is a
      query that cannot hit and is left out of MAP@R / R-Precision).

    Raises:
      ValueError: naming the split.
    """
    prefix = f"{name} " if name else ""
    for split, labels in (("train", train_labels), ("test", test_labels)):
        classes, counts = np.unique(np.asarray(labels), return_counts=True)
        if len(classes) < 2:
            need = ("training needs at least 2 classes (triplets need an imposter)"
                    if split == "train" else
                    "retrieval metrics need at least 2 classes (with one class every "
                    "neighbour is a hit)")
            raise ValueError(
                f"{prefix}{split} split has {len(labels)} image(s) in {len(classes)} "
                f"class(es): {need}."
            )
        single = int((counts == 1).sum())
        if split == "train" and single == len(classes):
            raise ValueError(
                f"{prefix}train split has {len(labels)} images in {len(classes)} classes, each "
                "class a single image: no same-class pair to learn from (every loss needs two "
                "images of a class)."
            )
        if single:
            logging.warning("%s%s split: %d class(es) with a single image (no same-class "
                            "partner; kept).", prefix, split, single)
