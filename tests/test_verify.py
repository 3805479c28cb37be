"""sst_tf.verify: two images, same or different, with a calibrated or given threshold."""

import json

import keras
import numpy as np
import pytest
from _entry_points import run_main
from PIL import Image

from sst_tf import verify
from sst_tf.export import PreprocessingSpec, export_saved_model


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    """An export of an image's mean colour (0..255) recording a threshold; three images."""
    tmp = tmp_path_factory.mktemp("verify")
    inp = keras.Input((16, 16, 3))
    export = export_saved_model(
        keras.Model(inp, keras.layers.GlobalAveragePooling2D()(inp)), str(tmp / "export"),
        PreprocessingSpec(image_size=16), metadata={"thresholds": {"best_f1": 10.0}})
    paths = {}
    for name, rgb in {"red1": (230, 20, 20), "red2": (225, 25, 20), "blue": (20, 20, 230)}.items():
        paths[name] = str(tmp / f"{name}.png")
        Image.fromarray(np.full((20, 20, 3), rgb, np.uint8)).save(paths[name])
    return export, paths


def _run(argv, capsys, monkeypatch):
    code, out, _ = run_main(verify, argv, capsys, monkeypatch)
    return code, out


def test_same_and_different_with_the_exports_calibrated_threshold(colours, capsys, monkeypatch):
    export, p = colours
    code, out = _run([f"--export_dir={export}", f"--images={p['red1']},{p['red2']}"], capsys,
                     monkeypatch)
    assert code == 0 and out.startswith("same: distance ") and "threshold 10.0000 (best_f1)" in out
    code, out = _run([f"--export_dir={export}", f"--images={p['red1']},{p['blue']}", "--json"],
                     capsys, monkeypatch)
    result = json.loads(out)
    assert code == 0 and result["answer"] == "different" and result["threshold"] == 10.0
    # The embeddings are the mean colours (0..255): red and blue differ by (210, 0, -210).
    assert result["distance"] == pytest.approx(np.sqrt(2) * 210, rel=1e-3)


def test_a_given_distance_replaces_the_calibrated_one(colours, capsys, monkeypatch):
    export, p = colours
    code, out = _run([f"--export_dir={export}", f"--images={p['red1']},{p['blue']}",
                      "--threshold=1000"], capsys, monkeypatch)
    assert code == 0 and out.startswith("same:") and "(1000)" in out
    assert verify.decide(0.5, 0.5) == "same" and verify.decide(0.51, 0.5) == "different"
