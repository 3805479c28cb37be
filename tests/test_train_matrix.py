"""`sst_tf.train` end to end: runs that together use every value of every choice flag.

Each run trains one epoch on a few 8 x 8 digits images (a --dataset=folder
tree written here) and must exit 0 with a finite metrics.json and a SavedModel
that reloads in this process and reproduces the run's own test embeddings
(those of its projector files). The runs share one subprocess, whose CPU is
split into two logical devices for --strategy=mirrored. One more run makes
the export fail: it must keep metrics.json and say so in one error line.
"""

import importlib.util
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import load_digits

from sst_tf import convert, pipeline
from sst_tf import model as model_lib
from sst_tf.config import (
    KMEANS_METHODS,
    LOSSES,
    NEIGHBORHOODS,
    NPAIRS_PAIRS,
    PRECISIONS,
    REFRESH_MODES,
    SAMPLERS,
    SST_IMPOSTERS,
)
from sst_tf.formats import FORMATS, INPUTS, file_name

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# One worker builds the runs once (pyproject.toml: --dist loadgroup).
pytestmark = pytest.mark.xdist_group("train_matrix")
STRATEGIES = ("default", "mirrored")  # multi_worker: tests/test_distribute.py
CHOICES = {"loss": LOSSES, "sampler": SAMPLERS, "neighborhoods": NEIGHBORHOODS,
           "mixed_precision": PRECISIONS, "strategy": STRATEGIES, "refresh": REFRESH_MODES,
           "kmeans": KMEANS_METHODS}
TRAIN_PER_CLASS, TEST_PER_CLASS = 8, 4
# Options that apply to one loss ride on the matrix run of that loss. SST's
# paper form (raw embeddings, mean over triplets), beside an extra run of the
# softmax form at another scale: every --sst_imposters value given explicitly;
# N-pairs with one pair per class, beside an extra run of every row an anchor.
# Negatives beyond one batch (docs/scaling.md), on two replicas: the global
# batch for every replica's loss and the cross-batch memory with a warm-up
# (the two combine).
# float16's loss scale starts at 2^15: the margin losses (logits scaled by 30-64)
# overflow and skip about six steps first (docs/scaling.md), more than a
# matrix run has, so they take bfloat16 (float16 runs with other losses).
# Every ONNX / LiteRT format from the trainer's end-of-run export (with the
# extras installed; requirements-dev.txt has them).
EXTRAS = all(importlib.util.find_spec(m) for m in ("tf2onnx", "onnxruntime", "ai_edge_litert"))
OVERLAYS = {
    "sst": {"normalize": False, "sst_imposters": "mean"},
    **({"contrastive": {"export_formats": ",".join(FORMATS)}} if EXTRAS else {}),
    "cosface": {"mixed_precision": "bfloat16"},
    # The head's batch norm given against each loss's default (on for the margin
    # losses, off for the others).
    "arcface": {"embedding_batchnorm": False},
    "circle": {"embedding_batchnorm": True},
    # Two augmented views of each image (SimCLR's and SupCon's batches).
    "ntxent": {"views": 2},
    "subcenter_arcface": {"mixed_precision": "bfloat16"},
    "multi_similarity": {"strategy": "mirrored", "global_negatives": True, "memory_size": 30,
                         "memory_warmup_steps": 1},
    "npairs": {"npairs_pairs": "per_class"},
}
# Extra runs: a loss option's other values, given explicitly.
OPTION_RUNS = {
    "sst_softmax": {"loss": "sst", "normalize": True, "sst_imposters": "softmax",
                    "sst_scale": 8.0},
    "npairs_all": {"loss": "npairs", "npairs_pairs": "all"},
}


def matrix() -> list[dict]:
    """As few runs as the longest choice list; every value of every flag at least once.

    Samplers cycle within each precision (every sampler meets every
    precision); the local sampler's options cycle over the local runs.
    """
    runs, local = [], 0
    for i in range(max(len(v) for v in CHOICES.values())):
        run = {"loss": LOSSES[i % len(LOSSES)], "sampler": SAMPLERS[i % len(SAMPLERS)],
               "mixed_precision": PRECISIONS[(i // len(SAMPLERS)) % len(PRECISIONS)],
               "strategy": STRATEGIES[i % len(STRATEGIES)]}
        if run["sampler"] == "local":
            run.update(neighborhoods=NEIGHBORHOODS[local % len(NEIGHBORHOODS)],
                       refresh=REFRESH_MODES[local % len(REFRESH_MODES)],
                       kmeans=KMEANS_METHODS[(local // 2) % len(KMEANS_METHODS)])
            local += 1
        runs.append({**run, **OVERLAYS.get(run["loss"], {})})
    return runs


def _matrix_run(loss: str) -> str:
    """The name of the matrix run that trains `loss`."""
    return f"run{[run['loss'] for run in matrix()].index(loss)}"


def _write_digits(root) -> dict:
    """A folder data set of digits PNGs: DIR/{train,test}/<digit>/NNN.png.

    Returns:
      {split: [RGB image]} and {split: [(class name, file name)]} in split order.
    """
    bunch = load_digits()
    images, names = {"train": [], "test": []}, {"train": [], "test": []}
    for digit in range(10):
        rows = np.flatnonzero(bunch.target == digit)[:TRAIN_PER_CLASS + TEST_PER_CLASS]
        for j, row in enumerate(rows):
            split = "train" if j < TRAIN_PER_CLASS else "test"
            gray = np.round(bunch.images[row] * (255 / 16)).astype(np.uint8)
            rgb = np.repeat(gray[:, :, None], 3, axis=2)
            folder = root / split / str(digit)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{j:03d}.png").write_bytes(tf.io.encode_png(rgb).numpy())
            images[split].append(rgb)  # split order: sorted classes, sorted files
            names[split].append((str(digit), f"{j:03d}.png"))
    return images, names


def _finite(tree) -> bool:
    if isinstance(tree, dict):
        return all(_finite(v) for v in tree.values())
    return isinstance(tree, (int, float)) and math.isfinite(tree)


def test_matrix_covers_every_value_of_every_choice_flag():
    runs = matrix()
    for flag, values in CHOICES.items():
        assert {run[flag] for run in runs if flag in run} == set(values), flag
    assert len(runs) == max(len(v) for v in CHOICES.values())


@pytest.fixture(scope="module")
def matrix_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("matrix")
    images, names = _write_digits(tmp / "data")
    common = [f"--data_dir={tmp / 'data'}", "--dataset=folder", "--backbone=small_cnn",
              "--nopretrained", "--image_size=8", "--resize_size=8", "--norandom_flip",
              "--embedding_dim=8", "--batch_size=20", "--samples_per_class=4",
              "--num_targets=3", "--epochs=1", "--lr=1e-3", "--noprogress",
              "--nocalibrate"]  # the thresholds: test_train.py, test_trainer.py, test_export.py
    runs = [{"name": f"run{i}", "choices": choices,
             "flags": [*common, f"--model_dir={tmp / f'run{i}'}",
                       *(f"--{k}={v}" for k, v in choices.items())]}
            for i, choices in enumerate(matrix())]
    runs.append({"name": "export_fails", "choices": {}, "fail_export": True,
                 "flags": [*common, f"--model_dir={tmp / 'export_fails'}"]})
    # --backbone_weights: a file of zero backbone weights, so the untrained export
    # maps every image to the zero head bias (an epoch from zero weights moves nothing: every
    # gradient is zero); random weights would not.
    zero = model_lib.build_model("small_cnn", weights=None, embedding_dim=8, image_size=8)
    backbone = zero.get_layer(model_lib.BACKBONE_LAYER)
    backbone.set_weights([np.zeros_like(w) for w in backbone.get_weights()])
    model_lib.save_backbone_weights(zero, str(tmp / "zero.weights.h5"))
    runs.append({"name": "backbone_weights", "choices": {},
                 "flags": [*common, f"--model_dir={tmp / 'backbone_weights'}",
                           f"--backbone_weights={tmp / 'zero.weights.h5'}"]})
    for name, choices in OPTION_RUNS.items():
        runs.append({"name": name, "choices": choices,
                     "flags": [*common, f"--model_dir={tmp / name}",
                               *(f"--{k}={v}" for k, v in choices.items())]})
    with open(tmp / "runs.json", "w") as f:
        json.dump(runs, f)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "_train_matrix.py"),
                           str(tmp / "runs.json")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    return tmp, runs, json.loads(line[len("RESULT"):]), (images, names)


@pytest.mark.parametrize("index", range(len(matrix())))
def test_every_run_exits_0_with_finite_metrics_and_a_reloadable_export(matrix_runs, index):
    tmp, runs, results, (images, names) = matrix_runs
    run = runs[index]
    result, choices, model_dir = results[run["name"]], run["choices"], tmp / run["name"]
    assert result["code"] == 0 and not result["traceback"], (choices, result)
    assert result["replicas"] == (2 if choices["strategy"] == "mirrored" else 1)
    with open(model_dir / "config.json") as f:
        config = json.load(f)
    assert {k: config[k] for k in choices} == choices  # the flags reached the run
    with open(model_dir / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics["train"]["epochs_run"] == 1
    assert _finite(metrics["before"]) and _finite(metrics["after"])
    assert _finite(metrics["train"]["final_loss"])

    serve = tf.saved_model.load(str(model_dir / "export")).signatures["serve_images"]
    test = np.stack(images["test"]).astype(np.float32)
    got = serve(images=tf.constant(test))["embeddings"].numpy()
    assert got.shape == (len(test), 8) and np.isfinite(got).all()
    # The run's own test embeddings (its model, the evaluation pipeline):
    # equal in float32; within mixed-precision round-off of the float32 export.
    reader = tf.train.load_checkpoint(str(model_dir / "projector"))
    want = reader.get_tensor("embedding/.ATTRIBUTES/VARIABLE_VALUE")
    with open(model_dir / "projector" / "metadata.tsv") as f:  # rows: class, file
        rows = [row.split("\t") for row in f.read().splitlines()[1:]]
    order = [names["test"].index((label, os.path.basename(file))) for label, file in rows]
    tol = 1e-4 if choices["mixed_precision"] == "none" else 0.05
    np.testing.assert_allclose(got[order], want, atol=tol * max(1.0, np.abs(want).max()))


@pytest.mark.skipif(not EXTRAS, reason="the onnx and litert extras are not installed")
def test_export_formats_of_a_run_give_its_savedmodels_embeddings(matrix_runs):
    tmp, _, _, (images, _) = matrix_runs
    export = tmp / _matrix_run("contrastive") / "export"
    serve = tf.saved_model.load(str(export)).signatures["serve_images"]
    test = np.stack(images["test"]).astype(np.float32)
    want = serve(images=tf.constant(test))["embeddings"].numpy()
    with open(export / "assets" / "sst_tf_export.json") as f:
        record = json.load(f)
    spec = record["preprocessing"]
    crops = np.stack([pipeline.eval_preprocess(tf.constant(im), pipeline.ImageOptions(
        spec["image_size"], spec["resize_size"])).numpy() for im in test])
    for fmt in FORMATS:
        for kind in INPUTS:
            name = file_name(fmt, kind)
            assert name in record["files"]
            got = convert.load_file(str(export / name))(test if kind == "images" else crops)
            tol = 0.05 if fmt == "litert_int8" else 1e-4
            np.testing.assert_allclose(got, want, atol=tol * max(1.0, np.abs(want).max()),
                                       err_msg=name)


def test_a_failed_export_keeps_metrics_and_ends_with_one_error_line(matrix_runs):
    tmp, _, results, _ = matrix_runs
    result, model_dir = results["export_fails"], tmp / "export_fails"
    assert result["code"] == 1 and not result["traceback"]
    [line] = result["error_lines"]
    assert line.startswith("sst_tf.train: error: ")
    assert "export verification failed: injected by the test" in line
    assert "metrics.json" in line and f"python -m sst_tf.export --model_dir={model_dir}" in line
    with open(model_dir / "metrics.json") as f:
        metrics = json.load(f)
    assert _finite(metrics["before"]) and _finite(metrics["after"])
    assert tf.train.latest_checkpoint(str(model_dir / "checkpoints"))
    assert not (model_dir / "export").exists()


def test_backbone_weights_file_starts_the_run_and_reaches_the_export(matrix_runs):
    tmp, _, results, (images, _) = matrix_runs
    result, model_dir = results["backbone_weights"], tmp / "backbone_weights"
    assert result["code"] == 0 and not result["traceback"], result
    with open(model_dir / "config.json") as f:
        assert json.load(f)["backbone_weights"] == str(tmp / "zero.weights.h5")
    serve = tf.saved_model.load(str(model_dir / "export")).signatures["serve_images"]
    test = np.stack(images["test"]).astype(np.float32)
    got = serve(images=tf.constant(test))["embeddings"].numpy()
    np.testing.assert_array_equal(got, np.zeros_like(got))


def _finished_with_these_flags(result, model_dir, choices) -> dict:
    """Asserts a run exited 0 with its flags in config.json and finite metrics; its metrics."""
    assert result["code"] == 0 and not result["traceback"], (model_dir, result)
    with open(model_dir / "config.json") as f:
        config = json.load(f)
    assert {k: config[k] for k in choices} == choices  # the flags reached the run
    with open(model_dir / "metrics.json") as f:
        metrics = json.load(f)
    assert _finite(metrics["after"]) and _finite(metrics["train"]["final_loss"])
    return metrics


def test_every_sst_option_value_trains_end_to_end(matrix_runs):
    tmp, _, results, _ = matrix_runs
    sst_runs = {_matrix_run("sst"): {"loss": "sst", **OVERLAYS["sst"]},
                "sst_softmax": OPTION_RUNS["sst_softmax"]}
    assert {c["sst_imposters"] for c in sst_runs.values()} == set(SST_IMPOSTERS)
    for name, choices in sst_runs.items():
        model_dir = tmp / name
        metrics = _finished_with_these_flags(results[name], model_dir, choices)
        want_scale = choices.get("sst_scale", 1.0)
        params = metrics["settings"]["params"]
        assert (params["scale"], params["imposters"]) == (want_scale, choices["sst_imposters"])
        assert (model_dir / "export" / "saved_model.pb").is_file()


def test_every_npairs_pairs_value_trains_end_to_end(matrix_runs):
    tmp, _, results, _ = matrix_runs
    runs = {_matrix_run("npairs"): {"loss": "npairs", **OVERLAYS["npairs"]},
            "npairs_all": OPTION_RUNS["npairs_all"]}
    assert {c["npairs_pairs"] for c in runs.values()} == set(NPAIRS_PAIRS)
    for name, choices in runs.items():
        metrics = _finished_with_these_flags(results[name], tmp / name, choices)
        assert metrics["settings"]["params"]["pairs"] == choices["npairs_pairs"]
        assert (tmp / name / "export" / "saved_model.pb").is_file()


def test_negatives_beyond_one_batch_train_end_to_end_on_two_replicas(matrix_runs):
    tmp, _, results, _ = matrix_runs
    name = _matrix_run("multi_similarity")
    _finished_with_these_flags(results[name], tmp / name, OVERLAYS["multi_similarity"])
    assert results[name]["replicas"] == 2
    assert (tmp / name / "export" / "saved_model.pb").is_file()
    # The memory is in the run's checkpoint, filled after its warm-up step.
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(tmp / name / "checkpoints")))
    [valid] = [k for k in reader.get_variable_to_shape_map()
               if "cross_batch_memory" in k and "valid" in k]
    assert reader.get_tensor(valid).sum() > 0
