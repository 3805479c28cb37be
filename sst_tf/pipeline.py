"""tf.data pipelines: epoch plans -> decoded, augmented, fixed-size batches.

The pipeline never decides which images go together (that is the sampler's
job); it turns an `EpochPlan` into batches

  (images float32 [B, S, S, 3] RGB in 0..255, labels int32 [B] (-1 on padding),
   targets int32 [B, k], mask bool [B])

and a split into evaluation batches (images, labels). Images come from a
split's in-memory uint8 array or from its files (`sst_tf.datasets.images.
decode_image_file`: JPEG, PNG, GIF, BMP -> 3-channel RGB). The model applies its own preprocessing
(scaling) to the 0..255 images.

Augmentation (training only) follows docs/method.md#training-recipe: resize to
`resize_size` x `resize_size`, random `image_size` crop, optional horizontal
flip; evaluation resizes and takes the centre crop. Random ops are stateless,
seeded by (seed, epoch, position in the epoch), so the images of an epoch do
not depend on thread scheduling.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from sst_tf.datasets.images import decode_image_file
from sst_tf.datasets.splits import Split
from sst_tf.sampling import EpochPlan

AUTOTUNE = tf.data.AUTOTUNE


@dataclasses.dataclass(frozen=True)
class ImageOptions:
    """How images are sized and augmented.

    Attributes:
      image_size: side of the square model input (the crop).
      resize_size: side images are resized to before cropping (>= image_size).
      random_flip: random horizontal flips in training.
      random_crop: random crops in training (else centre crops).
    """

    image_size: int
    resize_size: int | None = None
    random_flip: bool = True
    random_crop: bool = True

    @property
    def resize(self) -> int:
        """The resize side (defaults to the crop side)."""
        return self.resize_size or self.image_size

    def __post_init__(self):
        if self.image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {self.image_size}.")
        if self.resize < self.image_size:
            raise ValueError(
                f"resize_size ({self.resize}) must be >= image_size ({self.image_size})."
            )


def image_loader(split: Split):
    """Returns fn(index int64) -> uint8 [H, W, 3] for a split (in memory or image files)."""
    if split.in_memory:
        images = tf.constant(split.images)
        return lambda i: tf.gather(images, i)
    paths = tf.constant(list(split.paths), tf.string)
    return lambda i: decode_image_file(tf.gather(paths, i))


def _resize(image: tf.Tensor, side: int) -> tf.Tensor:
    image = tf.cast(image, tf.float32)
    return tf.image.resize(image, [side, side], method="bilinear", antialias=True)


def _centre_crop(image: tf.Tensor, side: int) -> tf.Tensor:
    size = tf.shape(image)[0]
    off = (size - side) // 2
    return image[off : off + side, off : off + side, :]


def eval_preprocess(image: tf.Tensor, options: ImageOptions) -> tf.Tensor:
    """Resize + centre crop: the evaluation view of one uint8 image."""
    return _centre_crop(_resize(image, options.resize), options.image_size)


def train_preprocess(image: tf.Tensor, seed: tf.Tensor, options: ImageOptions) -> tf.Tensor:
    """Resize + random crop + optional flip, stateless under `seed` (int32 [2])."""
    image = _resize(image, options.resize)
    if options.random_crop and options.resize > options.image_size:
        crop_seed = tf.random.experimental.stateless_fold_in(seed, 0)
        image = tf.image.stateless_random_crop(
            image, [options.image_size, options.image_size, 3], seed=crop_seed
        )
    else:
        image = _centre_crop(image, options.image_size)
    if options.random_flip:
        flip_seed = tf.random.experimental.stateless_fold_in(seed, 1)
        image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
    return image


def train_dataset(
    split: Split,
    plan: EpochPlan,
    options: ImageOptions,
    seed: int = 0,
    epoch: int = 0,
    prefetch: int = 2,
    start_batch: int = 0,
) -> tf.data.Dataset:
    """Batches of one epoch's plan, decoded and augmented in parallel.

    Args:
      split: the training split (indices of `plan` refer to it).
      plan: the sampler's epoch plan.
      options: image sizes and augmentation.
      seed: run seed (with `epoch`, seeds the augmentation).
      epoch: epoch number.
      prefetch: batches to prefetch.
      start_batch: skip the plan's first batches without decoding them (a
        resumed epoch); the rest get the same augmentation as without skipping.

    Returns:
      tf.data.Dataset of (images, labels, targets, mask), `plan.num_batches -
      start_batch` elements of fixed batch size.
    """
    nb, b = plan.indices.shape
    k = plan.targets.shape[-1]
    flat_idx = plan.indices.reshape(-1).astype(np.int64)
    flat_mask = plan.mask.reshape(-1)
    labels = np.where(flat_mask, split.labels[flat_idx], -1).astype(np.int32)
    targets = plan.targets.reshape(-1, k).astype(np.int32)
    positions = np.arange(nb * b, dtype=np.int32)
    load = image_loader(split)
    base = tf.constant([seed % (2**31 - 1), epoch % (2**31 - 1)], tf.int32)

    def _map(i, label, target, mask, pos):
        image = train_preprocess(load(i), tf.random.experimental.stateless_fold_in(base, pos),
                                 options)
        return image, label, target, mask

    ds = tf.data.Dataset.from_tensor_slices((flat_idx, labels, targets, flat_mask, positions))
    if start_batch:
        ds = ds.skip(start_batch * b)
    ds = ds.map(_map, num_parallel_calls=AUTOTUNE, deterministic=True)
    ds = ds.batch(b, drop_remainder=True)
    return ds.prefetch(prefetch)


def eval_dataset(split: Split, options: ImageOptions, batch_size: int = 256) -> tf.data.Dataset:
    """The whole split in order, no augmentation: (images, labels) batches."""
    load = image_loader(split)
    idx = np.arange(len(split), dtype=np.int64)
    labels = split.labels.astype(np.int32)
    ds = tf.data.Dataset.from_tensor_slices((idx, labels))
    ds = ds.map(
        lambda i, y: (eval_preprocess(load(i), options), y),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )
    return ds.batch(batch_size).prefetch(2)


# -- input errors ----------------------------------------------------------------


class InputError(RuntimeError):
    """Reading or decoding an image failed while the run was going (names the file)."""


def read_batches(dataset, what: str):
    """Iterates `dataset`, turning a tf.data read/decode error into `InputError`.

    Only errors raised while producing a batch (file gone, unreadable or
    corrupt since the up-front image check) are converted; errors of the
    computation on a batch are not affected.
    """
    iterator = iter(dataset)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except tf.errors.OpError as e:
            message = (e.message or str(e)).strip().splitlines()[0]
            raise InputError(f"{what}: reading an image failed: {message}") from e
        yield batch
