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
    spec = ex.PreprocessingSpec(image_size=20, scaling="unit")
    np.testing.assert_allclose(ex.preprocess_images(x, spec).numpy(), x / 255.0, atol=1e-6)


def test_preprocess_is_the_eval_pipeline():
    from sst_tf import data, pipeline

    x = images(3, 24, 30)
    split = data.Split(np.zeros(3, np.int64), ("a",), images=x)
    opts = pipeline.ImageOptions(image_size=16, resize_size=20)
    (want, _), *_ = list(pipeline.eval_dataset(split, opts, batch_size=3))
    got = ex.preprocess_images(x, ex.PreprocessingSpec(image_size=16, resize_size=20))
    np.testing.assert_array_equal(got.numpy(), want.numpy())


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(image_size=0), "image_size"),
        (dict(image_size=32, resize_size=16), "resize_size"),
        (dict(image_size=8, scaling="caffe"), "scaling"),
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


def test_export_is_atomic(tmp_path, monkeypatch):
    spec = ex.PreprocessingSpec(image_size=16)
    dst = tmp_path / "export"
    ex.export_saved_model(tiny_model(dim=4), str(dst), spec)
    assert ex.load_export_info(str(dst))["embedding_dim"] == 4

    def boom(*args, **kwargs):
        raise RuntimeError("crash in the middle of an export")

    monkeypatch.setattr(ex, "verify_export", boom)
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


def test_mixed_precision_model_is_exported_in_float32(tmp_path):
    from sst_tf import model as model_lib

    def build():
        return model_lib.build_model("small_cnn", weights=None, embedding_dim=6,
                                     normalize=True, image_size=16)

    keras.utils.set_random_seed(0)
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        mixed = build()
    finally:
        keras.config.set_dtype_policy("float32")
    assert mixed.get_layer("backbone").get_layer("conv0_0").compute_dtype != "float32"
    reference = build()  # the same architecture built in float32, given the same weights
    reference.set_weights(mixed.get_weights())
    spec = ex.PreprocessingSpec(image_size=16, resize_size=18)
    path = ex.export_saved_model(mixed, str(tmp_path / "export"), spec)  # verifies too
    x = images(4, 18, 18).astype(np.float32)
    want = reference(ex.preprocess_images(x, spec)).numpy()
    got = tf.saved_model.load(path).signatures["serve_images"](images=x)["embeddings"]
    np.testing.assert_allclose(got.numpy(), want, atol=TOL)
    # The low-precision model itself is measurably off: the export is not it.
    low = mixed(ex.preprocess_images(x, spec)).numpy()
    assert np.max(np.abs(low - want)) > 10 * TOL
    assert ex.float32_model(reference) is reference  # float32 models are exported as they are


def test_export_trained_run_writes_both_and_names_what_failed(tmp_path, tiny, monkeypatch):
    from sst_tf.config import TrainConfig

    config = TrainConfig(model_dir=str(tmp_path), image_size=16, resize_size=16)
    model = tiny_model(dim=4)
    embeddings = np.random.default_rng(0).normal(size=(len(tiny.test), 4)).astype(np.float32)
    ex.export_trained_run(model, config, tiny.test, embeddings, str(tmp_path / "ckpt-3"))
    assert ex.load_export_info(str(tmp_path / "export"))["metadata"]["checkpoint"] == "ckpt-3"
    assert os.path.isfile(tmp_path / "projector" / "metadata.tsv")

    def broken(*args, **kwargs):
        raise OSError("no permission\nsecond line")

    monkeypatch.setattr(ex.projector, "write_split_projector", broken)
    with pytest.raises(ex.ExportError) as info:
        ex.export_trained_run(model, config, tiny.test, embeddings, None)
    assert str(info.value) == (
        f"training finished but writing the projector files to {tmp_path / 'projector'} "
        f"failed (OSError: no permission); metrics.json, the checkpoints and "
        f"{tmp_path / 'export'} are kept")


# -- through a real (tiny) training run ------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from _tiny_data import tiny_digits

    from sst_tf.trainer import TrainConfig, Trainer

    tiny = tiny_digits()  # 16 x 16 images
    config = TrainConfig(
        model_dir=str(tmp_path_factory.mktemp("run")),
        backbone="small_cnn",
        pretrained=False,
        embedding_dim=8,
        image_size=16,
        resize_size=18,
        random_flip=False,
        batch_size=50,
        num_targets=3,
        epochs=1,
        lr=1e-3,
        progress=False,
    )
    trainer = Trainer(config, dataset=tiny)
    trainer.fit()
    return trainer


def test_training_ends_with_export_and_projector(trained):
    cfg, test = trained.config, trained.dataset.test
    want = trained.embed(test)  # the training-time model through the eval pipeline
    export_dir = os.path.join(cfg.model_dir, "export")
    info = ex.load_export_info(export_dir)
    assert info["embedding_dim"] == 8 and info["metadata"]["checkpoint"] == "ckpt-1"
    assert info["preprocessing"] == {"image_size": 16, "resize_size": 18, "scaling": "raw"}
    # The thresholds calibrated at the end of the run, as in metrics.json.
    with open(os.path.join(cfg.model_dir, "metrics.json")) as f:
        calibrated = json.load(f)["calibration"]["thresholds"]
    assert info["metadata"]["thresholds"] == calibrated and "best_f1" in calibrated
    loaded = tf.saved_model.load(export_dir)
    got = loaded.signatures["serve_images"](images=tf.constant(test.images, tf.float32))
    np.testing.assert_allclose(got["embeddings"].numpy(), want, atol=TOL)
    pngs = tf.constant([tf.io.encode_png(im).numpy() for im in test.images[:10]])
    got = loaded.signatures["serve_jpeg"](images=pngs)["embeddings"].numpy()
    np.testing.assert_allclose(got, want[:10], atol=TOL)

    proj = os.path.join(cfg.model_dir, "projector")
    reader = tf.train.load_checkpoint(proj)
    np.testing.assert_allclose(reader.get_tensor("embedding/.ATTRIBUTES/VARIABLE_VALUE"), want)
    with open(os.path.join(proj, "metadata.tsv")) as f:
        rows = f.read().splitlines()
    assert rows[1:] == [f"{y}\t{i}" for i, y in enumerate(test.labels)]
    assert not any(n.startswith(".") for n in os.listdir(cfg.model_dir))  # no temp leftovers


def test_export_run_from_a_checkpoint(trained, tmp_path):
    cfg, test = trained.config, trained.dataset.test
    path = ex.export_run(cfg.model_dir, checkpoint="1", export_dir=str(tmp_path / "e"))
    # ckpt-1 is the run's last checkpoint: its calibrated thresholds come along.
    assert "best_f1" in ex.load_export_info(path)["metadata"]["thresholds"]
    # Another checkpoint than the calibrated one gets none.
    assert ex._calibrated_thresholds(cfg.model_dir, os.path.join(cfg.model_dir, "x", "ckpt-0")) \
        is None
    got = tf.saved_model.load(path).signatures["serve_images"](
        images=tf.constant(test.images[:20], tf.float32)
    )["embeddings"]
    np.testing.assert_allclose(got.numpy(), trained.embed(test)[:20], atol=TOL)
    with pytest.raises(FileNotFoundError, match="--checkpoint=9"):
        ex.export_run(cfg.model_dir, checkpoint="9")
    with pytest.raises(FileNotFoundError, match="--model_dir="):
        ex.export_run(str(tmp_path))


@pytest.mark.slow
def test_export_and_visualize_cli(trained, tmp_path):
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    model_dir = trained.config.model_dir
    out = str(tmp_path / "export")
    r = subprocess.run(
        [sys.executable, "-m", "sst_tf.export", f"--model_dir={model_dir}", f"--export_dir={out}"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    assert "Exported ckpt-1 (8-d embeddings)" in r.stdout
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "sst_tf.visualize",
            f"--model_dir={model_dir}",
            "--tsne_points=60",
            "--num_queries=3",
            f"--out_dir={tmp_path / 'fig'}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    from PIL import Image

    assert Image.open(tmp_path / "fig" / "tsne.png").size == (1200, 1200)
    # 3 rows of 64 + 8 px cells, 4 px gaps and margins.
    assert Image.open(tmp_path / "fig" / "retrieval.png").size == (
        4 + 5 * 72 + 4 * 4 + 8 + 4,
        4 + 3 * 72 + 2 * 4 + 4,
    )


def test_fresh_process_tf_load_and_tfsmlayer(trained, tmp_path):
    path = os.path.join(trained.config.model_dir, "export")
    x = trained.dataset.test.images
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
    want = trained.embed(trained.dataset.test)  # training-time model, eval pipeline
    out = np.load(tmp_path / "out.npz")
    for key in "abcd":
        np.testing.assert_allclose(out[key], want, atol=TOL, err_msg=key)
