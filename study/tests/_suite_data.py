"""Tiny benchmark folders and backbone weights for the study's script tests."""

import numpy as np


def digit_folders(root, offset: int) -> None:
    """A tiny --dataset=folder tree of 8 x 8 digits: 4 train and 3 test classes of 8."""
    import tensorflow as tf
    from sklearn.datasets import load_digits

    bunch = load_digits()
    for digit in range(7):
        split = "train" if digit < 4 else "test"
        for j, row in enumerate(np.flatnonzero(bunch.target == digit)[offset:offset + 8]):
            gray = np.round(bunch.images[row] * (255 / 16)).astype(np.uint8)
            folder = root / split / str(digit)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{j}.png").write_bytes(
                tf.io.encode_png(np.repeat(gray[:, :, None], 3, axis=2)).numpy())


def backbone_weights(path) -> str:
    """A small_cnn backbone file (8 x 8 images, 8-d head) at `path`; returns its path."""
    import keras

    from sst_tf import model as model_lib

    # A seed no run uses: after another test's set_random_seed(0) in this worker
    # the file would be the scratch runs' seed-0 initialisation.
    keras.utils.set_random_seed(12345)
    model_lib.save_backbone_weights(
        model_lib.build_model("small_cnn", weights=None, embedding_dim=8, image_size=8),
        str(path))
    return str(path)
