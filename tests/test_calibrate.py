"""sst_tf.calibrate: an export's thresholds from a labelled folder, recorded in the export."""

import keras
import numpy as np
import pytest
from _entry_points import run_main
from PIL import Image

from sst_tf import calibrate, calibration
from sst_tf.export import PreprocessingSpec, export_saved_model, load_export_info


@pytest.fixture()
def colours(tmp_path):
    """An export of an image's mean colour (0..255) and a folder of three colour classes."""
    inp = keras.Input((16, 16, 3))
    export = export_saved_model(keras.Model(inp, keras.layers.GlobalAveragePooling2D()(inp)),
                                str(tmp_path / "export"), PreprocessingSpec(image_size=16))
    rng = np.random.default_rng(0)
    for name, rgb in {"red": (230, 20, 20), "green": (20, 230, 20),
                      "blue": (20, 20, 230)}.items():
        (tmp_path / "photos" / name).mkdir(parents=True)
        for i in range(4):
            pixels = np.clip(np.array(rgb) + rng.integers(-30, 31, (1, 1, 3)), 0, 255)
            Image.fromarray(np.broadcast_to(pixels, (20, 20, 3)).astype(np.uint8)).save(
                tmp_path / "photos" / name / f"{i}.png")
    return export, tmp_path / "photos"


def _run(argv, capsys, monkeypatch):
    code, out, _ = run_main(calibrate, argv, capsys, monkeypatch)
    return code, out


def test_thresholds_from_a_folder_are_printed_and_recorded(colours, capsys, monkeypatch):
    export, photos = colours
    code, out = _run([f"--export_dir={export}", f"--images={photos}"], capsys, monkeypatch)
    assert code == 0, out
    assert "12 images in 3 classes" in out and "18 same-class and 48 different-class" in out
    recorded = load_export_info(export)["metadata"]["thresholds"]
    assert set(recorded) == {"best_f1", "fmr=0.01", "fmr=0.001"}
    # The colours are far apart: the best threshold separates them without an error.
    from sst_tf.embed import Embedder, embed_files, list_images

    paths = list_images(str(photos))
    _, emb, _ = embed_files(Embedder(export), paths, progress=False)
    labels = [p.split("/")[-2] for p in paths]
    want = calibration.calibrate(emb, labels)
    assert recorded == pytest.approx(want.thresholds)
    assert want.rates["best_f1"]["f1"] == 1.0


def test_norecord_only_prints(colours, capsys, monkeypatch):
    export, photos = colours
    code, out = _run([f"--export_dir={export}", f"--images={photos}", "--norecord",
                      "--fmr=0.05"], capsys, monkeypatch)
    assert code == 0 and "fmr=0.05" in out and "Recorded" not in out
    assert "thresholds" not in load_export_info(export)["metadata"]
