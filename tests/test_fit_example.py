"""examples/fit_digits.py: refuses foreign folders; one epoch writes metrics.json."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "examples", "fit_digits.py")
KEYS = {"recall@1", "recall@2", "recall@4", "recall@8", "map@r", "r_precision", "nmi",
        "num_queries", "num_queries_skipped"}


def _run(*args):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True,
                          env=env, timeout=600)


def test_refuses_a_non_empty_folder_it_did_not_write(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    out = _run(f"--model_dir={tmp_path}")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("fit_digits.py error: --model_dir=")
    assert "Traceback" not in out.stderr
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]


@pytest.mark.slow
def test_one_epoch_writes_the_trainer_metrics(tmp_path):
    out = _run(f"--model_dir={tmp_path}", "--epochs=1", "--eval_every=1")
    assert out.returncode == 0, out.stderr[-3000:]
    with open(tmp_path / "metrics.json") as f:
        metrics = json.load(f)
    assert set(metrics["before"]) == KEYS == set(metrics["after"])
    assert metrics["before"] != metrics["after"]
    assert metrics["train"]["epochs_run"] == 1
    assert "val_map_at_r" in metrics["history"]
    assert (tmp_path / "embedding_model.keras").is_file()
