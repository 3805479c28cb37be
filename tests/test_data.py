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


def _dataset(train_per_class, test_classes, num_classes=20):
    from sst_tf.data import Dataset, Split

    names = tuple(f"c{i}" for i in range(num_classes + len(test_classes)))
    labels = np.repeat(np.arange(num_classes), train_per_class)
    test = np.repeat(np.asarray(test_classes), 3)
    images = np.zeros((len(labels), 2, 2, 3), np.uint8)
    images[:, 0, 0, 0] = np.arange(len(labels)) % 256  # each image's index, in two pixels
    images[:, 0, 1, 0] = np.arange(len(labels)) // 256
    return Dataset("t", Split(labels, names, images=images),
                   Split(test, names, images=np.zeros((len(test), 2, 2, 3), np.uint8)))


def test_hold_out_new_test_classes_holds_out_whole_training_classes():
    from sst_tf.data import hold_out

    ds = _dataset(5, test_classes=[20, 21, 22])  # test classes are new classes
    held = hold_out(ds, 0.1, seed=3)
    assert held.kind == "classes"
    val, train = held.validation.labels, held.dataset.train.labels
    assert len(np.unique(val)) == 2 and len(np.unique(train)) == 18
    assert not set(val) & set(train)  # class-disjoint
    assert len(val) + len(train) == 100
    assert held.dataset.test is ds.test
    assert "validation classes (2 training classes, 10 images" in held.describe()
    # The same choice on every resume; another seed, another choice.
    assert np.array_equal(hold_out(ds, 0.1, seed=3).validation.labels, val)
    assert any(not np.array_equal(hold_out(ds, 0.1, seed=s).validation.labels, val)
               for s in range(4, 8))


def test_hold_out_known_test_classes_holds_out_images_of_every_class():
    from sst_tf.data import hold_out

    ds = _dataset(30, test_classes=[0, 1, 2])  # the test split shows training classes
    held = hold_out(ds, 0.1, seed=0)
    assert held.kind == "images"
    val, train = held.validation, held.dataset.train
    assert np.array_equal(np.bincount(val.labels), np.full(20, 3))
    assert np.array_equal(np.bincount(train.labels), np.full(20, 27))
    # No image in both (images carry their index in two pixels).
    def ids(split):
        pixels = split.images[:, 0, :2, 0].astype(int)
        return set(pixels[:, 0] + 256 * pixels[:, 1])

    assert not ids(val) & ids(train) and len(ids(val) | ids(train)) == 600
    assert "held-out training images (60 images of 20 classes" in held.describe()


@pytest.mark.parametrize("share,per_class,test_classes", [
    (0.0, 5, [20]),    # off
    (0.05, 5, [20]),   # 1 of 20 classes: fewer than 2
    (0.1, 8, [0]),     # 0.8 image per class: fewer than 2 per class
])
def test_hold_out_nothing_when_off_or_too_small(share, per_class, test_classes):
    from sst_tf.data import hold_out

    ds = _dataset(per_class, test_classes)
    held = hold_out(ds, share)
    assert held.validation is None and held.kind == "" and held.dataset is ds
    assert "the training split" in held.describe()
