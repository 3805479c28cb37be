"""TensorBoard projector files for a set of embeddings.

`write_projector` fills ``MODEL_DIR/projector/`` with

* a checkpoint holding one variable, the embeddings (``embedding``);
* ``metadata.tsv``: a header row and one row per point (label, file name
  where known);
* ``sprite.png``: the points' thumbnails in a square grid, under the
  projector's 8192 px limit (points are sampled with a fixed seed when more
  would not fit);
* ``projector_config.pbtxt`` tying them together;
* an event file, so TensorBoard lists the folder as a run:
  ``tensorboard --logdir MODEL_DIR`` then shows the "projector" run.

The folder is its own run because the projector reads every 2-D tensor of the
latest checkpoint in a run's folder (or its parent): kept apart from the
training checkpoints, it shows only the embeddings.

The folder is replaced as a whole, so it must be an earlier projector folder
of ours (it carries a ``.sst_tf`` marker), an empty folder or a new path; a
file, or a folder holding anything else, is refused before anything is written.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence

import numpy as np
from absl import logging

from sst_tf.outputs import check_output_dir, replace_dir, temp_dir_for, write_marker

SPRITE_LIMIT_PX = 8192
TENSOR_NAME = "embedding/.ATTRIBUTES/VARIABLE_VALUE"


def to_uint8_rgb(images: np.ndarray) -> np.ndarray:
    """Converts ``[N, H, W]``, ``[N, H, W, 1]`` or ``[N, H, W, 3]`` images to uint8 RGB.

    Float images are taken as 0..1 when their maximum is at most 1, else 0..255;
    values are clipped.
    """
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"images must be [N, H, W(, 1|3)], got shape {np.shape(images)}")
    if x.dtype != np.uint8:
        x = x.astype(np.float32)
        if x.size and x.max() <= 1.0 and x.min() >= 0.0:
            x = x * 255.0
        x = np.clip(np.round(x), 0, 255).astype(np.uint8)
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    return x


def resize_thumbnails(images: np.ndarray, size: int) -> np.ndarray:
    """Resizes uint8 RGB ``[N, H, W, 3]`` images to ``[N, size, size, 3]`` (PIL, bilinear)."""
    from PIL import Image

    if images.shape[1:3] == (size, size):
        return images
    return np.stack(
        [np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR)) for im in images]
    )


def thumbnails(images, indices: Sequence[int] | np.ndarray, size: int) -> np.ndarray:
    """Thumbnails of some images as uint8 RGB ``[len(indices), size, size, 3]``.

    Args:
      images: an ``[N, H, W(, C)]`` array, or a sequence of ``N`` image file
        paths (decoded with PIL; an unreadable file becomes a grey tile and a
        warning).
      indices: which images.
      size: thumbnail side in pixels.
    """
    indices = np.asarray(indices, np.int64)
    if isinstance(images, np.ndarray):
        return resize_thumbnails(to_uint8_rgb(images[indices]), size)
    from PIL import Image

    out = np.full((len(indices), size, size, 3), 128, np.uint8)
    for row, i in enumerate(indices):
        try:
            with Image.open(images[i]) as im:
                out[row] = np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR))
        except (OSError, ValueError) as e:
            logging.warning("thumbnail of %s: unreadable (%s), drawn grey", images[i], e)
    return out


def make_sprite(thumbnails: np.ndarray) -> np.ndarray:
    """Tiles ``[N, t, t, 3]`` thumbnails row by row into a square sprite (black padding)."""
    n, t = thumbnails.shape[0], thumbnails.shape[1]
    cols = int(np.ceil(np.sqrt(n)))
    sprite = np.zeros((cols * t, cols * t, 3), np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        sprite[r * t : (r + 1) * t, c * t : (c + 1) * t] = thumbnails[i]
    return sprite


def max_points_for_sprite(thumb_size: int, limit_px: int = SPRITE_LIMIT_PX) -> int:
    """How many thumbnails of ``thumb_size`` px fit in a ``limit_px`` square sprite."""
    per_side = limit_px // thumb_size
    return per_side * per_side


def write_projector(
    out_dir: str,
    embeddings: np.ndarray,
    labels: Sequence,
    images: np.ndarray | Sequence[str] | None = None,
    file_names: Sequence[str] | None = None,
    thumb_size: int = 32,
    max_points: int | None = None,
    seed: int = 0,
    sprite_limit_px: int = SPRITE_LIMIT_PX,
) -> dict:
    """Writes projector files for ``embeddings`` into ``out_dir`` (replaced atomically).

    Args:
      out_dir: the folder, e.g. ``MODEL_DIR/projector``.
      embeddings: ``[N, d]``.
      labels: ``N`` class labels.
      images: optional ``[N, H, W(, C)]`` images or ``N`` file paths, for the sprite.
      file_names: optional ``N`` file names for the metadata.
      thumb_size: sprite thumbnail side in pixels.
      max_points: cap on points shown; with images it is further capped so the
        sprite stays within 8192 px. Extra points are dropped by a seeded sample.
      seed: seed of that sample.
      sprite_limit_px: the sprite's maximum side (the projector's limit is 8192).

    Returns:
      A summary dict: ``num_points``, ``indices`` (the points kept, into the
      inputs), ``sprite`` (path or None).

    Raises:
      UsageError: ``out_dir`` is a file or a folder sst_tf did not write.
    """
    import tensorflow as tf
    from google.protobuf import text_format
    from PIL import Image
    from tensorboard.plugins import projector

    embeddings = np.asarray(embeddings, np.float32)
    n = embeddings.shape[0]
    if embeddings.ndim != 2 or n == 0:
        raise ValueError(f"embeddings must be a non-empty [N, d] array, got {embeddings.shape}")
    if len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} embeddings")
    if images is not None and len(images) != n:
        raise ValueError(f"{len(images)} images for {n} embeddings")
    if file_names is not None and len(file_names) != n:
        raise ValueError(f"{len(file_names)} file names for {n} embeddings")
    if images is not None and not 1 <= thumb_size <= sprite_limit_px:
        raise ValueError(f"thumb_size must be in 1..{sprite_limit_px}, got {thumb_size}")

    check_output_dir(out_dir, f"the projector folder {out_dir}", "projector",
                     legacy=legacy_projector)
    cap = n if max_points is None else max_points
    if images is not None:
        cap = min(cap, max_points_for_sprite(thumb_size, sprite_limit_px))
    if n > cap:
        keep = np.sort(np.random.default_rng(seed).choice(n, cap, replace=False))
        logging.info("projector: showing a seeded sample of %d of %d points", cap, n)
    else:
        keep = np.arange(n)

    out_dir = os.path.abspath(out_dir)
    tmp = temp_dir_for(out_dir)
    try:
        with open(os.path.join(tmp, "metadata.tsv"), "w") as f:
            f.write("label\tfile\n" if file_names is not None else "label\tindex\n")
            for i in keep:
                extra = file_names[i] if file_names is not None else str(i)
                f.write(f"{_tsv(labels[i])}\t{_tsv(os.path.basename(str(extra)))}\n")
        sprite_path = None
        if images is not None:
            thumbs = thumbnails(images, keep, thumb_size)
            Image.fromarray(make_sprite(thumbs)).save(os.path.join(tmp, "sprite.png"))
            sprite_path = "sprite.png"

        ckpt = tf.train.Checkpoint(embedding=tf.Variable(embeddings[keep], name="embedding"))
        ckpt.save(os.path.join(tmp, "embedding.ckpt"))

        config = projector.ProjectorConfig()
        emb = config.embeddings.add()
        emb.tensor_name = TENSOR_NAME
        emb.metadata_path = "metadata.tsv"
        if sprite_path:
            emb.sprite.image_path = sprite_path
            emb.sprite.single_image_dim.extend([thumb_size, thumb_size])
        # Same file `projector.visualize_embeddings` writes, but into `tmp`.
        with open(os.path.join(tmp, "projector_config.pbtxt"), "w") as f:
            f.write(text_format.MessageToString(config))

        writer = tf.summary.create_file_writer(tmp)
        with writer.as_default():
            tf.summary.text(
                "projector/info",
                f"{len(keep)} of {n} embeddings ({embeddings.shape[1]}-d)",
                step=0,
            )
        writer.close()
        write_marker(tmp, "projector", "sst_tf.projector")
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logging.info("projector: wrote %d points to %s", len(keep), out_dir)
    return {
        "num_points": int(len(keep)),
        "indices": keep,
        "sprite": os.path.join(out_dir, sprite_path) if sprite_path else None,
    }


def legacy_projector(folder: str) -> str | None:
    """Recognises projector folders written before folders carried a marker."""
    names = set(os.listdir(folder))
    if {"projector_config.pbtxt", "metadata.tsv"} <= names:
        return "projector"
    return None


def _tsv(value) -> str:
    return str(value).replace("\t", " ").replace("\n", " ")


def write_split_projector(
    out_dir: str,
    split,
    embeddings: np.ndarray,
    max_points: int = 10000,
    thumb_size: int = 32,
    seed: int = 0,
) -> dict:
    """`write_projector` for a data split (`sst_tf.data.Split`) and its embeddings.

    Labels are written as class names; file names are recorded for file-based
    splits; the sprite comes from the split's images (in memory or files).
    """
    labels = [
        split.class_names[y] if 0 <= y < len(split.class_names) else str(y)
        for y in np.asarray(split.labels).tolist()
    ]
    images = split.images if split.images is not None else list(split.paths)
    names = list(split.paths) if split.paths is not None else None
    return write_projector(out_dir, embeddings, labels, images, names, thumb_size, max_points, seed)
