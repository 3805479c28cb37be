"""CUB and SOP through their TFDS builders, mocked with `tfds.testing.mock_data`.

The mock serves real serialized `tf.train.Example`s made by the builder's own
features from small JPEG files, so the reader goes through TFDS's real
decoding path (`SkipDecoding` keeps the JPEG bytes).
"""

import io
import os

import fakedata
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from sst_tf import data as data_lib
from sst_tf.datasets import common, tfds_source


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SST_TF_CACHE_DIR", str(tmp_path / "cache"))


def _mock(examples_by_split):
    """A `_as_dataset` replacement serving `examples_by_split[split]` via serialization."""

    def as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False, **kw):
        del read_config, shuffle_files, kw
        features = self.info.features
        # Image files are given as open file objects: the mock hides the real file system.
        serialized = [
            features.serialize_example({**ex, "image": io.BytesIO(open(ex["image"], "rb").read())})
            for ex in examples_by_split[str(split)]
        ]
        ds = tf.data.Dataset.from_tensor_slices(serialized)
        return ds.map(lambda s: features.deserialize_example(s, decoders=decoders))

    return tfds.testing.mock_data(as_dataset_fn=as_dataset)


def _jpeg(tmp_path, cls, j, kind="rgb"):
    path = str(tmp_path / "src" / f"{cls}_{j}.jpg")
    fakedata.write_image(path, cls, j, kind)
    return path


def test_cub_from_tfds_is_re_split_by_class(tmp_path):
    # TFDS's caltech_birds2011 splits images of all classes; labels are class - 1.
    examples, originals = {"train": [], "test": []}, {}
    for label in (0, 1, 99, 100, 150, 199):
        for j in range(3):
            path = _jpeg(tmp_path, label, j, "gray" if j == 2 else "rgb")
            with open(path, "rb") as f:
                originals[(label, j)] = f.read()
            examples["train" if j < 2 else "test"].append({
                "image": path, "image/filename": f"{label}/{j}.jpg", "label": label,
                "label_name": f"bird_{label}",
                "bbox": tfds.features.BBox(0.1, 0.1, 0.9, 0.9),
                "segmentation_mask": np.zeros((fakedata.SIZE, fakedata.SIZE, 1), np.uint8),
            })
    data_dir = str(tmp_path / "tfds")
    with _mock(examples):
        ds = tfds_source.load("cub", data_dir, expected_counts={"train": (9, 3), "test": (9, 3)})
    assert ds.train.class_names == ("001.bird_0", "002.bird_1", "100.bird_99")
    assert ds.test.class_names == ("101.bird_100", "151.bird_150", "200.bird_199")
    assert len(ds.train) == 9 and len(ds.test) == 9
    # The exported files hold the original bytes (no re-encoding).
    exported = sorted(open(p, "rb").read() for p in ds.train.paths + ds.test.paths)
    assert exported == sorted(originals.values())
    for split in (ds.train, ds.test):
        for p, y in zip(split.paths, split.labels, strict=True):
            label = int(split.class_names[y][:3]) - 1
            assert open(p, "rb").read() in [originals[(label, j)] for j in range(3)]
    # The second run reads the manifest and never asks TFDS.
    again = tfds_source.load("cub", data_dir, expected_counts=None)
    assert again.train.paths == ds.train.paths and again.test.paths == ds.test.paths


def test_sop_from_tfds_keeps_the_official_split(tmp_path):
    examples = {"train": [], "test": []}
    for split, ids in (("train", (0, 1, 2)), ("test", (3, 4))):
        for c in ids:
            for j in range(2):
                examples[split].append({"image": _jpeg(tmp_path, c, j), "class_id": c,
                                        "super_class_id": c % 12, "super_class_id/num": c % 12})
    with _mock(examples):
        ds = tfds_source.load("sop", str(tmp_path / "tfds"),
                              expected_counts={"train": (6, 3), "test": (4, 2)})
        # The registry path the trainer takes with --data_source=tfds --nocheck_counts.
        via_registry = data_lib.load_dataset("sop", str(tmp_path / "tfds"), data_source="tfds",
                                             check_counts=False)
        assert via_registry.train.paths == ds.train.paths
        # Named like the official-layout reader: <super class>/<class id from 1>.
        assert ds.train.class_names == ("bicycle/1", "cabinet/2", "chair/3")
        assert ds.test.class_names == ("coffee_maker/4", "fan/5")
        assert all(os.path.isfile(p) for p in ds.train.paths)
        with pytest.raises(common.DatasetLayoutError, match="expected 59551 images"):
            tfds_source.load("sop", str(tmp_path / "tfds"))
    with pytest.raises(ValueError, match="cars196's TFDS download is broken"):
        tfds_source.load("cars196", str(tmp_path))
