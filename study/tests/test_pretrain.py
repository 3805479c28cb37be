"""study/pretrain.py: classification pretraining writes backbone weights the trainer loads."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from _study import load_script
from sklearn.datasets import load_digits

from sst_tf import model as model_lib


def _digits_folder(root):
    """8 x 8 digits as a folder data set: 5 train classes, 3 test classes, 6 images each."""
    bunch = load_digits()
    for digit in range(8):
        split = "train" if digit < 5 else "test"
        for j, row in enumerate(np.flatnonzero(bunch.target == digit)[:6]):
            gray = np.round(bunch.images[row] * (255 / 16)).astype(np.uint8)
            folder = root / split / str(digit)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{j}.png").write_bytes(
                tf.io.encode_png(np.repeat(gray[:, :, None], 3, axis=2)).numpy())


def test_pretrain_writes_weights_the_model_loads_and_refuses_foreign_files(tmp_path):
    pretrain = load_script("pretrain")
    _digits_folder(tmp_path / "data")
    out = str(tmp_path / "w.weights.h5")
    record = pretrain.pretrain(str(tmp_path / "data"), out, image_size=8, resize_size=8,
                               embedding_dim=4, epochs=2, batch_size=10, lr=1e-2)
    assert record["num_classes"] == 5 and record["num_images"] == 30
    assert [h["epoch"] for h in record["history"]] == [1, 2]
    assert all(np.isfinite(h["loss"]) for h in record["history"])
    with open(out + ".json") as f:
        assert json.load(f)["written_by"] == pretrain.MARKER
    # The file starts a new model's backbone: the same weights as a model loaded from it.
    a = model_lib.build_model("small_cnn", weights=None, embedding_dim=4, image_size=8,
                              backbone_weights=out)
    b = model_lib.build_model("small_cnn", weights=None, embedding_dim=4, image_size=8)
    b.get_layer(model_lib.BACKBONE_LAYER).load_weights(out)
    for x, y in zip(a.get_layer(model_lib.BACKBONE_LAYER).get_weights(),
                    b.get_layer(model_lib.BACKBONE_LAYER).get_weights(), strict=True):
        np.testing.assert_array_equal(x, y)
    # Its own file is replaced; a file it did not write, or a wrong suffix, is refused.
    pretrain.pretrain(str(tmp_path / "data"), out, image_size=8, resize_size=8,
                      embedding_dim=4, epochs=1, batch_size=10)
    foreign = tmp_path / "mine.weights.h5"
    foreign.write_bytes(b"keep")
    with pytest.raises(pretrain.PretrainError, match="was not written by"):
        pretrain.pretrain(str(tmp_path / "data"), str(foreign), image_size=8, resize_size=8)
    assert foreign.read_bytes() == b"keep"
    with pytest.raises(pretrain.PretrainError, match="must end in .weights.h5"):
        pretrain.pretrain(str(tmp_path / "data"), str(tmp_path / "w.h5"))
    assert not os.path.exists(tmp_path / "w.h5")
