import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from sst_tf import export as ex

TOL = 1e-5  # float32 round-off between the in-process model and the reloaded graph


def tiny_model(dim=6, size=16, channels=3, seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, channels))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(dim)(x)
    return keras.Model(inp, x)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = tiny_model()
    spec = ex.PreprocessingSpec(image_size=16, resize_size=20, scaling="inception")
    path = ex.export_saved_model(
        model, str(tmp_path_factory.mktemp("run") / "export"), spec, metadata={"step": 3}
    )
    return model, spec, path


def images(n=3, h=24, w=30, seed=1):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_preprocess_matches_numpy_crop_and_scale():
    x = images(2, 20, 20).astype(np.float32)
    # Resizing to the input size is the identity, so only crop and scaling remain.
    spec = ex.PreprocessingSpec(image_size=16, resize_size=20, scaling="inception")
    got = ex.preprocess_images(x, spec).numpy()
    np.testing.assert_allclose(got, x[:, 2:18, 2:18] / 127.5 - 1.0, atol=1e-6)
    spec = ex.PreprocessingSpec(image_size=20, scaling="unit", channels=1)
    gray = 0.2989 * x[..., 0] + 0.5870 * x[..., 1] + 0.1140 * x[..., 2]
    got = ex.preprocess_images(x, spec).numpy()
    np.testing.assert_allclose(got[..., 0], gray / 255.0, atol=1e-3)


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(image_size=0), "image_size"),
        (dict(image_size=32, resize_size=16), "resize_size"),
        (dict(image_size=8, scaling="caffe"), "scaling"),
        (dict(image_size=8, channels=2), "channels"),
    ],
)
def test_spec_validation(kwargs, word):
    with pytest.raises(ValueError, match=word):
        ex.PreprocessingSpec(**kwargs)


def test_assets_record(exported):
    model, spec, path = exported
    info = ex.load_export_info(path)
    assert info["embedding_dim"] == 6
    assert ex.PreprocessingSpec.from_dict(info["preprocessing"]) == spec
    assert info["metadata"] == {"step": 3}
    with pytest.raises(FileNotFoundError, match="saved_model.pb"):
        ex.load_export_info(os.path.dirname(path))


def test_signatures_png_jpeg_and_garbage(exported):
    model, spec, path = exported
    loaded = tf.saved_model.load(path)
    assert {"serve_images", "serve_jpeg", "serving_default"} <= set(loaded.signatures)
    x = images()
    want = model(ex.preprocess_images(x, spec)).numpy()
    got = loaded.signatures["serve_images"](images=tf.constant(x, tf.float32))["embeddings"]
    np.testing.assert_allclose(got.numpy(), want, atol=TOL)

    pngs = tf.constant([tf.io.encode_png(im).numpy() for im in x])
    for name in ("serve_jpeg", "serving_default"):
        got = loaded.signatures[name](images=pngs)["embeddings"].numpy()
        np.testing.assert_allclose(got, want, atol=TOL)

    jpeg = tf.io.encode_jpeg(x[0], quality=90).numpy()
    decoded = tf.io.decode_jpeg(jpeg).numpy()[None].astype(np.float32)
    want_j = model(ex.preprocess_images(decoded, spec)).numpy()
    got_j = loaded.signatures["serve_jpeg"](images=tf.constant([jpeg]))["embeddings"].numpy()
    np.testing.assert_allclose(got_j, want_j, atol=TOL)

    with pytest.raises(tf.errors.InvalidArgumentError, match="not a JPEG or PNG") as e:
        loaded.signatures["serve_jpeg"](images=tf.constant([jpeg, b"\x00garbage bytes"]))
    assert "[1]" in str(e.value)  # names the bad input's index


def test_fresh_process_tf_load_and_tfsmlayer(exported, tmp_path):
    model, spec, path = exported
    x = images(4, 18, 22, seed=5)
    np.save(tmp_path / "x.npy", x)
    pngs = [tf.io.encode_png(im).numpy() for im in x]
    np.save(tmp_path / "png.npy", np.array(pngs, dtype=object), allow_pickle=True)
    script = textwrap.dedent(
        f"""
        import numpy as np, tensorflow as tf, keras
        x = np.load({str(tmp_path / "x.npy")!r}).astype(np.float32)
        pngs = list(np.load({str(tmp_path / "png.npy")!r}, allow_pickle=True))
        m = tf.saved_model.load({path!r})
        a = m.signatures["serve_images"](images=tf.constant(x))["embeddings"].numpy()
        b = m.signatures["serve_jpeg"](images=tf.constant(pngs))["embeddings"].numpy()
        c = keras.layers.TFSMLayer({path!r}, call_endpoint="serve_images")(x)["embeddings"]
        d = keras.layers.TFSMLayer({path!r}, call_endpoint="serve_jpeg")(tf.constant(pngs))
        np.savez({str(tmp_path / "out.npz")!r}, a=a, b=b, c=np.asarray(c),
                 d=np.asarray(d["embeddings"]))
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    want = model(ex.preprocess_images(x, spec)).numpy()
    out = np.load(tmp_path / "out.npz")
    for key in "abcd":
        np.testing.assert_allclose(out[key], want, atol=TOL, err_msg=key)


def test_export_is_atomic(tmp_path, monkeypatch):
    spec = ex.PreprocessingSpec(image_size=16)
    dst = tmp_path / "export"
    ex.export_saved_model(tiny_model(dim=4), str(dst), spec)
    assert ex.load_export_info(str(dst))["embedding_dim"] == 4

    def boom(*args, **kwargs):
        raise RuntimeError("crash in the middle of an export")

    monkeypatch.setattr(ex, "_verify", boom)
    with pytest.raises(RuntimeError, match="crash"):
        ex.export_saved_model(tiny_model(dim=5), str(dst), spec)
    # The old export is whole and nothing half-written is left next to it.
    assert ex.load_export_info(str(dst))["embedding_dim"] == 4
    assert tf.saved_model.load(str(dst)).signatures["serve_images"] is not None
    assert sorted(os.listdir(tmp_path)) == ["export"]

    monkeypatch.undo()
    ex.export_saved_model(tiny_model(dim=5), str(dst), spec)
    with open(dst / "assets" / ex.SPEC_FILENAME) as f:
        assert json.load(f)["embedding_dim"] == 5
    assert sorted(os.listdir(tmp_path)) == ["export"]
