"""sst_tf.formats: format names, file names, and the check for missing packages."""

import importlib.util

import pytest

from sst_tf import formats


def test_parse_formats_keeps_order_drops_savedmodel_and_duplicates():
    assert formats.parse_formats("savedmodel,litert,onnx,litert") == ("litert", "onnx")
    assert formats.parse_formats(["ONNX", " litert_int8 "]) == ("onnx", "litert_int8")
    assert formats.parse_formats("") == ()
    assert formats.parse_formats(None) == ()


def test_an_unknown_format_names_the_choices():
    with pytest.raises(ValueError, match=r"'tflite'.*savedmodel, onnx, litert, litert_int8"):
        formats.parse_formats("onnx,tflite")


def test_file_names_say_format_and_input():
    names = {formats.file_name(f, i) for f in formats.FORMATS for i in formats.INPUTS}
    assert names == {"embedder_images.onnx", "embedder_crop.onnx", "embedder_images.tflite",
                     "embedder_crop.tflite", "embedder_images_int8.tflite",
                     "embedder_crop_int8.tflite"}


@pytest.mark.parametrize("fmt,module,extra", [("onnx", "tf2onnx", "onnx"),
                                              ("onnx", "onnxruntime", "onnx"),
                                              ("litert", "ai_edge_litert", "litert"),
                                              ("litert_int8", "ai_edge_litert", "litert")])
def test_a_missing_package_is_named_with_its_pip_command(monkeypatch, fmt, module, extra):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == module else real(name, *a))
    with pytest.raises(ValueError) as e:
        formats.check_available([fmt], "--export_formats")
    text = str(e.value)
    assert f"--export_formats={fmt} needs {module}" in text
    assert f"pip install 'sst_tf[{extra}]'" in text


def test_nothing_requested_needs_nothing(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda *a: None)
    formats.check_available(())
