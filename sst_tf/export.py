"""SavedModel export of a trained embedding model, with its own preprocessing.

The export holds three signatures:

* ``serve_images``: float32 ``[N, H, W, 3]`` RGB in 0..255 (any H, W) ->
  ``{"embeddings": float32 [N, d]}``;
* ``serve_jpeg``: string ``[N]`` of encoded JPEG or PNG bytes -> the same;
* ``serving_default``: the same function as ``serve_jpeg``.

Both apply the evaluation preprocessing (resize, centre crop, scaling) recorded
in ``assets/sst_tf_export.json`` next to the embedding size, so a user needs
nothing but the folder. The folder is written to a temporary sibling and
renamed into place at the end: a crash never leaves a half export behind.

At the end of training `export_trained_run` writes the run's SavedModel and
its projector files (`ExportError` names what failed and how to retry).

Entry point: ``python -m sst_tf.export --model_dir=RUN`` exports the latest
(or a chosen) checkpoint of a training run to ``RUN/export``. It never writes
over a folder it did not write, and replaces an earlier export only with
``--overwrite`` (see `sst_tf.outputs.check_output_dir`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Mapping
from typing import Any

from absl import flags, logging

from sst_tf import cli

FLAGS = flags.FLAGS
PROG = "sst_tf.export"


def define_flags(fv: flags.FlagValues = FLAGS) -> None:
    """Defines this entry point's flags (only when run as a program)."""
    flags.DEFINE_string("model_dir", None, "Training run folder (holds config.json, checkpoints/).",
                        flag_values=fv)
    flags.DEFINE_string(
        "checkpoint", None, "Checkpoint: an epoch number or a path prefix (default: latest).",
        flag_values=fv,
    )
    flags.DEFINE_string("export_dir", None, "Where to write the SavedModel (MODEL_DIR/export).",
                        flag_values=fv)
    flags.DEFINE_bool("overwrite", False, "Replace an earlier sst_tf export in --export_dir.",
                      flag_values=fv)
    flags.DEFINE_list(
        "formats", ["savedmodel"], "Formats to write into the export folder: savedmodel "
        "(always), onnx (pip install 'sst_tf[onnx]'), litert, litert_int8 (pip install "
        "'sst_tf[litert]'). Each file comes with two inputs: any-size images (resized and "
        "cropped inside the file) and images already resized and cropped.", flag_values=fv)


if __name__ == "__main__":  # before TensorFlow loads: a fast --help, a quiet start-up
    define_flags()
    cli.answer_help_early()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from sst_tf import convert, pipeline, projector  # noqa: E402
from sst_tf import formats as formats_lib  # noqa: E402
from sst_tf import model as model_lib  # noqa: E402
from sst_tf.config import TrainConfig  # noqa: E402
from sst_tf.datasets.splits import Split  # noqa: E402
from sst_tf.outputs import (  # noqa: E402
    DiskFullError,
    check_output_dir,
    disk_full_guard,
    read_json_object,
    replace_dir,
    temp_dir_for,
    write_marker,
)
from sst_tf.run_state import ADDED_MODEL_FLAGS, RunFolder  # noqa: E402

SPEC_FILENAME = "sst_tf_export.json"
SCALINGS = ("inception", "unit", "raw")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"


@dataclasses.dataclass(frozen=True)
class PreprocessingSpec:
    """How evaluation turns an RGB 0..255 image into the model's input.

    The geometry is the evaluation pipeline's (`sst_tf.pipeline.eval_preprocess`:
    bilinear, antialiased resize to ``resize_size`` square, centre crop to
    ``image_size``); the export calls that very function.

    Attributes:
      image_size: side of the square image the model sees.
      resize_size: side the image is first resized to; ``None``: ``image_size``.
      scaling: ``"raw"`` keeps 0..255 (sst_tf models scale inside, see
        `sst_tf.model`); ``"inception"`` maps to [-1, 1]; ``"unit"`` to [0, 1].
    """

    image_size: int
    resize_size: int | None = None
    scaling: str = "raw"

    def __post_init__(self):
        if self.image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {self.image_size}")
        if self.resize_size is not None and self.resize_size < self.image_size:
            raise ValueError(
                f"resize_size ({self.resize_size}) must be >= image_size ({self.image_size})"
            )
        if self.scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {SCALINGS}, got {self.scaling!r}")

    def image_options(self) -> pipeline.ImageOptions:
        """The evaluation pipeline's options for this geometry."""
        return pipeline.ImageOptions(
            image_size=self.image_size,
            resize_size=self.resize_size,
            random_flip=False,
            random_crop=False,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PreprocessingSpec:
        """Inverse of `to_dict`; unknown keys are an error naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown preprocessing keys: {sorted(unknown)}")
        return cls(**d)


def preprocess_image(image: tf.Tensor, spec: PreprocessingSpec) -> tf.Tensor:
    """Evaluation view of one RGB 0..255 image ``[H, W, 3]`` -> float32 model input."""
    x = pipeline.eval_preprocess(tf.cast(image, tf.float32), spec.image_options())
    if spec.scaling == "inception":
        x = x / 127.5 - 1.0
    elif spec.scaling == "unit":
        x = x / 255.0
    return x


def preprocess_images(images: tf.Tensor, spec: PreprocessingSpec) -> tf.Tensor:
    """`preprocess_image` over a batch ``[N, H, W, 3]`` -> ``[N, S, S, 3]`` float32."""
    s = spec.image_size
    return tf.map_fn(
        lambda im: preprocess_image(im, spec),
        tf.cast(images, tf.float32),
        fn_output_signature=tf.TensorSpec([s, s, 3], tf.float32),
    )


def decode_image_bytes(data: tf.Tensor, index: tf.Tensor | int = 0) -> tf.Tensor:
    """Decodes one JPEG or PNG string to uint8 ``[H, W, 3]``.

    Anything else (garbage, GIF, an empty string) fails with an
    ``InvalidArgumentError`` saying which input was not a JPEG or PNG.
    """
    head8 = tf.strings.substr(data, 0, 8)
    head3 = tf.strings.substr(data, 0, 3)
    ok = tf.logical_or(tf.equal(head8, _PNG_MAGIC), tf.equal(head3, _JPEG_MAGIC))
    check = tf.debugging.Assert(
        ok,
        ["serve_jpeg: input at index", index, "is not a JPEG or PNG image (bad header bytes)"],
    )
    with tf.control_dependencies([check]):
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def _embedding_dim(model: keras.Model) -> int:
    dim = model.output_shape[-1] if hasattr(model, "output_shape") else None
    if dim is None:
        raise ValueError("cannot tell the model's embedding size from its output shape")
    return int(dim)


_LOW_PRECISION = ("bfloat16", "float16", "mixed_bfloat16", "mixed_float16")


def _float32_config(config: Any) -> Any:
    """A Keras config with every (mixed) low-precision dtype replaced by float32."""
    if isinstance(config, dict):
        out = {}
        for key, value in config.items():
            if key == "dtype" and isinstance(value, str) and value in _LOW_PRECISION:
                value = "float32"
            elif (key == "dtype" and isinstance(value, dict)
                  and value.get("class_name") == "DTypePolicy"
                  and value.get("config", {}).get("name") in _LOW_PRECISION):
                value = {**value, "config": {**value["config"], "name": "float32"}}
            else:
                value = _float32_config(value)
            out[key] = value
        return out
    if isinstance(config, list):
        return [_float32_config(v) for v in config]
    return config


def float32_model(model: keras.Model) -> keras.Model:
    """The model itself when it computes in float32, else a float32 copy.

    A model built under a mixed-precision policy (bfloat16 / float16 compute,
    float32 weights) is rebuilt from its config with every layer in float32 and
    given the same weights, so an export computes in full precision whatever
    the training precision was.
    """
    config = model.get_config()
    converted = _float32_config(config)
    if converted == config:
        return model
    copy = model.__class__.from_config(converted)
    copy.set_weights(model.get_weights())
    return copy


def export_saved_model(
    model: keras.Model,
    export_dir: str,
    spec: PreprocessingSpec,
    metadata: Mapping[str, Any] | None = None,
    verify: bool = True,
    overwrite: bool = True,
    name: str | None = None,
    formats: tuple[str, ...] = (),
) -> str:
    """Writes ``model`` as a SavedModel with image and JPEG/PNG signatures.

    Args:
      model: a Keras model mapping a preprocessed batch to ``[N, d]`` embeddings.
        A mixed-precision model is exported as its float32 copy
        (`float32_model`), against which the export is also verified.
      export_dir: destination folder; an existing export there is replaced
        only once the new one is complete.
      spec: the evaluation preprocessing the signatures apply.
      metadata: extra JSON-serialisable facts to record (e.g. checkpoint, flags).
      verify: reload the written SavedModel and check it reproduces the
        model's embeddings before it replaces anything.
      overwrite: replace an earlier sst_tf export in ``export_dir``; a file,
        or a non-empty folder that is not an sst_tf export, is always refused.
      name: how error messages name ``export_dir`` (default ``--export_dir=PATH``).
      formats: ONNX / LiteRT files to write beside the SavedModel
        (`sst_tf.formats.FORMATS`), each checked in its runtime and listed
        in the record's "files".

    Returns:
      The absolute export path.

    Raises:
      UsageError: ``export_dir`` may not be written (checked before any work).
      ValueError: a format's converter or runtime is not installed.
    """
    name = name or f"--export_dir={export_dir}"
    check_output_dir(export_dir, name, "export", overwrite, legacy=legacy_export)
    formats_lib.check_available(formats)
    export_dir = os.path.abspath(export_dir)
    model = float32_model(model)
    dim = _embedding_dim(model)

    def embed(x):
        return {"embeddings": tf.cast(model(x, training=False), tf.float32)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    def serve_jpeg(images):
        s = spec.image_size
        decoded = tf.map_fn(
            lambda args: preprocess_image(decode_image_bytes(*args), spec),
            (images, tf.range(tf.shape(images)[0])),
            fn_output_signature=tf.TensorSpec([s, s, 3], tf.float32),
        )
        return embed(decoded)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="images")])
    def serve_images(images):
        return embed(preprocess_images(images, spec))

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve_jpeg", serve_jpeg)  # first endpoint = serving_default
    archive.add_endpoint("serve_images", serve_images)

    record = {
        "format": "sst_tf.export/1",
        "embedding_dim": dim,
        "preprocessing": spec.to_dict(),
        "signatures": {
            "serve_images": "float32 [N,H,W,3] RGB 0..255 -> {'embeddings': float32 [N,d]}",
            "serve_jpeg": "string [N] JPEG/PNG bytes -> {'embeddings': float32 [N,d]}",
            "serving_default": "serve_jpeg",
        },
        "metadata": dict(metadata or {}),
    }

    tmp = temp_dir_for(export_dir)
    try:
        archive.write_out(tmp, verbose=False)
        if verify:
            verify_export(model, tmp, spec)
        record["files"] = convert.write_formats(model, spec, tmp, formats, record)
        os.makedirs(os.path.join(tmp, "assets"), exist_ok=True)
        with open(os.path.join(tmp, "assets", SPEC_FILENAME), "w") as f:
            json.dump(record, f, indent=2, sort_keys=True)
        write_marker(tmp, "export", PROG)
        replace_dir(tmp, export_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logging.info("Exported SavedModel (embedding size %d) to %s", dim, export_dir)
    return export_dir


def legacy_export(folder: str) -> str | None:
    """Recognises exports written before folders carried a marker."""
    if os.path.isfile(os.path.join(folder, "assets", SPEC_FILENAME)):
        return "export"
    return None


def verify_export(model: keras.Model, path: str, spec: PreprocessingSpec) -> None:
    """Reloads ``path`` and checks ``serve_images`` against ``model``.

    Raises:
      RuntimeError: the reloaded export's embeddings differ from the model's.
    """
    rng = np.random.default_rng(0)
    side = spec.resize_size or spec.image_size
    images = rng.uniform(0, 255, size=(2, side, side, 3)).astype(np.float32)
    want = model(preprocess_images(images, spec), training=False).numpy()
    got = tf.saved_model.load(path).signatures["serve_images"](images=images)["embeddings"]
    err = float(np.max(np.abs(got.numpy() - want)))
    scale = max(1.0, float(np.max(np.abs(want))))
    if not err <= 1e-4 * scale:
        raise RuntimeError(
            f"export verification failed: reloaded SavedModel differs from the model by {err:g}"
        )


def load_export_info(export_dir: str, flag: str = "--export_dir") -> dict[str, Any]:
    """Reads the JSON record an export keeps in ``assets/``.

    Args:
      export_dir: the export folder.
      flag: how messages name the folder (e.g. ``--export_dir``, or the index
        that recorded it).

    Raises:
      FileNotFoundError: naming the folder when it is not an sst_tf export.
      ValueError: the record is not a JSON object (`read_json_object`).
    """
    path = os.path.join(export_dir, "assets", SPEC_FILENAME)
    if not os.path.isfile(os.path.join(export_dir, "saved_model.pb")):
        raise FileNotFoundError(
            f"no SavedModel at {flag}={export_dir} (saved_model.pb missing)"
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} missing: {flag}={export_dir} is not an sst_tf export")
    return read_json_object(path, f"{flag}={export_dir}")


# -- training runs -------------------------------------------------------------


def spec_for_config(config) -> PreprocessingSpec:
    """The preprocessing of a training run's evaluation (models scale inside)."""
    return PreprocessingSpec(
        image_size=config.image_size, resize_size=config.resize_size, scaling="raw"
    )


def load_run_config(model_dir: str):
    """The `TrainConfig` a run saved in ``MODEL_DIR/config.json``.

    Raises:
      FileNotFoundError: naming ``--model_dir`` when it holds no run.
      ValueError: its config.json is not a JSON object (`read_json_object`).
    """
    path = RunFolder(model_dir).config
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"--model_dir={model_dir} holds no config.json: not an sst_tf training run"
        )
    saved = read_json_object(path, f"--model_dir={model_dir}")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    kwargs = {**ADDED_MODEL_FLAGS, **{k: v for k, v in saved.items() if k in known}}
    if "recall_ks" in kwargs:
        kwargs["recall_ks"] = tuple(kwargs["recall_ks"])
    kwargs["model_dir"] = model_dir
    return TrainConfig(**kwargs)


def find_checkpoint(model_dir: str, checkpoint: str | None = None) -> str:
    """Resolves a checkpoint of a run: latest, a number (epoch) or a path prefix.

    Raises:
      FileNotFoundError: naming the flag and what was looked for.
    """
    ckpt_dir = RunFolder(model_dir).checkpoints
    if not checkpoint:
        path = tf.train.latest_checkpoint(ckpt_dir)
        if not path:
            raise FileNotFoundError(f"--model_dir={model_dir}: no checkpoint in {ckpt_dir}")
        return path
    path = os.path.join(ckpt_dir, f"ckpt-{checkpoint}") if checkpoint.isdigit() else checkpoint
    if not tf.io.gfile.exists(path + ".index"):
        available = sorted(
            os.path.basename(p)[: -len(".index")]
            for p in tf.io.gfile.glob(os.path.join(ckpt_dir, "*.index"))
        )
        raise FileNotFoundError(
            f"--checkpoint={checkpoint}: {path}.index not found (available: {available})"
        )
    return path


class CheckpointError(ValueError):
    """A run's checkpoint cannot be read into its model (names the checkpoint)."""


def restore_model(model_dir: str, checkpoint: str | None = None):
    """Rebuilds a run's model from its config and restores a checkpoint.

    Returns:
      ``(model, config, checkpoint_path)``.
    """
    config = load_run_config(model_dir)
    path = find_checkpoint(model_dir, checkpoint)
    # The checkpoint holds the weights: no ImageNet download.
    model = model_lib.build_model(**config.model_options(pretrained=False))
    try:
        status = tf.train.Checkpoint(model=model).restore(path)
        status.expect_partial()  # optimizer slots and loop state are not needed
        status.assert_existing_objects_matched()
    except (tf.errors.OpError, IndexError, AssertionError, ValueError) as e:
        detail = (getattr(e, "message", "") or str(e)).strip().splitlines()
        raise CheckpointError(
            f"checkpoint {path} of --model_dir={model_dir} cannot be restored (truncated, "
            f"corrupt or from another model: {type(e).__name__}: "
            f"{detail[0] if detail else ''}); pass --checkpoint=N for another epoch"
        ) from e
    logging.info("Restored %s", path)
    return model, config, path


def export_run(
    model_dir: str,
    checkpoint: str | None = None,
    export_dir: str | None = None,
    overwrite: bool = True,
    formats: tuple[str, ...] = (),
) -> str:
    """Exports a run's checkpoint (default: latest) to ``MODEL_DIR/export``.

    ``overwrite``, ``formats`` and the refusal of folders sst_tf did not
    write are those of `export_saved_model`; the target and the formats'
    packages are checked before the model is restored.
    """
    target = export_dir or RunFolder(model_dir).export
    name = (f"--export_dir={export_dir}" if export_dir else
            f"the default export folder {target} (MODEL_DIR/export)")
    check_output_dir(target, name, "export", overwrite, legacy=legacy_export)
    formats_lib.check_available(formats)
    model, config, path = restore_model(model_dir, checkpoint)
    return export_saved_model(
        model,
        target,
        spec_for_config(config),
        metadata=run_metadata(config, path, _calibrated_thresholds(model_dir, path)),
        overwrite=overwrite,
        name=name,
        formats=formats,
    )


def run_metadata(config, checkpoint_path: str | None,
                 thresholds: Mapping[str, float] | None = None) -> dict[str, Any]:
    """What an export records about the run it came from.

    Args:
      config: the run's `TrainConfig`.
      checkpoint_path: the checkpoint exported.
      thresholds: the same / different distance thresholds calibrated at the
        end of the run (`sst_tf.calibration`: "best_f1", "fmr=0.01", ...),
        recorded when they belong to this checkpoint.
    """
    out = {
        "checkpoint": os.path.basename(checkpoint_path) if checkpoint_path else None,
        "config": {k: v for k, v in dataclasses.asdict(config).items() if k != "model_dir"},
    }
    if thresholds:
        out["thresholds"] = {str(k): float(v) for k, v in thresholds.items()}
    return out


def _calibrated_thresholds(model_dir: str, checkpoint_path: str | None) -> dict | None:
    """The run's calibrated thresholds when `checkpoint_path` is the run's last checkpoint."""
    folder = RunFolder(model_dir)
    if not checkpoint_path or checkpoint_path != tf.train.latest_checkpoint(folder.checkpoints):
        return None
    try:
        with open(folder.metrics) as f:
            metrics = json.load(f)
        thresholds = metrics["calibration"]["thresholds"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return thresholds if isinstance(thresholds, dict) else None


class ExportError(RuntimeError):
    """The end-of-training export failed; metrics.json and the checkpoints are written.

    Attributes:
      metrics: the run's metrics (as in metrics.json), set by `Trainer.fit`.
    """

    metrics: dict | None = None


def export_trained_run(
    model: keras.Model,
    config,
    test_split: Split,
    test_embeddings: np.ndarray,
    checkpoint_path: str | None,
    thresholds: Mapping[str, float] | None = None,
) -> None:
    """Writes MODEL_DIR/export (SavedModel) and MODEL_DIR/projector (test split).

    The SavedModel computes in float32 whatever --mixed_precision was
    (`float32_model`).

    Args:
      model: the trained model.
      config: the run's `TrainConfig`.
      test_split: the test split (the projector's points).
      test_embeddings: its embeddings by `model`, [N, d].
      checkpoint_path: the checkpoint the model holds (recorded in the export).
      thresholds: the run's calibrated thresholds (recorded in the export).

    Raises:
      ExportError: either part failed (one line: what, and how to retry).
      outputs.DiskFullError: the disk is full (naming the folder).
    """
    folder = RunFolder(config.model_dir)
    export_dir = folder.export
    formats = formats_lib.parse_formats(config.export_formats)
    retry = f"python -m sst_tf.export --model_dir={config.model_dir}"
    kept = (f"metrics.json and the checkpoints in {folder.checkpoints} are kept; "
            f"retry the export with: {retry}"
            + (f" --formats=savedmodel,{','.join(formats)} (or without --formats for the "
               "SavedModel alone)" if formats else ""))
    try:
        with disk_full_guard(export_dir):
            export_saved_model(model, export_dir, spec_for_config(config),
                               metadata=run_metadata(config, checkpoint_path, thresholds),
                               formats=formats)
    except DiskFullError:
        raise
    except Exception as e:
        raise ExportError(
            f"training finished but the SavedModel export to {export_dir} failed "
            f"({_first_line(e)}); {kept}") from e
    proj_dir = folder.projector
    try:
        with disk_full_guard(proj_dir):
            projector.write_split_projector(proj_dir, test_split, test_embeddings, seed=config.seed)
    except DiskFullError:
        raise
    except Exception as e:
        raise ExportError(
            f"training finished but writing the projector files to {proj_dir} failed "
            f"({_first_line(e)}); metrics.json, the checkpoints and {export_dir} are "
            "kept") from e


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


@cli.entry_point(PROG, quiet_info=True)
def main(argv) -> int:
    """Entry point: ``python -m sst_tf.export --model_dir=RUN [--checkpoint=N]``."""
    cli.check_usage(argv, FLAGS, required=["model_dir"], folders=["model_dir"])
    try:
        formats = formats_lib.parse_formats(FLAGS.formats)
        formats_lib.check_available(formats)
    except ValueError as e:
        raise cli.UsageError(f"--formats: {e}" if "--formats" not in str(e) else str(e)) from e
    try:
        path = export_run(FLAGS.model_dir, FLAGS.checkpoint, FLAGS.export_dir, FLAGS.overwrite,
                          formats)
    except (FileNotFoundError, ValueError) as e:
        raise cli.UsageError(str(e)) from e
    except RuntimeError as e:  # the written export does not reproduce the model
        raise cli.RunError(str(e)) from e
    except OSError as e:  # no permission, disk full, ...
        raise cli.RunError(f"writing the export failed: {e}") from e
    info = load_export_info(path)
    print(
        f"Exported {info['metadata']['checkpoint']} ({info['embedding_dim']}-d embeddings) "
        f"to {path}"
    )
    for file, facts in info.get("files", {}).items():
        print(f"  {file}: {facts['format']}, input {facts['input']}, "
              f"{facts['bytes'] / 1e6:.2f} MB, max |difference| to the model "
              f"{facts['max_abs_diff']:.1e}")
    return 0


if __name__ == "__main__":
    cli.run(main)
