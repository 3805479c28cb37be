"""Image files: the one decoder, and the up-front check that drops bad files.

Why up front and not `ignore_errors` inside the training pipeline: the sampler
plans batches of indices with target-neighbour tables before any pixel is
read, so an image silently vanishing inside `tf.data` would shift every batch
after it and misalign labels, targets and masks. Instead each file is decoded
once here with the decoder the pipeline uses
(`decode_image_file`: grayscale, CMYK JPEG, palette PNG and
PNG with alpha all come out RGB), in parallel through `tf.data` with
`ignore_errors` plus an index per element, so the survivors name the
failures. The result is cached per file
list (paths, sizes, modification times), so later runs only stat the files.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from absl import logging

from sst_tf.datasets.splits import Split

if TYPE_CHECKING:
    import tensorflow as tf

_CACHE_ENV = "SST_TF_CACHE_DIR"


class ImageDecodeError(ValueError):
    """An image cannot be decoded and `strict_images` is set (names the file)."""


def default_cache_dir() -> str:
    """Cache folder: `$SST_TF_CACHE_DIR`, else `~/.cache/sst_tf`."""
    return os.environ.get(_CACHE_ENV) or os.path.join(
        os.path.expanduser("~"), ".cache", "sst_tf"
    )


def _file_key(paths: Sequence[str]) -> str:
    digest = hashlib.sha1()
    for p in paths:
        try:
            st = os.stat(p)
            digest.update(f"{p}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{p}\tmissing\n".encode())
    return digest.hexdigest()


def decode_image_file(path: tf.Tensor) -> tf.Tensor:
    """Reads one image file and decodes it to uint8 [H, W, 3] RGB.

    Grayscale is expanded to 3 channels and alpha is dropped
    (`decode_image(channels=3)`); JPEG (CMYK too), PNG (palette too), GIF
    (first frame) and BMP are read. Training, evaluation and this module's
    check all decode through here.
    """
    import tensorflow as tf  # here, not at the top: reading a data set's paths needs no TF

    data = tf.io.read_file(path)
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def _decode_error(path: str) -> str:
    import tensorflow as tf
    try:
        decode_image_file(tf.constant(path))
    except (tf.errors.OpError, OSError) as e:
        return str(getattr(e, "message", e)).strip().splitlines()[-1][:200]
    return "decodes now but failed during the check"


def find_undecodable(paths: Sequence[str], parallel: int | None = None) -> list[int]:
    """Returns the indices of `paths` that the pipeline's decoder cannot decode.

    Args:
      paths: image files.
      parallel: decode calls in flight (None: tf.data AUTOTUNE).

    Returns:
      Sorted indices of the files that are empty, unreadable or not decodable.
    """
    import tensorflow as tf

    if not paths:
        return []
    sizes = np.array([os.path.getsize(p) if os.path.isfile(p) else 0 for p in paths])

    def check(i, path):
        return i, tf.shape(decode_image_file(path))

    candidates = np.flatnonzero(sizes > 0)
    ds = tf.data.Dataset.from_tensor_slices(
        (candidates.astype(np.int64), np.asarray(paths, dtype=object)[candidates].astype(str))
    )
    ds = ds.map(check, num_parallel_calls=parallel or tf.data.AUTOTUNE, deterministic=False)
    ds = ds.ignore_errors()
    ok = np.zeros(len(paths), bool)
    for i, shape in ds.as_numpy_iterator():
        ok[i] = shape[0] > 0 and shape[1] > 0
    return np.flatnonzero(~ok).tolist()


def check_images(
    paths: Sequence[str], what: str = "images", cache_dir: str | None = None
) -> list[int]:
    """`find_undecodable` with a cache keyed by the paths, sizes and mtimes.

    Args:
      paths: image files.
      what: name for the progress log (e.g. `cub/train`).
      cache_dir: cache folder (default `default_cache_dir()`); an unwritable
        cache only costs the check again next time.

    Returns:
      Sorted indices of undecodable files.
    """
    cache_dir = cache_dir or default_cache_dir()
    cache_file = os.path.join(cache_dir, "image_checks", _file_key(paths) + ".json")
    if os.path.isfile(cache_file):
        try:
            with open(cache_file) as f:
                return list(json.load(f)["bad"])
        except (OSError, ValueError, KeyError):
            pass
    start = time.time()
    logging.info("Checking that the %d %s decode (once; the result is cached)...",
                 len(paths), what)
    bad = find_undecodable(paths)
    logging.info("Checked %d %s in %.1f s: %d undecodable.",
                 len(paths), what, time.time() - start, len(bad))
    try:
        os.makedirs(os.path.dirname(cache_file), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(cache_file), suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump({"num_paths": len(paths), "bad": bad}, f)
        os.replace(tmp, cache_file)
    except OSError as e:
        logging.warning("Could not cache the image check in %s: %s", cache_dir, e)
    return bad


def drop_undecodable(
    split: Split, what: str, strict: bool = False, cache_dir: str | None = None
) -> Split:
    """Returns `split` without the images that cannot be decoded.

    Args:
      split: a path split.
      what: name for messages (e.g. `cub/train`).
      strict: raise on the first undecodable image instead of skipping.
      cache_dir: see `check_images`.

    Returns:
      The split, minus undecodable images (logged with a warning and a count).

    Raises:
      ImageDecodeError: `strict` and some image is undecodable (names it).
    """
    if split.paths is None:
        return split
    bad = check_images(split.paths, what, cache_dir)
    if not bad:
        return split
    if strict or len(bad) == len(split.paths):
        path = split.paths[bad[0]]
        if not strict:
            raise ImageDecodeError(
                f"{what}: none of the {len(bad)} images can be decoded, e.g. {path} "
                f"({_decode_error(path)})."
            )
        raise ImageDecodeError(
            f"{what}: {len(bad)} image(s) cannot be decoded, the first: {path} "
            f"({_decode_error(path)}). Drop --strict_images to skip them."
        )
    for i in bad[:20]:
        logging.warning("%s: skipping undecodable image %s (%s)", what, split.paths[i],
                        _decode_error(split.paths[i]))
    logging.warning("%s: skipped %d of %d images that cannot be decoded.",
                    what, len(bad), len(split.paths))
    keep = np.setdiff1d(np.arange(len(split.paths)), bad)
    return Split(split.labels[keep], split.class_names,
                 paths=tuple(split.paths[i] for i in keep))
