import numpy as np
import pytest
from sklearn.datasets import load_digits

from sst_tf import data


def test_digits_split_is_stratified_half_and_fixed():
    ds = data.load_dataset("digits")
    raw = load_digits()
    assert len(ds.train) + len(ds.test) == len(raw.target) == 1797
    for c in range(10):
        n = int((raw.target == c).sum())
        n_train = int((ds.train.labels == c).sum())
        n_test = int((ds.test.labels == c).sum())
        assert n_train + n_test == n
        assert n_train - n_test in (0, 1)
    assert ds.train.images.shape[1:] == (32, 32, 3) and ds.train.images.dtype == np.uint8
    assert ds.train.num_classes == ds.test.num_classes == 10
    again = data.load_dataset("digits")
    np.testing.assert_array_equal(again.test.images, ds.test.images)
    np.testing.assert_array_equal(again.train.labels, ds.train.labels)


def test_digits_images_are_upscaled_originals_and_disjoint():
    ds = data.load_dataset("digits", upscale=2)
    raw = load_digits()
    gray = np.round(raw.images * 255.0 / 16.0).astype(np.uint8)
    # Every split image is exactly one original (nearest-neighbour upscale, gray RGB).
    originals = {g.tobytes(): i for i, g in enumerate(gray)}
    for split in (ds.train, ds.test):
        img = split.images
        assert (img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all()
        small = img[:, ::2, ::2, 0]
        np.testing.assert_array_equal(np.kron(small, np.ones((1, 2, 2), np.uint8)), img[..., 0])
        for im, y in zip(small, split.labels, strict=True):
            assert raw.target[originals[im.tobytes()]] == y


def test_stratified_half_split_is_a_partition():
    labels = np.random.default_rng(0).integers(0, 5, 101)
    tr, te = data.stratified_half_split(labels, seed=3)
    assert not set(tr) & set(te)
    assert sorted(np.concatenate([tr, te]).tolist()) == list(range(101))
    for c in range(5):
        assert 0 <= (labels[tr] == c).sum() - (labels[te] == c).sum() <= 1


def test_split_validation():
    with pytest.raises(ValueError, match="exactly one"):
        data.Split(np.zeros(2, np.int64), ("a",))
    with pytest.raises(ValueError, match="labels"):
        data.Split(np.zeros(3, np.int64), ("a",), images=np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        data.Split(np.zeros(2, np.int64), ("a",), images=np.zeros((2, 4, 4, 3), np.float32))
    s = data.Split(np.array([0, 1, 1]), ("a", "b"), paths=("x", "y", "z"))
    sub = data.subset(s, [2, 0])
    assert sub.paths == ("z", "x") and list(sub.labels) == [1, 0]


def test_dataset_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="--dataset='nope' is unknown"):
        data.load_dataset("nope")
    with pytest.raises(ValueError, match="--data_dir is required for --dataset=cub"):
        data.load_dataset("cub")
    with pytest.raises(ValueError, match="--data_dir=.* does not exist"):
        data.load_dataset("cub", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="CUB_200_2011/images.txt not found"):
        data.load_dataset("cub", str(tmp_path))
    data.check_dataset_args("digits", None)  # digits needs no data_dir


def test_register_custom_reader():
    split = data.Split(np.array([0, 1]), ("a", "b"), images=np.zeros((2, 4, 4, 3), np.uint8))

    @data.register("_tiny_test", needs_data_dir=False)
    def _tiny(data_dir, **kw):
        return data.Dataset("_tiny_test", split, split)

    try:
        assert data.load_dataset("_tiny_test").train is split
    finally:
        del data.DATASETS["_tiny_test"]
