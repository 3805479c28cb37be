"""sst_tf.convert: the portable resize, and ONNX / LiteRT files run by their own runtimes.

The files' tests need the optional extras (tf2onnx + onnxruntime,
ai-edge-litert; requirements-dev.txt installs them) and are skipped without.
"""

import importlib.util
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from sst_tf import convert, formats, pipeline
from sst_tf import export as ex

HAVE_ONNX = all(importlib.util.find_spec(m) for m in ("tf2onnx", "onnxruntime"))
HAVE_LITERT = importlib.util.find_spec("ai_edge_litert") is not None
needs_extras = pytest.mark.skipif(not (HAVE_ONNX and HAVE_LITERT),
                                  reason="the onnx and litert extras are not installed")


@pytest.mark.parametrize("h,w,resize,size", [(36, 36, 36, 32), (100, 70, 36, 32),
                                             (20, 31, 36, 32), (8, 8, 10, 10),
                                             (333, 500, 256, 224), (5, 400, 7, 7)])
def test_matrix_resize_and_crop_is_the_evaluation_pipelines(h, w, resize, size):
    # Down- and upscaling, odd sizes and aspect ratios: the antialiased bilinear
    # resize + centre crop of sst_tf.pipeline, within float32 round-off (0..255 pixels).
    images = np.random.default_rng(h * w).uniform(0, 255, (2, h, w, 3)).astype(np.float32)
    options = pipeline.ImageOptions(image_size=size, resize_size=resize)
    want = np.stack([pipeline.eval_preprocess(tf.constant(im), options).numpy()
                     for im in images])
    got = convert.resize_and_crop(tf.constant(images), resize, size).numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-2, rtol=1e-4)  # sums of up to 500 terms


def test_resize_rows_sum_to_one_and_are_local():
    m = convert.resize_crop_matrix(90, 30, 30).numpy()
    np.testing.assert_allclose(m.sum(axis=1), 1.0, rtol=1e-6)
    # Downscaling by 3: each output pixel reads a window of about 2 x 3 input pixels.
    assert ((m > 0).sum(axis=1) <= 6).all()
    assert np.all(np.argmax(m, axis=1) == np.arange(30) * 3 + 1)


def _model(dim=5, size=16, normalize=False):
    keras.utils.set_random_seed(0)
    inp = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inp)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(6, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(300, activation="relu")(x)  # large enough to be quantised
    x = keras.layers.Dense(dim)(x)
    if normalize:
        x = keras.layers.UnitNormalization()(x)
    return keras.Model(inp, x)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    if not (HAVE_ONNX and HAVE_LITERT):
        pytest.skip("the onnx and litert extras are not installed")
    spec = ex.PreprocessingSpec(image_size=16, resize_size=20, scaling="unit")
    path = ex.export_saved_model(_model(), str(tmp_path_factory.mktemp("e") / "export"), spec,
                                 metadata={"thresholds": {"best_f1": 0.25}},
                                 formats=formats.FORMATS)
    return spec, path


@needs_extras
def test_every_format_and_input_is_written_and_listed(exported):
    _, path = exported
    files = ex.load_export_info(path)["files"]
    assert set(files) == {formats.file_name(f, i) for f in formats.FORMATS
                          for i in formats.INPUTS}
    for name, facts in files.items():
        assert os.path.getsize(os.path.join(path, name)) == facts["bytes"]
        assert facts["max_abs_diff"] <= (0.05 if "int8" in name else 1e-4)
    # Dynamic-range int8 keeps int8 weights: a smaller file.
    assert files["embedder_crop_int8.tflite"]["bytes"] < files["embedder_crop.tflite"]["bytes"]


@needs_extras
@pytest.mark.parametrize("name", [formats.file_name(f, i) for f in formats.FORMATS
                                  for i in formats.INPUTS])
def test_each_file_gives_the_savedmodels_embeddings_in_its_own_runtime(exported, name):
    spec, path = exported
    serve = tf.saved_model.load(path).signatures["serve_images"]
    run = convert.load_file(os.path.join(path, name))
    rng = np.random.default_rng(7)
    for shape in [(1, 20, 20, 3), (4, 41, 29, 3), (2, 12, 64, 3)]:  # sizes never converted
        images = rng.uniform(0, 255, shape).astype(np.float32)
        want = serve(images=tf.constant(images))["embeddings"].numpy()
        if "_crop" in name:  # the caller resizes and crops (the SavedModel's own way)
            raw = ex.PreprocessingSpec(spec.image_size, spec.resize_size, "raw")
            images = ex.preprocess_images(images, raw).numpy()
        got = run(images)
        assert got.shape == want.shape
        tol = 0.05 if "int8" in name else 1e-4
        np.testing.assert_allclose(got, want, atol=tol * max(1.0, np.abs(want).max()))


@needs_extras
@pytest.mark.parametrize("name", ["embedder_images.onnx", "embedder_crop_int8.tflite"])
def test_files_carry_input_preprocessing_and_thresholds(exported, name):
    spec, path = exported
    meta = convert.read_metadata(os.path.join(path, name))
    assert meta["input"] == ("images" if "images" in name else "crop")
    assert meta["preprocessing"] == spec.to_dict()
    assert meta["embedding_dim"] == 5
    assert meta["thresholds"] == {"best_f1": 0.25}
    assert str(spec.image_size) in meta["input_description"]


def test_a_file_without_a_record_is_named(tmp_path):
    if not HAVE_ONNX:
        pytest.skip("the onnx extra is not installed")
    import onnx

    path = str(tmp_path / "other.onnx")
    graph = onnx.helper.make_graph([], "g", [], [])
    onnx.save(onnx.helper.make_model(graph), path)
    with pytest.raises(ValueError, match="other.onnx has no sst_tf record"):
        convert.read_metadata(path)


def test_a_missing_package_stops_the_export_before_anything_is_written(tmp_path,
                                                                        monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tf2onnx" else real(name, *a))
    spec = ex.PreprocessingSpec(image_size=16, resize_size=20)
    with pytest.raises(ValueError, match=r"pip install 'sst_tf\[onnx\]'"):
        ex.export_saved_model(_model(), str(tmp_path / "export"), spec, formats=("onnx",))
    assert not os.listdir(tmp_path)


@needs_extras
def test_a_file_that_differs_from_the_model_stops_the_export(tmp_path, monkeypatch):
    # A converter that changes the numbers must not leave a file (nor the export) behind.
    real = convert._check_file

    def off(path, fmt, kind, images, crops, want):
        return real(path, fmt, kind, images, crops, want + 1.0)

    monkeypatch.setattr(convert, "_check_file", off)
    spec = ex.PreprocessingSpec(image_size=16, resize_size=20)
    with pytest.raises(RuntimeError, match="embedder_images.onnx differs from the model"):
        ex.export_saved_model(_model(), str(tmp_path / "export"), spec, formats=("onnx",))
    assert not os.listdir(tmp_path)


def test_the_export_record_lists_no_files_without_formats(tmp_path):
    spec = ex.PreprocessingSpec(image_size=16)
    path = ex.export_saved_model(_model(), str(tmp_path / "export"), spec)
    assert ex.load_export_info(path)["files"] == {}
    assert not [f for f in os.listdir(path) if f.startswith("embedder_")]
    with open(os.path.join(path, "assets", ex.SPEC_FILENAME)) as f:
        assert json.load(f)["files"] == {}


@needs_extras
def test_export_command_writes_the_formats_of_a_runs_checkpoint(tmp_path, capsys, monkeypatch):
    # python -m sst_tf.export --model_dir=RUN --formats=...: one line per file, the
    # run's calibrated thresholds in every file's metadata.
    from _entry_points import run_main
    from _tiny_data import small_run

    run = tmp_path / "run"
    small_run(run)
    (run / "metrics.json").write_text(json.dumps({"calibration": {"thresholds": {
        "best_f1": 1.5}}}))
    code, out, err = run_main(ex, [f"--model_dir={run}", "--formats=savedmodel,onnx,litert"],
                              capsys, monkeypatch)
    assert code == 0, err
    lines = [line.strip() for line in out.splitlines() if line.startswith("  embedder_")]
    assert sorted(line.split(":")[0] for line in lines) == sorted(
        formats.file_name(f, i) for f in ("onnx", "litert") for i in formats.INPUTS)
    assert all("max |difference| to the model" in line for line in lines)
    for name in ("embedder_images.onnx", "embedder_crop.tflite"):
        meta = convert.read_metadata(str(run / "export" / name))
        assert meta["thresholds"] == {"best_f1": 1.5}


@needs_extras
def test_calibrating_an_export_again_updates_its_files_thresholds(tmp_path):
    from sst_tf.calibrate import record_thresholds

    spec = ex.PreprocessingSpec(image_size=16, resize_size=20)
    path = ex.export_saved_model(_model(), str(tmp_path / "export"), spec,
                                 metadata={"thresholds": {"best_f1": 0.25}},
                                 formats=("onnx", "litert"))
    run = convert.load_file(os.path.join(path, "embedder_crop.tflite"))
    x = np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 3)).astype(np.float32)
    before = run(x)
    record_thresholds(path, {"best_f1": 0.5, "fmr=0.001": 0.125})
    for name in ex.load_export_info(path)["files"]:
        meta = convert.read_metadata(os.path.join(path, name))
        assert meta["thresholds"] == {"best_f1": 0.5, "fmr=0.001": 0.125}, name
        assert meta["input"] in formats.INPUTS  # the rest of the record is kept
    # The model in the file is untouched.
    np.testing.assert_array_equal(convert.load_file(os.path.join(path, "embedder_crop.tflite"))(x),
                                  before)


@needs_extras
def test_a_failed_conversion_after_training_names_the_retry_with_its_formats(tmp_path,
                                                                            monkeypatch):
    from sst_tf.config import TrainConfig
    from sst_tf.datasets.splits import Split

    def off(path, fmt, kind, images, crops, want):
        raise RuntimeError(f"{os.path.basename(path)} differs from the model's embeddings")

    monkeypatch.setattr(convert, "_check_file", off)
    config = TrainConfig(model_dir=str(tmp_path), image_size=16, resize_size=20,
                         export_formats="onnx")
    split = Split(np.zeros(2, np.int64), ("a",), images=np.zeros((2, 16, 16, 3), np.uint8))
    with pytest.raises(ex.ExportError) as e:
        ex.export_trained_run(_model(), config, split, np.zeros((2, 5), np.float32), None)
    assert f"python -m sst_tf.export --model_dir={tmp_path} --formats=savedmodel,onnx" \
        in str(e.value)
    assert not os.path.exists(tmp_path / "export")  # nothing half-written
