"""Bad input on every command: one error line, the right exit code, nothing of the user's lost.

Each case of `CASES` is a row of docs/errors.md (its id is the row's test).
The commands' `main` functions run in this process on flags parsed by absl
into a fresh `FlagValues` (or the global one for train), so
TensorFlow starts once; the few things only a real process shows (a closed
pipe, start-up logs, a fast --help) run in subprocesses.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
from _entry_points import run_main
from _scripts import load_script
from _tiny_data import small_run
from absl import flags
from PIL import Image

from sst_tf import calibrate, cli, embed, report, search, train, verify, visualize
from sst_tf import export as ex
from sst_tf.outputs import MARKER

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USER_TEXT = "a file the user wrote\n"


_PREPARE = load_script("prepare_data")


def _user_file(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(USER_TEXT)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A small run with checkpoint and export, an index, and the wrong inputs around them."""
    base = tmp_path_factory.mktemp("cli")
    w = {"tmp": str(base), "nowhere": str(base / "nowhere"), "repo": REPO}
    # A run as sst_tf.train leaves it: config.json, checkpoints/, export/, metrics.json.
    run = base / "run"
    small_run(run)
    metrics = {"recall@1": 0.5, "recall@2": 0.6, "nmi": 0.4, "map@r": 0.2, "r_precision": 0.3}
    (run / "metrics.json").write_text(json.dumps({"before": metrics, "after": metrics}))
    w["run"], w["export"] = str(run), ex.export_run(str(run))
    # Broken runs.
    for name in ("trunc", "badcfg", "nockpt"):
        os.makedirs(base / name)
    shutil.copytree(run / "checkpoints", base / "trunc" / "checkpoints")
    shutil.copy(run / "config.json", base / "trunc" / "config.json")
    data = next((base / "trunc" / "checkpoints").glob("*.data-*"))
    with open(data, "r+b") as f:
        f.truncate(os.path.getsize(data) // 2)
    (base / "badcfg" / "config.json").write_text('{"dataset": "dig')
    # A run with a checkpoint to resume whose config.json was cut short.
    shutil.copytree(run / "checkpoints", base / "resumebadcfg" / "checkpoints")
    (base / "resumebadcfg" / "config.json").write_text('{"dataset": "dig')
    shutil.copy(run / "config.json", base / "nockpt" / "config.json")
    os.makedirs(base / "badmetrics")
    (base / "badmetrics" / "metrics.json").write_text('{"before": {"recall@1": 0.')
    # A run of ours whose export/ folder holds a user's file.
    shutil.copytree(base / "nockpt", base / "userexport")
    _user_file(str(base / "userexport" / "export" / "notes.txt"))
    # The user's own folder and files, which no command may touch.
    w["user"] = str(base / "user")
    w["user_file"] = _user_file(str(base / "user" / "notes.txt"))
    w["userfile"] = _user_file(str(base / "userfile.txt"))
    w["user_npz"] = _user_file(str(base / "mine.npz"))
    w["user_json"] = _user_file(str(base / "mine.json"))
    # Images: good ones, an empty folder, a folder of undecodable files.
    rng = np.random.default_rng(0)
    for i in range(6):
        os.makedirs(base / "imgs", exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(
            base / "imgs" / f"im{i}.png")
    os.makedirs(base / "empty")
    os.makedirs(base / "garbage")
    (base / "garbage" / "a.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (base / "garbage" / "b.png").write_bytes(b"")
    w.update(imgs=str(base / "imgs"), empty=str(base / "empty"), garbage=str(base / "garbage"))
    # A labelled folder of one class.
    shutil.copytree(base / "imgs", base / "oneclass" / "only")
    # Indexes: a good one, one whose export moved away, a text file, a bare array.
    embedder = embed.Embedder(w["export"])
    paths, emb, _ = embed.embed_files(embedder, embed.list_images(w["imgs"]), progress=False)
    w["index"] = str(base / "index.npz")
    embed.save_index(w["index"], paths, emb, w["export"], fingerprint=embedder.fingerprint())
    w["moved"] = str(base / "moved.npz")
    embed.save_index(w["moved"], paths, emb, str(base / "gone" / "export"))
    w["text_index"] = str(base / "index.txt")
    (base / "index.txt").write_text("path,embedding\n")
    w["npy_index"] = str(base / "arr.npy")
    np.save(w["npy_index"], emb)
    # An export of another embedding size.
    inp = keras.Input((16, 16, 3))
    other = keras.Model(inp, keras.layers.Dense(4)(keras.layers.Flatten()(inp)))
    w["export4"] = ex.export_saved_model(other, str(base / "export4"),
                                         ex.PreprocessingSpec(image_size=16), verify=False)
    # Another model of the index's embedding size.
    other8 = keras.Model(inp, keras.layers.Dense(8)(keras.layers.Flatten()(inp)))
    w["export8"] = ex.export_saved_model(other8, str(base / "export8"),
                                         ex.PreprocessingSpec(image_size=16), verify=False)
    os.makedirs(base / "dl")
    (base / "dl" / "car_ims.tgz").write_bytes(b"")
    w["dl"] = str(base / "dl")
    # A folder data set whose training classes all hold one image.
    for split, per_class in (("train", 1), ("test", 2)):
        for c in range(3):
            os.makedirs(base / "singles" / split / f"c{c}")
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(
                    base / "singles" / split / f"c{c}" / f"{i}.png")
    w["singles"] = str(base / "singles")
    # A run whose folder data set moved away since training.
    shutil.copytree(run, base / "moved_run")
    moved_cfg = json.loads((run / "config.json").read_text())
    moved_cfg.update(model_dir=str(base / "moved_run"), dataset="folder",
                     data_dir=str(base / "gone_data"))
    (base / "moved_run" / "config.json").write_text(json.dumps(moved_cfg))
    w["moved_run"] = str(base / "moved_run")
    return {k: str(v) for k, v in w.items()}


def _error_lines(err):
    return [ln for ln in err.splitlines() if ": error: " in ln]


def run_global(prog, main, argv, capsys):
    """The same for train, whose flags live in the global FlagValues."""
    flags.FLAGS.unparse_flags()
    try:
        main(cli.parse_flags([prog, *argv], prog))
        code = 0
    except SystemExit as e:
        code = e.code
    finally:
        flags.FLAGS.unparse_flags()
    out, err = capsys.readouterr()
    return code, out, err


def run_benchmark(argv, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["benchmark.py", *argv])
    try:
        load_script("benchmark").main()
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


MODULES = {"export": ex, "embed": embed, "search": search, "report": report,
           "visualize": visualize, "verify": verify, "calibrate": calibrate}
PROGS = {**{k: m.PROG for k, m in MODULES.items()}, "train": "sst_tf.train",
         "prepare_data": "prepare_data.py", "benchmark": "benchmark.py"}
DIGITS = "--flagfile={repo}/configs/digits.cfg"

# (id, command, argv, exit code, words the error line contains, words it must not contain,
#  user files that must survive)
CASES = [
    # sst_tf.export
    ("export-no-model-dir", "export", [], 2, ["--model_dir is required"], [], []),
    ("export-model-dir-missing", "export", ["--model_dir={nowhere}"], 2,
     ["--model_dir={nowhere}", "not a folder"], [], []),
    ("export-not-a-run", "export", ["--model_dir={user}"], 2,
     ["--model_dir={user}", "no config.json"], [], ["user_file"]),
    ("export-corrupt-config", "export", ["--model_dir={tmp}/badcfg"], 2,
     ["--model_dir={tmp}/badcfg: {tmp}/badcfg/config.json is not valid JSON (",
      "): truncated or edited by hand?"], [], []),
    ("export-no-checkpoint", "export", ["--model_dir={tmp}/nockpt"], 2,
     ["--model_dir={tmp}/nockpt", "no checkpoint"], [], []),
    ("export-unknown-checkpoint", "export",
     ["--model_dir={run}", "--checkpoint=9", "--export_dir={tmp}/e9"], 2,
     ["--checkpoint=9", "ckpt-1"], [], []),
    ("export-truncated-checkpoint", "export",
     ["--model_dir={tmp}/trunc", "--export_dir={tmp}/etrunc"], 2,
     ["{tmp}/trunc/checkpoints/ckpt-1", "cannot be restored", "--checkpoint=N"],
     ["Traceback"], []),
    ("export-into-user-folder", "export", ["--model_dir={run}", "--export_dir={user}"], 2,
     ["--export_dir={user}", "did not write", "choose a new or empty folder"], [],
     ["user_file"]),
    ("export-onto-user-file", "export", ["--model_dir={run}", "--export_dir={userfile}"], 2,
     ["--export_dir={userfile}", "is a file"], [], ["userfile"]),
    ("export-over-our-export", "export", ["--model_dir={run}"], 2,
     ["{run}/export", "MODEL_DIR/export", "pass --overwrite", "another folder"],
     ["--export_dir="], []),
    ("export-over-our-export-named", "export", ["--model_dir={run}", "--export_dir={export}"], 2,
     ["--export_dir={export}", "pass --overwrite"], [], []),
    ("export-unknown-format", "export",
     ["--model_dir={run}", "--export_dir={tmp}/eformat", "--formats=onnx,tflite"], 2,
     ["--formats", "'tflite'", "savedmodel, onnx, litert, litert_int8"], [], []),
    ("export-format-without-converter", "export",
     ["--model_dir={run}", "--export_dir={tmp}/econv", "--formats=savedmodel,onnx"], 2,
     ["--formats=onnx needs tf2onnx", "pip install 'sst_tf[onnx]'"], [], []),
    ("export-unknown-flag", "export", ["--model_dir={run}", "--checkpiont=3"], 2,
     ["checkpiont", "--help"], [], []),
    ("export-stray-argument", "export", ["--model_dir={run}", "run2"], 2,
     ["unexpected arguments", "run2"], [], []),
    # sst_tf.embed
    ("embed-no-export-dir", "embed", ["--images={imgs}"], 2, ["--export_dir is required"], [], []),
    ("embed-no-images", "embed", ["--export_dir={export}"], 2, ["--images is required"], [], []),
    ("embed-empty-folder", "embed",
     ["--export_dir={export}", "--images={empty}", "--output={tmp}/o1.npz"], 2,
     ["--images={empty}", "no image files", ".webp"], [], []),
    ("embed-glob-matches-nothing", "embed",
     ["--export_dir={export}", "--images={imgs}/*.tiff", "--output={tmp}/o2.npz"], 2,
     ["--images={imgs}/*.tiff", "no image files"], [], []),
    ("embed-not-an-export", "embed",
     ["--export_dir={user}", "--images={imgs}", "--output={tmp}/o3.npz"], 2,
     ["--export_dir={user}", "saved_model.pb missing"], [], ["user_file"]),
    ("embed-batch-size", "embed",
     ["--export_dir={export}", "--images={imgs}", "--batch_size=0"], 2,
     ["--batch_size must be >= 1"], [], []),
    ("embed-output-user-file", "embed",
     ["--export_dir={export}", "--images={imgs}", "--output={user_npz}"], 2,
     ["--output={user_npz}", "not written by sst_tf"], [], ["user_npz"]),
    ("embed-output-not-npz", "embed",
     ["--export_dir={export}", "--images={imgs}", "--output={userfile}"], 2,
     ["--output={userfile}", ".npz"], [], ["userfile"]),
    ("embed-nothing-decodes", "embed",
     ["--export_dir={export}", "--images={garbage}", "--output={tmp}/o4.npz"], 1,
     ["none of the 2 files", "--images={garbage}"], [], []),
    # sst_tf.search
    ("search-no-index", "search", ["--query={imgs}"], 2, ["--index is required"], [], []),
    ("search-no-query", "search", ["--index={index}"], 2, ["--query is required"], [], []),
    ("search-index-missing", "search", ["--index={nowhere}.npz", "--query={imgs}"], 2,
     ["--index={nowhere}.npz", "does not exist"], [], []),
    ("search-index-not-npz", "search", ["--index={text_index}", "--query={imgs}"], 2,
     ["--index={text_index}", "not an index written by sst_tf.embed", "not a NumPy .npz"],
     ["pickle"], []),
    ("search-index-bare-array", "search", ["--index={npy_index}", "--query={imgs}"], 2,
     ["--index={npy_index}", "not an index"], [], []),
    ("search-empty-query-folder", "search", ["--index={index}", "--query={empty}"], 2,
     ["--query={empty}", "no image files"], ["--images"], []),
    ("search-export-moved", "search", ["--index={moved}", "--query={imgs}"], 2,
     ["--index={moved}", "{tmp}/gone/export", "no longer there", "pass --export_dir"],
     ["no SavedModel at --export_dir"], []),
    ("search-top-k", "search", ["--index={index}", "--query={imgs}", "--top_k=0"], 2,
     ["--top_k must be >= 1"], [], []),
    ("search-top-k-not-a-number", "search", ["--index={index}", "--query={imgs}", "--top_k=a"],
     2, ["--top_k=a"], [], []),
    ("search-embedding-size-mismatch", "search",
     ["--index={index}", "--query={imgs}", "--export_dir={export4}"], 2,
     ["--export_dir", "4-d", "--index={index}", "8-d"], [], []),
    ("search-index-of-another-model", "search",
     ["--index={index}", "--query={imgs}", "--export_dir={export8}"], 2,
     ["--export_dir ({export8}) is not the model that built --index={index}",
      "probe image", "python -m sst_tf.embed"], [], []),
    ("search-threshold-not-recorded", "search",
     ["--index={index}", "--query={imgs}", "--threshold=best_f1"], 2,
     ["--threshold=best_f1", "records no threshold of that name", "it records: none",
      "Pass a distance"], [], []),
    ("search-threshold-negative", "search",
     ["--index={index}", "--query={imgs}", "--threshold=-0.5"], 2,
     ["--threshold=-0.5", "finite number >= 0"], [], []),
    ("search-output-user-file", "search",
     ["--index={index}", "--query={imgs}", "--output={user_json}"], 2,
     ["--output={user_json}", "not written by sst_tf"], [], ["user_json"]),
    ("search-nothing-decodes", "search", ["--index={index}", "--query={garbage}"], 1,
     ["--query={garbage}", "could be decoded"], [], []),
    # sst_tf.report
    ("report-no-model-dir", "report", [], 2, ["--model_dir is required"], [], []),
    ("report-model-dir-missing", "report", ["--model_dir={nowhere}"], 2,
     ["--model_dir={nowhere}", "not a folder"], [], []),
    ("report-no-metrics", "report", ["--model_dir={user}"], 2,
     ["{user}/metrics.json not found"], [], ["user_file"]),
    ("report-corrupt-metrics", "report", ["--model_dir={tmp}/badmetrics"], 2,
     ["--model_dir={tmp}/badmetrics: {tmp}/badmetrics/metrics.json is not valid JSON (",
      "): truncated or edited by hand?"], [], []),
    ("report-unknown-dataset", "report", ["--model_dir={run}", "--dataset=bogus"], 2,
     ["--dataset=bogus", "cub"], [], []),
    # sst_tf.calibrate
    ("calibrate-no-class-folders", "calibrate", ["--export_dir={export}", "--images={imgs}"], 2,
     ["--images={imgs} has no class subfolders"], [], []),
    ("calibrate-one-class", "calibrate", ["--export_dir={export}", "--images={tmp}/oneclass"], 2,
     ["--images={tmp}/oneclass", "1 class(es)", "at least 2 classes"], [], []),
    ("calibrate-fmr-out-of-range", "calibrate",
     ["--export_dir={export}", "--images={imgs}", "--fmr=0.01,2"], 2,
     ["--fmr=0.01,2", "(0, 1)"], [], []),
    ("calibrate-images-missing", "calibrate", ["--export_dir={export}", "--images={nowhere}"],
     2, ["--images={nowhere}"], [], []),
    # sst_tf.verify
    ("verify-no-images", "verify", ["--export_dir={export}"], 2, ["--images is required"],
     [], []),
    ("verify-one-image", "verify", ["--export_dir={export}", "--images={imgs}/im0.png"], 2,
     ["--images takes two image files", "got 1"], [], []),
    ("verify-threshold-not-recorded", "verify",
     ["--export_dir={export}", "--images={imgs}/im0.png,{imgs}/im1.png"], 2,
     ["--threshold=best_f1", "records no threshold of that name", "Pass a distance"], [], []),
    ("verify-undecodable-image", "verify",
     ["--export_dir={export}", "--images={imgs}/im0.png,{garbage}/a.jpg", "--threshold=1"], 2,
     ["--images", "{garbage}/a.jpg", "cannot be read or decoded"], [], []),
    ("verify-export-missing", "verify",
     ["--export_dir={nowhere}", "--images={imgs}/im0.png,{imgs}/im1.png", "--threshold=1"], 2,
     ["--export_dir={nowhere}"], [], []),
    # sst_tf.visualize
    ("visualize-no-model-dir", "visualize", [], 2, ["--model_dir is required"], [], []),
    ("visualize-too-many-queries", "visualize", ["--model_dir={run}", "--num_queries=5000"], 2,
     ["--num_queries=5000", "1..100", "380,004 px"], [], []),
    ("visualize-out-dir-user-folder", "visualize", ["--model_dir={run}", "--out_dir={user}"], 2,
     ["--out_dir={user}", "did not write"], [], ["user_file"]),
    ("visualize-not-a-run", "visualize", ["--model_dir={user}", "--out_dir={tmp}/fig"], 2,
     ["--model_dir={user}", "no config.json"], [], ["user_file"]),
    ("visualize-data-moved", "visualize",
     ["--model_dir={moved_run}", "--out_dir={tmp}/figmoved"], 2,
     ["the run's data set", "{tmp}/gone_data", "--data_dir=NEW_FOLDER"], [], []),
    ("visualize-tsne-points", "visualize", ["--model_dir={run}", "--tsne_points=2"], 2,
     ["--tsne_points=2", ">= 5"], [], []),
    # sst_tf.train
    ("train-model-dir-user-folder", "train", [DIGITS, "--model_dir={user}", "--epochs=1"], 2,
     ["--model_dir={user}", "did not write"], [], ["user_file"]),
    ("train-export-folder-of-user", "train",
     [DIGITS, "--model_dir={tmp}/userexport", "--epochs=1"], 2,
     ["{tmp}/userexport/export", "written at the end of training", "did not write"], [], []),
    ("train-resume-corrupt-config", "train",
     [DIGITS, "--model_dir={tmp}/resumebadcfg", "--epochs=1"], 2,
     ["--model_dir={tmp}/resumebadcfg: {tmp}/resumebadcfg/config.json is not valid JSON (",
      "): truncated or edited by hand?"], [], []),
    ("train-resume-another-model", "train",
     ["--model_dir={run}", "--nopretrained", "--image_size=16", "--resize_size=18",
      "--embedding_dim=16", "--backbone=mobilenet_v2", "--epochs=5"], 2,
     ["cannot resume the run in {run}", "--embedding_dim: 8 in the saved run, 16 now",
      "--backbone: 'small_cnn' in the saved run, 'mobilenet_v2' now",
      "Use another --model_dir"], ["--epochs"], []),
    ("train-unknown-export-format", "train",
     [DIGITS, "--model_dir={tmp}/t1", "--export_formats=tflite"], 2,
     ["--export_formats", "'tflite'", "litert_int8"], [], []),
    ("train-export-format-without-converter", "train",
     [DIGITS, "--model_dir={tmp}/t1", "--export_formats=litert"], 2,
     ["--export_formats=litert needs ai_edge_litert", "pip install 'sst_tf[litert]'"], [], []),
    ("train-export-formats-without-export", "train",
     [DIGITS, "--model_dir={tmp}/t1", "--export_formats=onnx", "--noexport"], 2,
     ["--export_formats=onnx needs --export"], [], []),
    ("train-bad-enum", "train", [DIGITS, "--model_dir={tmp}/t1", "--strategy=gpu"], 2,
     ["--strategy", "gpu"], [], []),
    ("train-memory-loss-without-reference-form", "train",
     [DIGITS, "--model_dir={tmp}/t2", "--loss=lifted_struct", "--memory_size=100"], 2,
     ["--memory_size", "reference-set form", "multi_similarity", "'lifted_struct'"], [], []),
    ("train-memory-size-negative", "train",
     [DIGITS, "--model_dir={tmp}/t3", "--memory_size=-5"], 2,
     ["--memory_size must be >= 0", "-5"], [], []),
    ("train-memory-weight-zero", "train",
     [DIGITS, "--model_dir={tmp}/t4", "--memory_size=100", "--memory_weight=0"], 2,
     ["--memory_weight must be > 0"], [], []),
    ("train-lr-inf", "train", [DIGITS, "--model_dir={tmp}/lrinf", "--lr=inf"], 2,
     ["--lr must be a finite number", "inf"], [], []),
    ("train-lr-nan", "train", [DIGITS, "--model_dir={tmp}/lrnan", "--lr=nan"], 2,
     ["--lr must be a finite number", "nan"], [], []),
    ("train-model-dir-below-a-file", "train", [DIGITS, "--model_dir={userfile}/run"], 2,
     ["--model_dir={userfile}/run", "cannot be created", "{userfile} is a file"], [],
     ["userfile"]),
    ("train-eval-batch-size-zero", "train",
     [DIGITS, "--model_dir={tmp}/evb0", "--eval_batch_size=0"], 2,
     ["--eval_batch_size must be >= 1", "got 0"], [], []),
    ("train-epochs-zero", "train", [DIGITS, "--model_dir={tmp}/ep0", "--epochs=0"], 2,
     ["--epochs must be >= 1", "got 0"], [], []),
    ("train-early-stop-patience-zero", "train",
     [DIGITS, "--model_dir={tmp}/esp0", "--early_stop_patience=0"], 2,
     ["--early_stop_patience must be >= 1", "got 0"], [], []),
    ("train-members-per-class-over-batch", "train",
     [DIGITS, "--model_dir={tmp}/mpc", "--members_per_class=20", "--batch_size=8"], 2,
     ["--batch_size=8", "--members_per_class=20", "cannot hold two classes"], [], []),
    ("train-data-dir-is-a-file", "train",
     ["--dataset=folder", "--data_dir={userfile}", "--model_dir={tmp}/dfile"], 2,
     ["--data_dir={userfile} is a file, not a folder"], ["does not exist"], ["userfile"]),
    ("train-every-class-one-image", "train",
     ["--dataset=folder", "--data_dir={singles}", "--model_dir={tmp}/singles_run",
      "--backbone=small_cnn", "--nopretrained", "--image_size=16", "--batch_size=4",
      "--num_targets=1",
      "--members_per_class=2"], 2,
     ["train split has 3 images in 3 classes", "single image", "no same-class pair"], [], []),
    ("train-npairs-scale-zero", "train",
     [DIGITS, "--model_dir={tmp}/t6", "--loss=npairs", "--npairs_scale=0"], 2,
     ["--npairs_scale must be > 0"], [], []),
    ("train-npairs-scale-other-loss", "train",
     [DIGITS, "--model_dir={tmp}/t7", "--loss=sst", "--npairs_scale=16"], 2,
     ["--npairs_scale does not apply to --loss=sst"], [], []),
    ("train-npairs-per-class-memory", "train",
     [DIGITS, "--model_dir={tmp}/t7b", "--loss=npairs", "--npairs_pairs=per_class",
      "--memory_size=100"], 2,
     ["--memory_size needs --npairs_pairs=all", "'per_class'"], [], []),
    ("train-ms-base-out-of-range", "train",
     [DIGITS, "--model_dir={tmp}/t8", "--loss=multi_similarity", "--ms_base=2"], 2,
     ["--ms_base must be <= 1", "2.0"], [], []),
    ("train-proxy-delta-other-loss", "train",
     [DIGITS, "--model_dir={tmp}/t9", "--loss=sst", "--proxy_delta=0.2"], 2,
     ["--proxy_delta does not apply to --loss=sst (only to --loss=proxy_anchor)"], [], []),
    ("train-global-negatives-jit", "train",
     [DIGITS, "--model_dir={tmp}/t5", "--global_negatives", "--jit_compile",
      "--nodeterministic"], 2,
     ["--global_negatives cannot be combined with --jit_compile"], [], []),
    # scripts/prepare_data.py
    ("prepare-no-dataset", "prepare_data", ["--data_dir={tmp}/d"], 2,
     ["--dataset is required"], [], []),
    ("prepare-unknown-dataset", "prepare_data", ["--dataset=mnist", "--data_dir={tmp}/d"], 2,
     ["--dataset", "mnist"], [], []),
    ("prepare-missing-archive", "prepare_data",
     ["--dataset=cub", "--archives={empty}", "--data_dir={tmp}/d"], 2,
     ["missing {empty}/CUB_200_2011.tgz"], [], []),
    ("prepare-broken-archive", "prepare_data",
     ["--dataset=cars196", "--archives={dl}", "--data_dir={tmp}/d"], 2,
     ["{dl}/car_ims.tgz", "not a readable archive"], [], []),
    ("prepare-archives-not-a-folder", "prepare_data",
     ["--dataset=cub", "--archives={userfile}", "--data_dir={tmp}/d"], 2,
     ["--archives={userfile}", "not a folder"], [], ["userfile"]),
    ("prepare-data-dir-is-a-file", "prepare_data",
     ["--dataset=cub", "--archives={dl}", "--data_dir={userfile}"], 2,
     ["--data_dir={userfile}", "is a file"], [], ["userfile"]),
    # scripts/benchmark.py
    ("benchmark-unknown-section", "benchmark", ["--sections=bogus"], 2,
     ["--sections", "bogus"], [], []),
    ("benchmark-pml-without-side-environment", "benchmark",
     ["--sections=pml", "--pml_python={nowhere}/python"], 2,
     ["--pml_python=", "not a file", "pytorch-metric-learning", "make_pml_fixtures.py"], [], []),
    ("benchmark-formats-without-converter", "benchmark", ["--sections=formats"], 2,
     ["--formats=onnx needs tf2onnx", "pip install 'sst_tf[onnx]'",
      "leave formats out of --sections"], [], []),
    ("benchmark-output-user-file", "benchmark", ["--sections=losses", "--output={userfile}"], 2,
     ["--output={userfile}", "not a benchmark file"], [], ["userfile"]),
]


def _fmt(values, w):
    return [v.format(**w) for v in values]


def test_every_case_is_a_row_of_the_errors_page():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "docs", "errors.md")) as f:
        page = f.read()
    missing = [c[0] for c in CASES if f"`test_bad_input[{c[0]}]`" not in page]
    assert not missing, missing


@pytest.mark.parametrize("case", [pytest.param(c, id=c[0]) for c in CASES])
def test_bad_input(case, world, capsys, monkeypatch):
    _, command, argv, want_code, words, absent, survivors = case
    argv = _fmt(argv, world)
    if case[0].endswith("-without-converter"):  # as on a machine without the extras
        real = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in (
            "tf2onnx", "ai_edge_litert") else real(name, *a))
    before = set(os.listdir(world["tmp"]))
    if command in MODULES:
        code, out, err = run_main(MODULES[command], argv, capsys, monkeypatch)
    elif command == "prepare_data":
        code, out, err = run_main(_PREPARE, argv, capsys, monkeypatch)
    elif command == "train":
        monkeypatch.setenv("SST_TF_CACHE_DIR", os.path.join(world["tmp"], "cache"))
        code, out, err = run_global("sst_tf.train", train.main, argv, capsys)
    else:
        code, out, err = run_benchmark(argv, capsys, monkeypatch)
    lines = _error_lines(err)
    assert code == want_code, err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{PROGS[command]}: error: "), lines[0]
    for word in _fmt(words, world):
        assert word in lines[0], (word, lines[0])
    for word in _fmt(absent, world):
        assert word not in lines[0], (word, lines[0])
    assert "Traceback" not in err
    # A refusal writes nothing (the image check's cache aside).
    assert set(os.listdir(world["tmp"])) - before - {"cache"} == set(), lines[0]
    for key in survivors:
        with open(world[key]) as f:
            assert f.read() == USER_TEXT, key


def test_export_overwrite_replaces_only_our_export(world, capsys, monkeypatch):
    target = os.path.join(world["tmp"], "ow")
    shutil.copytree(world["export"], target)
    before = os.path.getmtime(os.path.join(target, "saved_model.pb"))
    code, out, err = run_main(
        ex, [f"--model_dir={world['run']}", f"--export_dir={target}", "--overwrite"],
        capsys, monkeypatch)
    assert code == 0, err
    assert f"to {target}" in out
    assert os.path.getmtime(os.path.join(target, "saved_model.pb")) >= before
    with open(os.path.join(target, MARKER)) as f:
        assert json.load(f)["kind"] == "export"
    # --overwrite never extends to a folder that is not an export of ours.
    code, _, err = run_main(
        ex, [f"--model_dir={world['run']}", f"--export_dir={world['user']}", "--overwrite"],
        capsys, monkeypatch)
    assert code == 2 and open(world["user_file"]).read() == USER_TEXT


def test_search_header_distance_and_exclude_self(world, capsys, monkeypatch):
    query = os.path.join(world["imgs"], "im2.png")
    argv = [f"--index={world['index']}", f"--query={query}", "--top_k=3"]
    code, out, err = run_main(search, argv, capsys, monkeypatch)
    assert code == 0, err
    lines = out.splitlines()
    assert "distance: Euclidean" in lines[0] and lines[1] == f"query: {query}"
    assert lines[2].split() == ["rank", "distance", "path"]
    assert lines[3].split()[2] == query  # the query is in the index: its own first hit
    code, out, err = run_main(search, argv + ["--exclude_self"], capsys, monkeypatch)
    assert code == 0, err
    hits = [ln.split()[2] for ln in out.splitlines()[3:]]
    assert len(hits) == 3 and query not in hits
    # The same neighbours as without the flag, minus the query.
    index = np.load(world["index"])
    emb = dict(zip(index["paths"], index["embeddings"], strict=True))
    dist = {p: float(np.linalg.norm(e - emb[query])) for p, e in emb.items() if p != query}
    assert hits == sorted(dist, key=dist.get)[:3]


def test_embed_folder_reads_every_image_type_training_reads(world, capsys, monkeypatch,
                                                            tmp_path):
    # 16 colours, so that GIF's palette keeps every pixel; WebP written lossless.
    palette = np.random.default_rng(1).integers(0, 256, (16, 3), dtype=np.uint8)
    pixels = palette[np.random.default_rng(2).integers(0, 16, (20, 20))]
    for ext, kwargs in (("png", {}), ("bmp", {}), ("gif", {}), ("webp", {"lossless": True})):
        Image.fromarray(pixels).save(tmp_path / f"im.{ext}", **kwargs)
    out = tmp_path / "out" / "index.npz"
    code, _, err = run_main(embed, [f"--export_dir={world['export']}",
                                      f"--images={tmp_path}", f"--output={out}"],
                              capsys, monkeypatch)
    assert code == 0, err
    with np.load(out) as z:
        assert sorted(os.path.basename(p) for p in z["paths"]) == [
            "im.bmp", "im.gif", "im.png", "im.webp"]
        emb = z["embeddings"]
    np.testing.assert_allclose(emb, np.repeat(emb[:1], 4, axis=0), atol=1e-5)


def test_report_warns_when_the_dataset_is_not_the_runs(world, capsys, monkeypatch):
    code, out, err = run_main(report, [f"--model_dir={world['run']}", "--dataset=cub"],
                                capsys, monkeypatch)
    assert code == 0
    assert "warning: the run trained on digits" in err and "not comparable" in err
    code, out, err = run_main(report, [f"--model_dir={world['run']}"], capsys, monkeypatch)
    assert code == 0 and "pub:" not in out and "No published numbers exist for digits" in out


def test_train_dry_run_counts_single_image_classes(world, capsys, monkeypatch, tmp_path):
    rng = np.random.default_rng(0)
    for split, counts in (("train", {"a": 1, "b": 3, "c": 1}), ("test", {"d": 2, "e": 2})):
        for cls, n in counts.items():
            os.makedirs(tmp_path / split / cls)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(
                    tmp_path / split / cls / f"{i}.png")
    monkeypatch.setenv("SST_TF_CACHE_DIR", str(tmp_path / "cache"))
    code, out, err = run_global(
        "sst_tf.train", train.main,
        ["--dataset=folder", f"--data_dir={tmp_path}", f"--model_dir={tmp_path}/run",
         "--dry_run"], capsys)
    assert code == 0, err
    assert "warning: train split: 2 of 3 classes have a single image" in out
    assert "test split" not in out
    assert not os.path.exists(tmp_path / "run")


def test_projector_refuses_a_user_folder_and_replaces_its_own(tmp_path):
    from sst_tf import projector

    user = tmp_path / "p"
    _user_file(str(user / "notes.txt"))
    emb = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
    with pytest.raises(cli.UsageError, match="did not write"):
        projector.write_projector(str(user), emb, list("aabbcc"))
    assert (user / "notes.txt").read_text() == USER_TEXT
    ours = tmp_path / "q"
    projector.write_projector(str(ours), emb, list("aabbcc"))
    projector.write_projector(str(ours), emb[:4], list("aabb"))  # ours: replaced
    assert len((ours / "metadata.tsv").read_text().splitlines()) == 5


def _env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.mark.slow
def test_search_json_into_a_closed_pipe_and_quiet_startup(world):
    # The reader goes away after one line ("| head -1"): no traceback, exit status 1.
    index = os.path.join(world["tmp"], "big.npz")
    with np.load(world["index"]) as z:
        embed.save_index(index, np.tile(z["paths"], 60), np.tile(z["embeddings"], (60, 1)),
                         world["export"], fingerprint=z["fingerprint"])
    proc = subprocess.Popen(
        [sys.executable, "-m", "sst_tf.search", f"--index={index}", f"--query={world['imgs']}",
         "--top_k=300", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(),
        cwd=REPO)
    proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1
    assert err == "", err  # not even TensorFlow's start-up lines


def test_export_help_does_not_load_tensorflow():
    script = ("import runpy, sys\nsys.argv = ['export', '--help']\n"
              "try:\n    runpy.run_module('sst_tf.export', run_name='__main__')\n"
              "except SystemExit:\n    pass\n"
              "print('TF_LOADED' if 'tensorflow' in sys.modules else 'TF_NOT_LOADED')\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=_env(), cwd=REPO, timeout=60)
    assert "overwrite" in proc.stdout and "TF_NOT_LOADED" in proc.stdout, proc.stderr
