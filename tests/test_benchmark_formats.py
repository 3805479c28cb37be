"""scripts/benchmarks/formats.py: every export format against the SavedModel, in one run."""

import importlib.util
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXTRAS = all(importlib.util.find_spec(m) for m in ("tf2onnx", "onnxruntime", "ai_edge_litert"))


@pytest.mark.skipif(not EXTRAS, reason="the onnx and litert extras are not installed")
def test_formats_section_times_every_file_against_the_savedmodel(tmp_path):
    out = tmp_path / "B.md"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "benchmark.py"), "--sections=formats",
         "--formats_models=digits", "--formats_epochs=1", "--repeats=2", f"--output={out}"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| digits")]
    by_file = {r[1]: r for r in rows}
    assert set(by_file) == {"SavedModel", "embedder_images.onnx", "embedder_crop.onnx",
                            "embedder_images.tflite", "embedder_crop.tflite",
                            "embedder_images_int8.tflite", "embedder_crop_int8.tflite",
                            "(writing all six files, checking each)"}
    assert by_file["SavedModel"][4] == "1.00" and by_file["SavedModel"][6] == "1.00"
    for name, r in by_file.items():
        if not name.startswith("embedder_"):
            continue
        assert float(r[5]) > 0 and float(r[7]) > 0  # timed
        if "int8" in name:  # int8 weights: a quarter of the float file's size or less
            assert float(r[4]) < 0.5 * float(by_file[name.replace("_int8", "")][4])
        else:  # the same embeddings, so the same MAP@R
            assert float(r[9]) < 1e-5, r
            assert abs(float(r[11].rstrip(" |"))) < 1e-3, r
