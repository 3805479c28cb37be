"""Benchmark readers on tiny fake trees in the official layouts."""

import logging
import os

import fakedata
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from sst_tf import pipeline
from sst_tf.datasets import cars196, common, cub, folder, images, sop


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SST_TF_CACHE_DIR", str(tmp_path / "cache"))


def _check_split(split, expected_class_of_path):
    """Every label names the class the path belongs to (independent mapping)."""
    assert split.paths is not None and len(split.paths) == len(split.labels)
    assert split.labels.min() == 0 and split.labels.max() == len(split.class_names) - 1
    for path, label in zip(split.paths, split.labels, strict=True):
        assert os.path.isfile(path)
        assert split.class_names[label] == expected_class_of_path(path)


# --- CUB ---------------------------------------------------------------------------------

def test_cub_zero_shot_split(tmp_path):
    fakedata.make_cub(str(tmp_path), class_ids=(1, 2, 100, 101, 150, 200), per_class=3)
    ds = cub.load(str(tmp_path), expected_counts={"train": (9, 3), "test": (9, 3)})
    assert ds.name == "cub"
    # The class folder of each image is its class name (classes.txt agrees).
    by_dir = lambda p: os.path.basename(os.path.dirname(p))  # noqa: E731
    _check_split(ds.train, by_dir)
    _check_split(ds.test, by_dir)
    assert ds.train.class_names == ("001.Bird_1", "002.Bird_2", "100.Bird_100")
    assert ds.test.class_names == ("101.Bird_101", "150.Bird_150", "200.Bird_200")
    assert not set(ds.train.paths) & set(ds.test.paths)


def test_cub_accepts_the_cub_folder_itself(tmp_path):
    root = fakedata.make_cub(str(tmp_path), per_class=2)
    ds = cub.load(root, expected_counts=None)
    assert (len(ds.train), len(ds.test)) == (6, 6)


def test_cub_official_count_check_fires(tmp_path):
    fakedata.make_cub(str(tmp_path), per_class=2)
    with pytest.raises(common.DatasetLayoutError,
                       match=r"cub train split: found 6 images in 3 classes, expected 5864 "
                             r"images in 100 classes \(read from .*images.txt"):
        cub.load(str(tmp_path))


def test_cub_broken_tree_names_the_missing_file(tmp_path):
    root = fakedata.make_cub(str(tmp_path), per_class=2)
    ds = cub.load(str(tmp_path), expected_counts=None)
    os.remove(ds.test.paths[1])
    with pytest.raises(common.DatasetLayoutError, match="1 of 6 images listed in .*missing: "
                       + ds.test.paths[1]):
        cub.load(str(tmp_path), expected_counts=None)
    os.remove(os.path.join(root, "image_class_labels.txt"))
    with pytest.raises(common.DatasetLayoutError, match="image_class_labels.txt not found"):
        cub.load(str(tmp_path), expected_counts=None)
    with pytest.raises(common.DatasetLayoutError, match="CUB_200_2011/images.txt not found"):
        cub.load(str(tmp_path / "elsewhere"), expected_counts=None)


# --- CARS196 -----------------------------------------------------------------------------

def test_cars196_reads_the_mat_file(tmp_path):
    fakedata.make_cars(str(tmp_path), class_ids=(1, 98, 99, 196), per_class=3)
    ds = cars196.load(str(tmp_path), expected_counts={"train": (6, 2), "test": (6, 2)})
    # fakedata numbers images in class order, per_class per class.
    class_ids = (1, 98, 99, 196)
    of_path = lambda p: f"Car Model {class_ids[(int(os.path.basename(p)[:6]) - 1) // 3]} 2012"  # noqa: E731
    _check_split(ds.train, of_path)
    _check_split(ds.test, of_path)
    assert ds.train.class_names == ("Car Model 1 2012", "Car Model 98 2012")
    assert ds.test.class_names == ("Car Model 99 2012", "Car Model 196 2012")


def test_cars196_errors(tmp_path):
    fakedata.make_cars(str(tmp_path), per_class=2)
    with pytest.raises(common.DatasetLayoutError,
                       match="cars196 train split: found 6 images in 3 classes, expected 8054"):
        cars196.load(str(tmp_path))
    os.rename(tmp_path / "car_ims", tmp_path / "other")
    with pytest.raises(common.DatasetLayoutError, match="car_ims not found"):
        cars196.load(str(tmp_path), expected_counts=None)
    (tmp_path / "cars_annos.mat").write_bytes(b"not a mat file at all")
    with pytest.raises(common.DatasetLayoutError, match="cars_annos.mat"):
        cars196.load(str(tmp_path), expected_counts=None)


# --- SOP ---------------------------------------------------------------------------------

def test_sop_official_lists(tmp_path):
    fakedata.make_sop(str(tmp_path), train_classes=(1, 2, 3), test_classes=(4, 5), per_class=2)
    ds = sop.load(str(tmp_path), expected_counts={"train": (6, 3), "test": (4, 2)})
    # Independent mapping: the product id in the file name is 100000 + class id.
    of_path = lambda p: sop.class_name(  # noqa: E731
        int(os.path.basename(p).split("_")[0]) - 100000,
        os.path.relpath(p, tmp_path / "Stanford_Online_Products"))
    _check_split(ds.train, of_path)
    _check_split(ds.test, of_path)
    assert ds.train.class_names == ("chair/1", "lamp/2", "bicycle/3")
    assert not set(ds.train.class_names) & set(ds.test.class_names)


def test_sop_errors(tmp_path):
    root = fakedata.make_sop(str(tmp_path), train_classes=(1, 2), test_classes=(2, 3))
    with pytest.raises(common.DatasetLayoutError, match="expected 59551 images in 11318"):
        sop.load(str(tmp_path))
    with pytest.raises(common.DatasetLayoutError, match="1 class ids appear in both"):
        sop.load(str(tmp_path), expected_counts={"train": (6, 2), "test": (6, 2)})
    with open(os.path.join(root, "Ebay_test.txt"), "a") as f:
        f.write("99 x\n")
    with pytest.raises(common.DatasetLayoutError, match=r"Ebay_test.txt:8: expected 4 columns"):
        sop.load(str(tmp_path), expected_counts=None)
    os.remove(os.path.join(root, "Ebay_test.txt"))
    with pytest.raises(common.DatasetLayoutError, match="Ebay_test.txt not found"):
        sop.load(str(tmp_path), expected_counts=None)


# --- folder ------------------------------------------------------------------------------

def test_folder_tree(tmp_path, caplog):
    fakedata.make_folder(str(tmp_path))
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    os.makedirs(tmp_path / "test" / "empty")
    with caplog.at_level(logging.WARNING):
        ds = folder.load(str(tmp_path))
    assert "skipped 1 files without an image extension" in caplog.text
    assert "class 'empty' left out" in caplog.text
    of_path = lambda p: os.path.basename(os.path.dirname(p))  # noqa: E731
    _check_split(ds.train, of_path)
    _check_split(ds.test, of_path)
    assert ds.train.class_names == ("cat", "dog", "owl")
    assert ds.test.class_names == ("cat", "eel", "fox")  # shared classes are allowed
    assert len(ds.train) == len(ds.test) == 9


def test_folder_errors(tmp_path):
    fakedata.make_folder(str(tmp_path), train=("only",), test=("a", "b"))
    with pytest.raises(common.DatasetLayoutError, match="at least 2"):
        folder.load(str(tmp_path))
    with pytest.raises(common.DatasetLayoutError, match="nowhere/train not found"):
        folder.load(str(tmp_path / "nowhere"))


# --- image checks ------------------------------------------------------------------------

def test_decode_converts_gray_cmyk_alpha_to_rgb(tmp_path):
    for kind, ext in (("gray", ".jpg"), ("cmyk", ".jpg"), ("rgba", ".png"), ("rgb", ".jpg")):
        path = str(tmp_path / (kind + ext))
        fakedata.write_image(path, 3, 0, kind)
        got = pipeline.decode_image_file(tf.constant(path)).numpy().astype(float)
        want = np.asarray(Image.open(path).convert("RGB"), float)  # PIL's conversion
        assert got.shape == want.shape and got.shape[-1] == 3
        # Same pixels up to JPEG decoder rounding (CMYK: colour-conversion rounding).
        assert np.abs(got - want).mean() < 3.0, kind


def test_corrupt_images_are_skipped_and_counted(tmp_path, caplog):
    fakedata.make_folder(str(tmp_path))
    bad = [str(tmp_path / "train" / "dog" / "img0.jpg"),
           str(tmp_path / "test" / "eel" / "img2.jpg")]
    fakedata.corrupt(bad[0], "truncate")
    fakedata.corrupt(bad[1], "empty")
    with caplog.at_level(logging.WARNING):
        ds = folder.load(str(tmp_path))
    assert len(ds.train) == 8 and len(ds.test) == 8
    assert bad[0] not in ds.train.paths and bad[1] not in ds.test.paths
    assert "skipped 1 of 9 images that cannot be decoded" in caplog.text
    assert bad[0] in caplog.text and bad[1] in caplog.text
    # Labels still match their paths after the drop.
    for p, y in zip(ds.train.paths, ds.train.labels, strict=True):
        assert ds.train.class_names[y] == os.path.basename(os.path.dirname(p))
    with pytest.raises(images.ImageDecodeError, match="train: 1 image.*img0.jpg"):
        folder.load(str(tmp_path), strict_images=True)
    for path in ds.test.paths:  # a split with no decodable image is an error, not empty
        fakedata.corrupt(path)
    with pytest.raises(images.ImageDecodeError, match="test: none of the 9 images"):
        folder.load(str(tmp_path))


def test_image_check_is_cached(tmp_path, monkeypatch):
    fakedata.make_folder(str(tmp_path / "d"))
    first = folder.load(str(tmp_path / "d"))

    def fail(*a, **k):
        raise AssertionError("decoded again although the files did not change")

    monkeypatch.setattr(images, "find_undecodable", fail)
    again = folder.load(str(tmp_path / "d"))
    assert again.train.paths == first.train.paths
    fakedata.corrupt(first.train.paths[0])  # size/mtime change -> checked again
    with pytest.raises(AssertionError, match="decoded again"):
        folder.load(str(tmp_path / "d"))


# --- registry and flags ------------------------------------------------------------------

def test_registry_loads_benchmarks_with_flag_options(tmp_path):
    from sst_tf import data as data_lib

    fakedata.make_sop(str(tmp_path), per_class=2)
    ds = data_lib.load_dataset("sop", str(tmp_path), check_counts=False, check_images=False)
    assert (ds.name, len(ds.train), len(ds.test)) == ("sop", 6, 6)
    with pytest.raises(common.DatasetLayoutError, match="expected 59551"):
        data_lib.load_dataset("sop", str(tmp_path))
    with pytest.raises(ValueError, match="--data_dir is required for --dataset=folder"):
        data_lib.load_dataset("folder", None)


def test_config_wires_data_source_and_image_flags(tmp_path):
    from sst_tf.config import TrainConfig

    cfg = TrainConfig(model_dir=str(tmp_path), dataset="cub", data_source="tfds",
                      check_counts=False, strict_images=True)
    cfg.validate()  # TFDS needs no --data_dir (TFDS's default data dir)
    assert cfg.reader_options() == {"data_source": "tfds", "check_counts": False,
                                    "check_images": True, "strict_images": True}
    assert TrainConfig(model_dir=str(tmp_path)).reader_options() == {}  # digits takes none
    for name in ("cars196", "folder", "digits"):
        with pytest.raises(ValueError, match=f"--data_source=tfds .* not --dataset={name}"):
            TrainConfig(model_dir=str(tmp_path), dataset=name, data_dir=str(tmp_path),
                        data_source="tfds").validate()
    with pytest.raises(ValueError, match="--data_source must be files or tfds"):
        TrainConfig(model_dir=str(tmp_path), data_source="web").validate()
