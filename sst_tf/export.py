"""SavedModel export of a trained embedding model, with its own preprocessing.

The export holds three signatures:

* ``serve_images``: float32 ``[N, H, W, 3]`` RGB in 0..255 (any H, W) ->
  ``{"embeddings": float32 [N, d]}``;
* ``serve_jpeg``: string ``[N]`` of encoded JPEG or PNG bytes -> the same;
* ``serving_default``: the same function as ``serve_jpeg``.

Both apply the evaluation preprocessing (resize, centre crop, scaling) recorded
in ``assets/sst_tf_export.json`` next to the embedding size, so a user needs
nothing but the folder. The folder is written to a temporary sibling and
renamed into place at the end: a crash never leaves a half export behind.

Entry point: ``python -m sst_tf.export --model_dir=RUN`` exports the latest
(or a chosen) checkpoint of a training run to ``RUN/export``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from sst_tf.atomic_dir import replace_dir, temp_dir_for

SPEC_FILENAME = "sst_tf_export.json"
SCALINGS = ("inception", "unit", "raw")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"


@dataclasses.dataclass(frozen=True)
class PreprocessingSpec:
    """How evaluation turns an RGB 0..255 image into the model's input.

    Attributes:
      image_size: side of the square image the model sees.
      resize_size: side the image is first resized to (square) before the
        centre crop to ``image_size``; ``None`` resizes straight to
        ``image_size``.
      scaling: ``"inception"`` maps 0..255 to [-1, 1], ``"unit"`` to [0, 1],
        ``"raw"`` keeps 0..255 (the model scales itself).
      channels: 3 for RGB input, 1 when the model takes grayscale.
      resize_method: a ``tf.image.resize`` method name.
      antialias: ``tf.image.resize``'s antialias flag.
    """

    image_size: int
    resize_size: int | None = None
    scaling: str = "unit"
    channels: int = 3
    resize_method: str = "bilinear"
    antialias: bool = False

    def __post_init__(self):
        if self.image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {self.image_size}")
        if self.resize_size is not None and self.resize_size < self.image_size:
            raise ValueError(
                f"resize_size ({self.resize_size}) must be >= image_size ({self.image_size})"
            )
        if self.scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {SCALINGS}, got {self.scaling!r}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PreprocessingSpec:
        """Inverse of `to_dict`; unknown keys are an error naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown preprocessing keys: {sorted(unknown)}")
        return cls(**d)


def preprocess_images(images: tf.Tensor, spec: PreprocessingSpec) -> tf.Tensor:
    """Evaluation preprocessing of a batch of RGB images.

    Args:
      images: ``[N, H, W, 3]`` (or ``[H, W, 3]``) RGB values in 0..255, any dtype.
      spec: the preprocessing to apply.

    Returns:
      float32 ``[N, image_size, image_size, channels]`` (rank kept) model input.
    """
    x = tf.cast(images, tf.float32)
    s = spec.image_size
    if spec.resize_size is None:
        x = tf.image.resize(x, [s, s], method=spec.resize_method, antialias=spec.antialias)
    else:
        r = spec.resize_size
        x = tf.image.resize(x, [r, r], method=spec.resize_method, antialias=spec.antialias)
        off = (r - s) // 2
        x = x[..., off : off + s, off : off + s, :]
    if spec.channels == 1:
        x = tf.image.rgb_to_grayscale(x)
    if spec.scaling == "inception":
        x = x / 127.5 - 1.0
    elif spec.scaling == "unit":
        x = x / 255.0
    return x


def decode_image_bytes(data: tf.Tensor, index: tf.Tensor | int = 0) -> tf.Tensor:
    """Decodes one JPEG or PNG string to uint8 ``[H, W, 3]``.

    Anything else (garbage, GIF, an empty string) fails with an
    ``InvalidArgumentError`` saying which input was not a JPEG or PNG.
    """
    head8 = tf.strings.substr(data, 0, 8)
    head3 = tf.strings.substr(data, 0, 3)
    ok = tf.logical_or(tf.equal(head8, _PNG_MAGIC), tf.equal(head3, _JPEG_MAGIC))
    check = tf.debugging.Assert(
        ok,
        ["serve_jpeg: input at index", index, "is not a JPEG or PNG image (bad header bytes)"],
    )
    with tf.control_dependencies([check]):
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def _embedding_dim(model: keras.Model) -> int:
    dim = model.output_shape[-1] if hasattr(model, "output_shape") else None
    if dim is None:
        raise ValueError("cannot tell the model's embedding size from its output shape")
    return int(dim)


def export_saved_model(
    model: keras.Model,
    export_dir: str,
    spec: PreprocessingSpec,
    metadata: Mapping[str, Any] | None = None,
    verify: bool = True,
) -> str:
    """Writes ``model`` as a SavedModel with image and JPEG/PNG signatures.

    Args:
      model: a Keras model mapping a preprocessed batch to ``[N, d]`` embeddings.
      export_dir: destination folder; an existing export there is replaced
        only once the new one is complete.
      spec: the evaluation preprocessing the signatures apply.
      metadata: extra JSON-serialisable facts to record (e.g. checkpoint, flags).
      verify: reload the written SavedModel and check it reproduces the
        model's embeddings before it replaces anything.

    Returns:
      The absolute export path.
    """
    export_dir = os.path.abspath(export_dir)
    dim = _embedding_dim(model)

    def embed(x):
        return {
            "embeddings": tf.cast(model(preprocess_images(x, spec), training=False), tf.float32)
        }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    def serve_jpeg(images):
        n = tf.shape(images)[0]
        s = spec.resize_size or spec.image_size

        def one(args):
            data, i = args
            img = decode_image_bytes(data, i)
            img = tf.image.resize(
                tf.cast(img, tf.float32),
                [s, s],
                method=spec.resize_method,
                antialias=spec.antialias,
            )
            return img

        decoded = tf.map_fn(
            one, (images, tf.range(n)), fn_output_signature=tf.TensorSpec([s, s, 3], tf.float32)
        )
        # The images are already at the resize size: a second resize to the same
        # size is the identity, so both signatures share `preprocess_images`.
        return embed(decoded)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="images")])
    def serve_images(images):
        return embed(images)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve_jpeg", serve_jpeg)  # first endpoint = serving_default
    archive.add_endpoint("serve_images", serve_images)

    record = {
        "format": "sst_tf.export/1",
        "embedding_dim": dim,
        "preprocessing": spec.to_dict(),
        "signatures": {
            "serve_images": "float32 [N,H,W,3] RGB 0..255 -> {'embeddings': float32 [N,d]}",
            "serve_jpeg": "string [N] JPEG/PNG bytes -> {'embeddings': float32 [N,d]}",
            "serving_default": "serve_jpeg",
        },
        "metadata": dict(metadata or {}),
    }

    tmp = temp_dir_for(export_dir)
    try:
        archive.write_out(tmp, verbose=False)
        os.makedirs(os.path.join(tmp, "assets"), exist_ok=True)
        with open(os.path.join(tmp, "assets", SPEC_FILENAME), "w") as f:
            json.dump(record, f, indent=2, sort_keys=True)
        if verify:
            _verify(model, tmp, spec)
        replace_dir(tmp, export_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logging.info("Exported SavedModel (embedding size %d) to %s", dim, export_dir)
    return export_dir


def _verify(model: keras.Model, path: str, spec: PreprocessingSpec) -> None:
    """Reloads ``path`` and checks ``serve_images`` against ``model``."""
    rng = np.random.default_rng(0)
    side = spec.resize_size or spec.image_size
    images = rng.uniform(0, 255, size=(2, side, side, 3)).astype(np.float32)
    want = model(preprocess_images(images, spec), training=False).numpy()
    got = tf.saved_model.load(path).signatures["serve_images"](images=images)["embeddings"]
    err = float(np.max(np.abs(got.numpy() - want)))
    scale = max(1.0, float(np.max(np.abs(want))))
    if not err <= 1e-4 * scale:
        raise RuntimeError(
            f"export verification failed: reloaded SavedModel differs from the model by {err:g}"
        )


def load_export_info(export_dir: str) -> dict[str, Any]:
    """Reads the JSON record an export keeps in ``assets/``.

    Raises:
      FileNotFoundError: naming the folder when it is not an sst_tf export.
    """
    path = os.path.join(export_dir, "assets", SPEC_FILENAME)
    if not os.path.isfile(os.path.join(export_dir, "saved_model.pb")):
        raise FileNotFoundError(
            f"no SavedModel at --export_dir={export_dir} (saved_model.pb missing)"
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} missing: {export_dir} is not an sst_tf export")
    with open(path) as f:
        return json.load(f)
