"""Embedding models: backbone + global average pooling + linear head (+ L2).

`build_model` returns a Keras model that takes float32 RGB images in 0..255
(what `sst_tf.pipeline` yields and what an export serves) and applies the
backbone's own preprocessing as its first layer, so nothing outside the model
needs to know it. Layer names identify the parts:

  "preprocess" -> "backbone" (a nested model) -> "pool" -> "head" (Dense)
  -> "head_batchnorm" (when `embedding_batchnorm`) -> "l2_normalize" (when
  `normalize`)

`variable_groups` splits the trainable variables into backbone and head for
the head learning-rate multiplier (docs/method.md#training-recipe).
"""

from __future__ import annotations

import os

import keras

HEAD_LAYER = "head"
HEAD_BATCHNORM_LAYER = "head_batchnorm"
BACKBONE_LAYER = "backbone"


def _inception_v3(input_shape, weights):
    return keras.applications.InceptionV3(
        include_top=False, weights=weights, input_shape=input_shape, pooling=None
    )


def _mobilenet_v2(input_shape, weights):
    return keras.applications.MobileNetV2(
        include_top=False, weights=weights, input_shape=input_shape, pooling=None
    )


def _small_cnn(input_shape, weights, width: int = 32):
    """Three blocks of two 3x3 convs (+ max pooling) for tiny images (digits).

    No batch normalisation: local sampling makes every batch a neighbourhood of
    look-alike images, whose batch statistics differ from the whole data set's,
    and on digits from scratch the BatchNorm variant reached a clearly lower
    MAP@R (0.50 vs 0.67, 30 epochs at lr 1e-3). No pretrained weights exist.
    """
    if weights is not None:
        raise ValueError("backbone 'small_cnn' has no pretrained weights: use --nopretrained.")
    inputs = keras.Input(input_shape)
    x = inputs
    for i, mult in enumerate((1, 2, 4)):
        for j in range(2):
            x = keras.layers.Conv2D(width * mult, 3, padding="same", activation="relu",
                                    name=f"conv{i}_{j}")(x)
        if i < 2:
            x = keras.layers.MaxPooling2D(2, name=f"pool{i}")(x)
    return keras.Model(inputs, x, name="small_cnn")


# name -> (constructor(input_shape, weights), (scale, offset) of the preprocessing,
#          smallest input side)
BACKBONES = {
    "inception_v3": (_inception_v3, (1.0 / 127.5, -1.0), 75),
    "mobilenet_v2": (_mobilenet_v2, (1.0 / 127.5, -1.0), 32),
    "small_cnn": (_small_cnn, (1.0 / 255.0, 0.0), 8),
}


def preprocessing(backbone: str) -> keras.layers.Layer:
    """The backbone's input scaling as a layer (InceptionV3: 0..255 -> [-1, 1])."""
    scale, offset = BACKBONES[backbone][1]
    return keras.layers.Rescaling(scale, offset, name="preprocess")


def build_model(
    backbone: str = "inception_v3",
    weights: str | None = "imagenet",
    embedding_dim: int = 512,
    normalize: bool = False,
    image_size: int = 224,
    backbone_weights: str | None = None,
    embedding_batchnorm: bool = False,
) -> keras.Model:
    """Builds the embedding model.

    Args:
      backbone: one of `BACKBONES`.
      weights: "imagenet" or None (random init). Loading "imagenet" needs the
        Keras weight file in the cache (~/.keras/models) or network access.
      embedding_dim: size d of the embedding (the Dense head's units).
      normalize: L2-normalise the embedding.
      image_size: side of the square RGB input.
      backbone_weights: a Keras weights file of this backbone (written by
        `save_backbone_weights`, e.g. by study/pretrain.py) to load instead of
        `weights` (which must then be None).
      embedding_batchnorm: batch normalisation after the head (before the L2
        normalisation), as InsightFace's embedding head ends: it centres the
        embeddings, which from a random backbone share one direction.

    Returns:
      keras.Model mapping float32 [N, S, S, 3] RGB in 0..255 to [N, d] float32.

    Raises:
      ValueError: unknown backbone, too small input, bad embedding size, or
        weights that cannot be loaded.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {sorted(BACKBONES)}, got {backbone!r}.")
    if embedding_dim < 1:
        raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}.")
    ctor, _, min_side = BACKBONES[backbone]
    if image_size < min_side:
        raise ValueError(f"image_size must be >= {min_side} for {backbone}, got {image_size}.")
    if backbone_weights and weights is not None:
        raise ValueError(f"backbone_weights={backbone_weights!r} replaces weights={weights!r}: "
                         "pass one of them.")
    shape = (image_size, image_size, 3)
    try:
        base = ctor(shape, weights)
    except ValueError:
        raise
    except Exception as e:  # download failures, missing cache files
        raise ValueError(
            f"could not load weights={weights!r} for backbone {backbone!r} ({e}); put the Keras "
            "weight file in ~/.keras/models or train from scratch with --nopretrained."
        ) from e
    base.name = BACKBONE_LAYER  # Keras 3 allows renaming before use
    if backbone_weights:
        load_backbone_weights(base, backbone, backbone_weights)

    inputs = keras.Input(shape, name="images")
    x = preprocessing(backbone)(inputs)
    x = base(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    # The head (and the loss) stay float32 under a mixed-precision policy.
    x = keras.layers.Dense(embedding_dim, name=HEAD_LAYER, dtype="float32")(x)
    if embedding_batchnorm:
        x = keras.layers.BatchNormalization(name=HEAD_BATCHNORM_LAYER, dtype="float32")(x)
    if normalize:
        x = keras.layers.UnitNormalization(axis=-1, name="l2_normalize", dtype="float32")(x)
    # The embedding (and the loss) stay float32 under mixed precision.
    x = keras.layers.Activation("linear", dtype="float32", name="embedding")(x)
    return keras.Model(inputs, x, name=f"{backbone}_embedding")


def load_backbone_weights(base: keras.Model, backbone: str, path: str) -> None:
    """Loads a weights file into the backbone `base`; ValueError naming the file if it fails."""
    if not os.path.isfile(path):
        raise ValueError(f"--backbone_weights={path} is not a file.")
    try:
        base.load_weights(path)
    except Exception as e:  # Keras raises ValueError or h5py errors for foreign files
        raise ValueError(f"--backbone_weights={path} does not fit backbone {backbone!r} at "
                         f"this --image_size (written for another --backbone?): {e}") from e


def save_backbone_weights(model: keras.Model, path: str) -> None:
    """Writes the backbone's weights of an embedding model to `path` (.weights.h5)."""
    model.get_layer(BACKBONE_LAYER).save_weights(path)


def variable_groups(model: keras.Model) -> tuple[list, list]:
    """Splits trainable variables into (backbone, head) groups.

    The head group holds the variables of the layers named `HEAD_LAYER` and
    (when present) `HEAD_BATCHNORM_LAYER`; every other trainable variable
    belongs to the backbone group.
    """
    names = {layer.name for layer in model.layers}
    head_ids = {id(v) for name in (HEAD_LAYER, HEAD_BATCHNORM_LAYER) if name in names
                for v in model.get_layer(name).trainable_variables}
    backbone = [v for v in model.trainable_variables if id(v) not in head_ids]
    head = [v for v in model.trainable_variables if id(v) in head_ids]
    return backbone, head
