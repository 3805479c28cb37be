import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from sst_tf import data, pipeline, sampling


def _split(n=12, side=10, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, side, side, 3), dtype=np.uint8)
    return data.Split(np.arange(n) % 3, ("a", "b", "c"), images=images)


def _plan(n=12, b=5, k=2):
    idx = np.array([[0, 1, 2, 3, 0], [4, 5, 6, 7, 8], [9, 10, 11, 9, 10]])
    mask = np.array([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], bool)
    targets = np.random.default_rng(1).integers(-1, b, (3, b, k)).astype(np.int32)
    return sampling.EpochPlan(idx, targets, mask, {})


def test_train_batches_carry_plan_and_fixed_shape():
    split, plan = _split(), _plan()
    opts = pipeline.ImageOptions(image_size=8, resize_size=10, random_flip=True)
    batches = list(pipeline.train_dataset(split, plan, opts, seed=0, epoch=0))
    assert len(batches) == plan.num_batches
    for (images, labels, targets, mask), idx, m, t in zip(
        batches, plan.indices, plan.mask, plan.targets, strict=True
    ):
        assert images.shape == (5, 8, 8, 3) and images.dtype == tf.float32
        np.testing.assert_array_equal(labels.numpy(), np.where(m, split.labels[idx], -1))
        np.testing.assert_array_equal(targets.numpy(), t)
        np.testing.assert_array_equal(mask.numpy(), m)
        # Each image is an 8x8 window of its source, possibly flipped.
        for img, i in zip(images.numpy(), idx, strict=True):
            src = split.images[i].astype(np.float32)
            windows = [src[y : y + 8, x : x + 8] for y in range(3) for x in range(3)]
            windows += [w[:, ::-1] for w in windows]
            assert min(np.abs(img - w).max() for w in windows) < 1e-3


def test_augmentation_is_seeded():
    split, plan = _split(), _plan()
    opts = pipeline.ImageOptions(image_size=6, resize_size=10, random_flip=True)

    def images(seed, epoch):
        ds = pipeline.train_dataset(split, plan, opts, seed=seed, epoch=epoch)
        return np.concatenate([b[0].numpy() for b in ds])

    np.testing.assert_array_equal(images(0, 0), images(0, 0))
    assert not np.array_equal(images(0, 0), images(0, 1))
    assert not np.array_equal(images(0, 0), images(1, 0))


def test_eval_dataset_centre_crop_in_order():
    split = _split(n=7)
    opts = pipeline.ImageOptions(image_size=6, resize_size=10)
    batches = list(pipeline.eval_dataset(split, opts, batch_size=3))
    assert [b[0].shape[0] for b in batches] == [3, 3, 1]
    images = np.concatenate([b[0].numpy() for b in batches])
    labels = np.concatenate([b[1].numpy() for b in batches])
    np.testing.assert_array_equal(labels, split.labels)
    np.testing.assert_allclose(images, split.images[:, 2:8, 2:8].astype(np.float32), atol=1e-3)


def test_files_decode_to_rgb(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (9, 9, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (9, 9), dtype=np.uint8)
    rgba = rng.integers(0, 256, (9, 9, 4), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(gray).save(tmp_path / "gray.png")
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgb).save(tmp_path / "rgb.jpg", quality=95)
    names = ["rgb.png", "gray.png", "rgba.png", "rgb.jpg"]
    split = data.Split(np.array([0, 1, 0, 1]), ("x", "y"),
                       paths=tuple(str(tmp_path / n) for n in names))
    opts = pipeline.ImageOptions(image_size=9)
    images = next(iter(pipeline.eval_dataset(split, opts, batch_size=4)))[0].numpy()
    assert images.shape == (4, 9, 9, 3)
    np.testing.assert_allclose(images[0], rgb, atol=1e-3)
    np.testing.assert_allclose(images[1], np.repeat(gray[..., None], 3, -1), atol=1e-3)
    np.testing.assert_allclose(images[2], rgba[..., :3], atol=1e-3)
    # JPEG is lossy: compare with PIL's own decoding of the same file.
    ref = np.asarray(Image.open(tmp_path / "rgb.jpg").convert("RGB"), np.float32)
    assert np.abs(images[3] - ref).mean() < 2


def test_image_options_validation():
    with pytest.raises(ValueError, match="resize_size"):
        pipeline.ImageOptions(image_size=10, resize_size=8)


def test_two_views_of_one_image_are_augmented_apart():
    split = _split()
    plan = sampling.repeat_views(sampling.EpochPlan(
        np.array([[0, 1, 2]]), np.full((1, 3, 1), -1, np.int32), np.ones((1, 3), bool), {}), 2)
    opts = pipeline.ImageOptions(image_size=6, resize_size=10, random_flip=True)
    [(images, labels, _, _)] = list(pipeline.train_dataset(split, plan, opts, seed=0))
    np.testing.assert_array_equal(labels.numpy()[::2], labels.numpy()[1::2])
    images = images.numpy()
    assert all(not np.array_equal(images[2 * i], images[2 * i + 1]) for i in range(3))
