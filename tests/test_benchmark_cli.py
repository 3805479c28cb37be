"""One training epoch on each benchmark layout through the training CLI, and job.sh.

Tiny fake trees in the official layouts (tests/fakedata.py), the small CNN
backbone, 16 px crops. The flags are parsed by absl exactly as on the command
line; the three data sets run in one subprocess to pay TensorFlow's start-up
once.
"""

import json
import os
import subprocess
import sys

import fakedata
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--nocheck_counts", "--backbone=small_cnn", "--nopretrained", "--image_size=16",
        "--resize_size=18", "--embedding_dim=8", "--batch_size=8", "--members_per_class=4",
        "--epochs=1",
        "--noprogress", "--eval_batch_size=64"]

# Parses each argv with absl's flags and runs sst_tf.train's main, as `python -m` does.
DRIVER = r"""
import json, sys
from absl import flags
from sst_tf import train
for argv in json.loads(sys.argv[1]):
    flags.FLAGS.unparse_flags()
    rest = flags.FLAGS(["sst_tf.train"] + argv)
    try:
        train.main(rest)
        print("RESULT ok", flush=True)
    except SystemExit as e:
        print("RESULT exit", e.code, flush=True)
"""


def _env(tmp_path):
    env = dict(os.environ, SST_TF_CACHE_DIR=str(tmp_path / "cache"), TF_CPP_MIN_LOG_LEVEL="2",
               CUDA_VISIBLE_DEVICES="")
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.mark.slow
def test_one_epoch_on_cars196_sop_folder_and_strict_images(tmp_path):
    fakedata.make_cars(str(tmp_path / "cars"), per_class=6)
    fakedata.make_sop(str(tmp_path / "sop"), per_class=6)
    fakedata.make_folder(str(tmp_path / "folder"), per_class=6)
    fakedata.make_folder(str(tmp_path / "bad"), per_class=3)
    fakedata.corrupt(str(tmp_path / "bad" / "test" / "fox" / "img2.jpg"))
    runs = [[f"--dataset={name}", f"--data_dir={tmp_path / folder}",
             f"--model_dir={tmp_path / 'runs' / name}"] + TINY
            for name, folder in (("cars196", "cars"), ("sop", "sop"), ("folder", "folder"))]
    runs.append(["--dataset=folder", f"--data_dir={tmp_path / 'bad'}", "--strict_images",
                 f"--model_dir={tmp_path / 'runs' / 'strict'}"] + TINY)
    proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(runs)], cwd=REPO,
                          env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    results = [line for line in proc.stdout.splitlines() if line.startswith("RESULT")]
    assert results == ["RESULT ok"] * 3 + ["RESULT exit 2"], proc.stdout + proc.stderr[-3000:]
    for name in ("cars196", "sop", "folder"):
        run = tmp_path / "runs" / name
        metrics = json.loads((run / "metrics.json").read_text())
        assert set(metrics["before"]) >= {"recall@1", "recall@8", "nmi", "map@r"}
        assert 0.0 <= metrics["after"]["recall@1"] <= 1.0
        assert json.loads((run / "config.json").read_text())["dataset"] == name
        assert any(f.startswith("ckpt") for f in os.listdir(run / "checkpoints")), name
    assert "fox/img2.jpg" in proc.stderr and "--strict_images" in proc.stderr
    assert not (tmp_path / "runs" / "strict" / "metrics.json").exists()


@pytest.mark.slow
def test_job_sh_checks_data_then_trains_evaluates_and_reports(tmp_path):
    cfg = tmp_path / "tinycub.cfg"
    cfg.write_text("\n".join(["--flagfile=configs/cub.cfg", f"--data_dir={tmp_path / 'cub'}"]
                             + TINY) + "\n")
    model_dir = tmp_path / "run"
    cmd = ["bash", os.path.join(REPO, "job.sh"), f"--flagfile={cfg}", f"--model_dir={model_dir}"]
    env = dict(_env(tmp_path), PYTHON=sys.executable)
    # No data yet: one clear line naming what is missing, and how to prepare it.
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert f"{tmp_path / 'cub'}" in proc.stderr and "prepare_data.py" in proc.stderr
    fakedata.make_cub(str(tmp_path / "cub"), per_class=6)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "NO GPU" in proc.stderr  # a loud warning on CPU, and the run went on
    metrics = json.loads((model_dir / "metrics.json").read_text())
    table = (model_dir / "results.txt").read_text()
    assert table == proc.stdout[proc.stdout.index("CUB-200-2011"):]
    row = next(line.split() for line in table.splitlines() if line.startswith("recall@1 "))
    assert row == ["recall@1", f"{100 * metrics['before']['recall@1']:.1f}",
                   f"{100 * metrics['after']['recall@1']:.1f}", "52.4", "65.7", "68.4"]
