"""The `python -m sst_tf.train` entry point, run in subprocesses."""

import glob
import json
import os
import subprocess
import sys

import pytest

from sst_tf import data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYS = {"recall@1", "recall@2", "recall@4", "recall@8", "nmi", "map@r", "r_precision"}


def _run(*flags, timeout=120):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "sst_tf.train", *flags], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _tags(folder):
    import tensorflow as tf
    from tensorflow.core.util import event_pb2

    tags = set()
    for path in glob.glob(os.path.join(folder, "events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(path):
            event = event_pb2.Event.FromString(record.numpy())
            tags |= {v.tag for v in event.summary.value}
    return tags


@pytest.mark.slow
def test_two_epoch_digits_run_writes_everything(tmp_path):
    # That the same seed gives the same metrics.json in another process is
    # asserted by test_reliability.py (an interrupted run, resumed in new
    # processes, ends with the uninterrupted run's weights and metrics).
    flags = ["--flagfile=configs/digits.cfg", "--epochs=2", "--embedding_dim=16", "--image_size=16",
             "--resize_size=18", "--eval_every=1", "--batch_size=150", "--validation_share=0.2"]
    first = tmp_path / "a"
    proc = _run(*flags, f"--model_dir={first}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(first / "metrics.json") as f:
        metrics = json.load(f)
    assert KEYS <= set(metrics["before"]) and KEYS <= set(metrics["after"])
    assert KEYS <= set(metrics["epochs"]["1"])
    assert metrics["train"]["epochs_run"] == 2
    assert "recall@1" in proc.stdout  # the before/after table
    # Same/different thresholds from held-out training images (digits: the test split
    # shows the training classes), measured on the test split.
    assert "same/different thresholds from held-out training images (" in proc.stdout
    assert "on the test split:" in proc.stdout
    assert "fmr=0.001" in proc.stdout and "FNMR" in proc.stdout
    cal = metrics["calibration"]
    held = data.hold_out(data.load_dataset("digits"), 0.2, seed=0)  # the run's choice
    assert cal["source"] == held.describe()
    assert set(cal["thresholds"]) == {"best_f1", "fmr=0.01", "fmr=0.001"}
    assert all(0 <= r["fnmr"] <= 1 and 0 <= r["fmr"] <= 1 for r in cal["test"].values())
    assert (first / "figures" / "thresholds.png").stat().st_size > 10_000  # the DET plot
    # Checkpoints of both epochs, TensorBoard events of training and evaluation.
    assert os.path.exists(first / "checkpoints" / "ckpt-2.index")
    assert os.path.exists(first / "checkpoints" / "ckpt-1.index")
    assert {"loss", "learning_rate", "images_per_second", "sampler/coverage",
            "sampler/mean_fill"} <= _tags(first / "train")
    assert {"recall@1", "map@r", "nmi"} <= _tags(first / "eval")
    with open(first / "config.json") as f:
        assert json.load(f)["batch_size"] == 150


@pytest.mark.slow
@pytest.mark.parametrize("flags,needle", [
    (["--dataset=nope"], "--dataset='nope' is unknown"),
    (["--batch_size=1"], "--batch_size must be >= 2"),
    (["--lr=inf"], "--lr must be a finite number, got inf"),
    (["--num_targets=0"], "--num_targets must be >= 1"),
    (["--dataset=cub"], "--data_dir is required for --dataset=cub"),
    (["--dataset=cub", "--data_dir=/nonexistent/cub"], "--data_dir=/nonexistent/cub does not"),
    (["--loss=hinge"], "--loss must be one of"),
    (["--members_per_class=1"], "--members_per_class must be >= 2"),
])
def test_bad_flags_give_one_clear_line(tmp_path, flags, needle):
    proc = _run("--flagfile=configs/digits.cfg", f"--model_dir={tmp_path}", *flags)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower()]
    assert len(errors) == 1 and needle in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not os.path.exists(tmp_path / "metrics.json")


def test_a_second_ctrl_c_ends_with_the_same_one_line(tmp_path, monkeypatch, capsys):
    from absl import flags as absl_flags

    from sst_tf import cli, train
    from sst_tf.trainer import Trainer

    def forced_quit(self):  # the KeyboardInterrupt a second Ctrl-C raises mid-run
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "fit", forced_quit)
    absl_flags.FLAGS.unparse_flags()
    try:
        with pytest.raises(SystemExit) as info:
            train.main(cli.parse_flags(
                ["sst_tf.train", f"--flagfile={ROOT}/configs/digits.cfg",
                 f"--model_dir={tmp_path / 'run'}", "--epochs=1"], "sst_tf.train"))
    finally:
        absl_flags.FLAGS.unparse_flags()
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ": error: " in ln]
    assert info.value.code == 130 and "Traceback" not in err
    assert len(lines) == 1 and "stopped by SIGINT" in lines[0]
    assert "rerun the same command to resume" in lines[0]
