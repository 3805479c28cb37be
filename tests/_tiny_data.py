"""The small digits subset the trainer tests and their subprocess scripts share.

Importable both from pytest tests and from the `tests/_*.py` scripts that tests
run in subprocesses (the script's folder is on `sys.path` in both cases).
"""

import dataclasses
import json
import os

from sst_tf import data


def tiny_digits() -> data.Dataset:
    """Digits at 16 x 16: 200 training and 112 test images (every 4th / 8th)."""
    ds = data.load_dataset("digits", upscale=2)
    return data.Dataset("digits", data.subset(ds.train, range(0, 800, 4)),
                        data.subset(ds.test, range(0, 800, 8)))


def small_run(run) -> None:
    """A run folder as sst_tf.train leaves it, untrained: config.json and one checkpoint.

    A small_cnn of 8-d embeddings on 16 x 16 inputs (resize 18), seed 0.
    """
    import keras
    import tensorflow as tf

    from sst_tf import model as model_lib
    from sst_tf.config import TrainConfig

    cfg = TrainConfig(model_dir=str(run), backbone="small_cnn", pretrained=False,
                      embedding_dim=8, image_size=16, resize_size=18)
    keras.utils.set_random_seed(0)
    model = model_lib.build_model(backbone="small_cnn", weights=None, embedding_dim=8,
                                  normalize=False, image_size=16)
    os.makedirs(os.path.join(run, "checkpoints"))
    tf.train.CheckpointManager(tf.train.Checkpoint(model=model),
                               os.path.join(run, "checkpoints"),
                               max_to_keep=1).save(checkpoint_number=1)
    with open(os.path.join(run, "config.json"), "w") as f:
        json.dump(dataclasses.asdict(cfg), f)
