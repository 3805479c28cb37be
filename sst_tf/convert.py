"""ONNX and LiteRT files of an embedding model, written beside its SavedModel.

Optional extras: ONNX needs ``tf2onnx`` and ``onnxruntime`` (``pip install
'sst_tf[onnx]'``), LiteRT needs ``ai-edge-litert`` (``pip install
'sst_tf[litert]'``; the converter is TensorFlow's own). Each file is run by its
own runtime right after it is written and must give the model's embeddings
(within 1e-4; the int8 file only finite ones of the right shape).

Every format comes with two inputs, named in the file's name and metadata:

* ``images``: float32 ``[N, H, W, 3]`` RGB 0..255 of any size, as the
  SavedModel's ``serve_images``: the file resizes and centre-crops. The resize
  is the evaluation pipeline's bilinear, antialiased one written as two matrix
  products (`resize_crop_matrix`), because LiteRT has no antialiased resize
  and both converters express matrix products with core operators.
* ``crop``: float32 ``[N, S, S, 3]`` RGB 0..255 at the model's input size,
  after the export's resize and crop (`sst_tf.export.preprocess_images`).

Files (``embedder_<input>.onnx``, ``embedder_<input>.tflite``,
``embedder_<input>_int8.tflite``) carry a JSON record under the key
``sst_tf``: the input, the preprocessing, the embedding size and the
export's calibrated thresholds (`read_metadata`). ``litert_int8`` is
dynamic-range quantisation: int8 weights, float32 activations.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from sst_tf import pipeline
from sst_tf.formats import INPUTS, METADATA_KEY, file_name

SIGNATURE = "serve"
ONNX_OPSET = 17


def resize_crop_matrix(size: tf.Tensor | int, resize: int, image_size: int) -> tf.Tensor:
    """Rows of the antialiased bilinear resize of one axis, cropped to the centre.

    The weights of TensorFlow's ``ScaleAndTranslate`` kernel (what
    ``tf.image.resize(..., "bilinear", antialias=True)`` runs): output pixel x
    of ``resize`` samples the input at ``(x + 0.5) * size / resize`` with a
    triangle kernel widened by the downscale factor, weights summing to 1.
    Only the ``image_size`` rows of the centre crop are returned.

    Args:
      size: the input's length on this axis (may be a dynamic scalar).
      resize: the length after resizing.
      image_size: the length after the centre crop (<= resize).

    Returns:
      float32 ``[image_size, size]``: ``matrix @ axis`` resizes and crops.
    """
    n = tf.cast(size, tf.float32)
    source = tf.range(n) + 0.5
    first = (resize - image_size) // 2
    x = tf.range(first, first + image_size, dtype=tf.float32)
    step = n / float(resize)
    sample = (x + 0.5) * step
    width = tf.maximum(step, 1.0)
    weights = tf.nn.relu(1.0 - tf.abs(source[None, :] - sample[:, None]) / width)
    return weights / tf.reduce_sum(weights, axis=1, keepdims=True)


def resize_and_crop(images: tf.Tensor, resize: int, image_size: int) -> tf.Tensor:
    """The export's resize and centre crop of ``[N, H, W, 3]`` as two matrix products."""
    images = tf.cast(images, tf.float32)
    rows = resize_crop_matrix(tf.shape(images)[1], resize, image_size)
    cols = resize_crop_matrix(tf.shape(images)[2], resize, image_size)
    x = tf.transpose(images, [0, 3, 1, 2])  # [N, C, H, W]
    x = tf.matmul(tf.matmul(rows, x), cols, transpose_b=True)  # [N, C, S, S]
    return tf.transpose(x, [0, 2, 3, 1])


def _scale(x: tf.Tensor, scaling: str) -> tf.Tensor:
    if scaling == "inception":
        return x / 127.5 - 1.0
    if scaling == "unit":
        return x / 255.0
    return x


def embedding_function(model: keras.Model, spec, input_kind: str):
    """The `tf.function` a file holds: images (as `input_kind` says) -> embeddings."""
    s = spec.image_size
    if input_kind == "images":
        signature = tf.TensorSpec([None, None, None, 3], tf.float32, name="images")

        def prepare(images):
            return _scale(resize_and_crop(images, spec.resize_size or s, s), spec.scaling)
    else:
        signature = tf.TensorSpec([None, s, s, 3], tf.float32, name="images")

        def prepare(images):
            return _scale(images, spec.scaling)

    @tf.function(input_signature=[signature])
    def embed(images):
        return {"embeddings": tf.cast(model(prepare(images), training=False), tf.float32)}

    return embed


def _onnx_bytes(model: keras.Model, spec, input_kind: str, record: str) -> bytes:
    import onnx
    import tf2onnx

    fn = embedding_function(model, spec, input_kind)
    proto, _ = tf2onnx.convert.from_function(fn, input_signature=fn.input_signature,
                                             opset=ONNX_OPSET)
    onnx.helper.set_model_props(proto, {METADATA_KEY: record})
    return proto.SerializeToString()


def _litert_bytes(model: keras.Model, spec, input_kind: str, int8: bool, record: str,
                  workdir: str) -> bytes:
    # Through a SavedModel: converting a concrete function of a Keras 3 model
    # keeps its variables as resources, which LiteRT reads uninitialised.
    folder = os.path.join(workdir, f"litert_{input_kind}")
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SIGNATURE, embedding_function(model, spec, input_kind))
    archive.write_out(folder, verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(folder, signature_keys=[SIGNATURE])
    if int8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    content = converter.convert()
    shutil.rmtree(folder, ignore_errors=True)
    return _with_litert_metadata(content, record)


def _with_litert_metadata(content: bytes, record: str) -> bytes:
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(record.encode(), np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_KEY
    entry.buffer = len(model.buffers) - 1
    model.metadata = [*(model.metadata or []), entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def read_metadata(path: str) -> dict[str, Any]:
    """The ``sst_tf`` record of an ONNX or LiteRT file written here.

    Raises:
      ValueError: the file has no such record (naming the file).
    """
    if path.endswith(".onnx"):
        import onnx

        props = {p.key: p.value for p in onnx.load(path, load_external_data=False)
                 .metadata_props}
        text = props.get(METADATA_KEY)
    else:
        from tensorflow.lite.tools import flatbuffer_utils

        model = flatbuffer_utils.read_model(path)
        text = next((bytes(model.buffers[m.buffer].data).decode() for m in model.metadata or []
                     if (m.name.decode() if isinstance(m.name, bytes) else m.name)
                     == METADATA_KEY), None)
    if text is None:
        raise ValueError(f"{path} has no {METADATA_KEY} record: it was not written by sst_tf.")
    return json.loads(text)


def update_thresholds(path: str, thresholds: Mapping[str, float]) -> None:
    """Replaces the thresholds in the ``sst_tf`` record of a file written here (atomically).

    Raises:
      ValueError: the file has no such record.
    """
    record = read_metadata(path)
    record["thresholds"] = {str(k): float(v) for k, v in thresholds.items()}
    text = json.dumps(record, sort_keys=True)
    if path.endswith(".onnx"):
        import onnx

        proto = onnx.load(path)
        onnx.helper.set_model_props(proto, {
            **{p.key: p.value for p in proto.metadata_props}, METADATA_KEY: text})
        content = proto.SerializeToString()
    else:
        from tensorflow.lite.tools import flatbuffer_utils

        model = flatbuffer_utils.read_model(path)
        for entry in model.metadata:
            name = entry.name.decode() if isinstance(entry.name, bytes) else entry.name
            if name == METADATA_KEY:
                model.buffers[entry.buffer].data = np.frombuffer(text.encode(), np.uint8)
        content = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(content)
    os.replace(tmp, path)


def load_file(path: str, threads: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """A function running an ONNX or LiteRT file in its runtime: images -> embeddings.

    Args:
      path: a file written by `write_formats`.
      threads: the runtime's threads (0: its default).
    """
    if path.endswith(".onnx"):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = options.inter_op_num_threads = threads
        session = onnxruntime.InferenceSession(path, options,
                                               providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda images: session.run(None, {name: np.asarray(images, np.float32)})[0]
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path, num_threads=threads or None)
    runner = interpreter.get_signature_runner(SIGNATURE)
    return lambda images: runner(images=np.asarray(images, np.float32))["embeddings"]


def _check_file(path: str, fmt: str, input_kind: str, want_images: np.ndarray,
                want_crops: np.ndarray, want: np.ndarray) -> float:
    got = load_file(path)(want_images if input_kind == "images" else want_crops)
    if got.shape != want.shape or not np.all(np.isfinite(got)):
        raise RuntimeError(f"{os.path.basename(path)} gives embeddings of shape {got.shape} "
                           f"(finite: {bool(np.all(np.isfinite(got)))}), expected {want.shape}")
    err = float(np.max(np.abs(got - want)))
    scale = max(1.0, float(np.max(np.abs(want))))
    if fmt != "litert_int8" and not err <= 1e-4 * scale:
        raise RuntimeError(f"{os.path.basename(path)} differs from the model's embeddings by "
                           f"{err:g} (more than 1e-4)")
    return err


def write_formats(model: keras.Model, spec, folder: str, formats: Sequence[str],
                  record: Mapping[str, Any]) -> dict[str, dict]:
    """Writes every format x input into `folder` and checks each in its runtime.

    Args:
      model: the float32 embedding model.
      spec: its `sst_tf.export.PreprocessingSpec`.
      folder: the (temporary) export folder.
      formats: names of `FORMATS`.
      record: the export's record (embedding size, preprocessing, metadata
        with thresholds), copied into every file's metadata.

    Returns:
      {file name: {"format", "input", "bytes", "max_abs_diff"}}: the files
      and their measured distance to the model's embeddings.

    Raises:
      RuntimeError: a file does not reproduce the model's embeddings.
    """
    if not formats:
        return {}
    rng = np.random.default_rng(0)
    side = spec.resize_size or spec.image_size
    images = rng.uniform(0, 255, size=(3, side + 7, side - 3, 3)).astype(np.float32)
    options = spec.image_options()
    crops = tf.map_fn(lambda im: pipeline.eval_preprocess(im, options), tf.constant(images)
                      ).numpy()  # the export's resize and crop, RGB 0..255
    want = model(_scale(tf.constant(crops), spec.scaling), training=False).numpy()
    files = {}
    with tempfile.TemporaryDirectory(dir=folder) as work:
        for fmt in formats:
            for input_kind in INPUTS:
                name = file_name(fmt, input_kind)
                meta = json.dumps({"format": fmt, "input": input_kind,
                                   "input_description": input_description(input_kind, spec),
                                   "embedding_dim": record.get("embedding_dim"),
                                   "preprocessing": record.get("preprocessing"),
                                   "thresholds": record.get("metadata", {}).get("thresholds")},
                                  sort_keys=True)
                if fmt == "onnx":
                    content = _onnx_bytes(model, spec, input_kind, meta)
                else:
                    content = _litert_bytes(model, spec, input_kind, fmt == "litert_int8",
                                            meta, work)
                path = os.path.join(folder, name)
                with open(path, "wb") as f:
                    f.write(content)
                err = _check_file(path, fmt, input_kind, images, crops, want)
                files[name] = {"format": fmt, "input": input_kind, "bytes": len(content),
                               "max_abs_diff": err}
    return files


def input_description(input_kind: str, spec) -> str:
    """What a file's input is, in words."""
    if input_kind == "images":
        return ("float32 [N,H,W,3] RGB 0..255, any H and W; the file resizes to "
                f"{spec.resize_size or spec.image_size} and centre-crops to {spec.image_size}")
    return (f"float32 [N,{spec.image_size},{spec.image_size},3] RGB 0..255, already resized "
            f"to {spec.resize_size or spec.image_size} and centre-cropped")
