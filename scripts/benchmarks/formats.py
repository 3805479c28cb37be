"""Benchmark section `formats`: the ONNX and LiteRT files against the SavedModel.

Two models: the digits demo trained as `configs/digits.cfg` says (its test
MAP@R through every file, so the int8 file's change in MAP@R is measured), and
the paper's InceptionV3 (random weights, 299 x 299: size and latency only).
Each file is timed in its own runtime on the same images as the SavedModel's
`serve_images` (the `images` files) or the model's input after the resize and
crop (the `crop` files), one image and a batch of 32, after warm-up calls.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

import numpy as np

from benchmarks.common import ROOT, timed


def _folder_bytes(path: str, skip: tuple[str, ...] = ()) -> int:
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files if f not in skip)
    return total


def _ms_per_image(fn, images: np.ndarray, repeats: int) -> float:
    return 1000 * statistics.median(timed(lambda: fn(images), repeats)) / len(images)


def _digits_model(epochs: int):
    """The digits demo trained for `epochs` epochs: (model, config, test split)."""
    import dataclasses

    from sst_tf import train as train_cli
    from sst_tf.trainer import Trainer

    train_cli.FLAGS([sys.argv[0], f"--flagfile={ROOT / 'configs' / 'digits.cfg'}",
                     "--model_dir=unused", "--noprogress"])
    cfg = dataclasses.replace(train_cli.config_from_flags(), epochs=epochs, export=False,
                              calibrate=False, model_dir=tempfile.mkdtemp(prefix="sst_fmt_"))
    trainer = Trainer(cfg)
    trainer.fit()
    return trainer.model, cfg, trainer.dataset.test


def _rows(name: str, model, spec, images: np.ndarray, labels: np.ndarray | None,
          repeats: int) -> list[str]:
    import tensorflow as tf

    from sst_tf import convert, evaluation, formats, pipeline
    from sst_tf import export as ex

    folder = os.path.join(tempfile.mkdtemp(prefix="sst_fmt_"), "export")
    t0 = time.perf_counter()
    ex.export_saved_model(model, folder, spec, formats=formats.FORMATS)
    convert_s = time.perf_counter() - t0
    record = ex.load_export_info(folder)
    serve = tf.saved_model.load(folder).signatures["serve_images"]
    options = spec.image_options()
    crops = tf.map_fn(lambda im: pipeline.eval_preprocess(im, options),
                      tf.constant(images, tf.float32)).numpy()

    def saved(x):
        return serve(images=tf.constant(x))["embeddings"].numpy()

    runners = {"SavedModel": ("images", saved)}
    for file, facts in record["files"].items():
        runners[file] = (facts["input"],
                         convert.load_file(os.path.join(folder, file), threads=1))
    sizes = {"SavedModel": _folder_bytes(folder, skip=tuple(record["files"]))}
    sizes.update({f: facts["bytes"] for f, facts in record["files"].items()})
    want = saved(images)
    base_map = None
    out = []
    base = {}
    for key, (kind, fn) in runners.items():
        x = images if kind == "images" else crops
        emb = np.concatenate([fn(x[i:i + 256]) for i in range(0, len(x), 256)])
        one = _ms_per_image(fn, x[:1], repeats)
        batch = _ms_per_image(fn, x[:32], max(2, repeats // 4))
        if key == "SavedModel":
            base = {"one": one, "batch": batch, "size": sizes[key]}
        diff = float(np.max(np.abs(emb - want)) / np.max(np.abs(want)))
        cells = [name, key, kind, f"{sizes[key] / 1e6:.2f}", f"{sizes[key] / base['size']:.2f}",
                 f"{one:.2f}", f"{one / base['one']:.2f}", f"{batch:.2f}",
                 f"{batch / base['batch']:.2f}", f"{diff:.1e}"]
        if labels is not None:
            m = evaluation.evaluate(emb, labels, (1,), seed=0)["map@r"]
            base_map = m if base_map is None else base_map
            cells += [f"{m:.4f}", f"{m - base_map:+.4f}"]
        else:
            cells += ["-", "-"]
        out.append("| " + " | ".join(cells) + " |")
    note = [name, "(writing all six files, checking each)", *[""] * 7, f"{convert_s:.0f} s",
            "", ""]
    out.append("| " + " | ".join(note) + " |")
    return out


def bench_formats(args) -> str:
    """Runs `formats_child` in a fresh process (one thread for every runtime)."""
    import json
    import subprocess

    from benchmarks.common import SCRIPT

    cmd = [sys.executable, str(SCRIPT), "--_formats_child", f"--repeats={args.repeats}",
           f"--formats_epochs={args.formats_epochs}", f"--formats_models={args.formats_models}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"the formats section's child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def formats_child(args) -> str:
    """Size, latency and embeddings of every export format against the SavedModel.

    Call before TensorFlow runs anything: TensorFlow, onnxruntime and LiteRT
    each get one thread.
    """
    import keras
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)

    from sst_tf import export as ex
    from sst_tf import model as model_lib

    rows = ["| model | file | input | MB | size / SavedModel | ms per image, batch 1 | "
            "/ SavedModel | ms per image, batch 32 | / SavedModel | largest difference "
            "to the SavedModel (relative) | test MAP@R | change |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    models = [m.strip() for m in args.formats_models.split(",") if m.strip()]
    if "digits" in models:
        model, cfg, test = _digits_model(args.formats_epochs)
        images = test.images.astype(np.float32)
        rows += _rows(f"digits demo ({args.formats_epochs} epochs)", model,
                      ex.spec_for_config(cfg), images, test.labels, args.repeats)
        keras.backend.clear_session()
    if "inception_v3" in models:
        inception = model_lib.build_model("inception_v3", weights=None, embedding_dim=512,
                                          normalize=False, image_size=299)
        rng = np.random.default_rng(0)
        photos = rng.uniform(0, 255, (32, 340, 420, 3)).astype(np.float32)
        rows += _rows("InceptionV3, 299 (random weights)", inception,
                      ex.PreprocessingSpec(image_size=299, resize_size=320), photos, None,
                      max(3, args.repeats // 3))
    return "\n".join([
        "### ONNX and LiteRT files against the SavedModel",
        "",
        "Each file run by its own runtime (onnxruntime, the LiteRT interpreter), the "
        "SavedModel by TensorFlow, each on one thread, on the same images: `images` files "
        "take the RGB images (digits: 32 x 32; InceptionV3: 32 photos-sized 340 x 420 random "
        "images) and resize and crop inside, `crop` files take the model's input after the "
        "export's resize and crop. Median of timed calls after two warm-up calls. Size: the "
        "SavedModel's folder without the other files. int8: dynamic-range quantisation "
        "(int8 weights, float32 activations). Difference: the largest absolute difference of "
        "an embedding coordinate over the largest absolute coordinate of the SavedModel's. "
        "MAP@R: the digits test split embedded by each file, change against the "
        "SavedModel's.",
        "",
        *rows,
        "",
    ])
