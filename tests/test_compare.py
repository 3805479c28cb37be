"""scripts/compare.py: seeds, mean ± std, runs not above the untrained model marked failed."""

import json
import os
import statistics
import subprocess
import sys

import pytest
from _scripts import load_script

from sst_tf import loss_registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_compare():
    return load_script("compare")


def _run(loss, seed, before, after, sampler="class_balanced", geometry="cosine"):
    metrics = {"map@r": after, "r_precision": after + 0.01, "recall@1": after + 0.1,
               "nmi": after + 0.05}
    curve = [{"epoch": 0, "train_seconds": 0.0, "map@r": before},
             {"epoch": 2, "train_seconds": 3.0, "map@r": after}]
    return {"loss": loss, "sampler": sampler, "seed": seed, "train_seconds": 3.0 + seed,
            "before": {"map@r": before}, "after": metrics, "curve": curve,
            "settings": {"geometry": geometry}}


def test_a_run_below_the_untrained_model_is_failed_and_left_out(tmp_path):
    compare = _load_compare()
    runs = [_run("multi_similarity", 0, 0.40, 0.80), _run("multi_similarity", 1, 0.41, 0.70),
            _run("multi_similarity", 2, 0.42, 0.30),  # ends below its untrained model
            _run("triplet_hard", 0, 0.40, 0.39), _run("triplet_hard", 1, 0.40, 0.40),
            {"loss": "npairs", "sampler": "class_balanced", "seed": 0, "error": "ValueError: x"}]
    assert compare.failure(runs[0]) is None
    assert compare.failure(runs[2]) == "MAP@R 0.300 not above the untrained 0.420"
    assert compare.failure(runs[4]) is not None  # equal is not above
    assert compare.failure(runs[5]) == "ValueError: x"
    groups = {g["loss"]: g for g in compare.summarize(runs)}
    assert groups["multi_similarity"]["passed"] == runs[:2]
    assert groups["multi_similarity"]["failed"] == [(2, compare.failure(runs[2]))]
    assert groups["triplet_hard"]["passed"] == []

    lines = compare.markdown_table(runs).splitlines()
    assert lines[0] == ("| loss | sampler | geometry | passed | MAP@R | R-Precision | Recall@1 "
                        "| NMI | untrained MAP@R | train s | failed runs |")
    ms = lines[2].split(" | ")
    # Mean ± sample std of the two passed seeds only (independent computation).
    maps = [0.80, 0.70]
    assert ms[3:5] == ["2/3", f"{statistics.mean(maps):.3f} ± {statistics.stdev(maps):.3f}"]
    assert ms[8] == f"{statistics.mean([0.40, 0.41, 0.42]):.3f}"  # untrained, every seed
    assert "seed 2: MAP@R 0.300 not above the untrained 0.420" in lines[2]
    th = lines[3].split(" | ")
    assert th[3] == "0/2" and th[4:8] == ["failed"] * 4
    assert "seed 0:" in lines[3] and "seed 1:" in lines[3]
    assert "0/1" in lines[4] and "ValueError: x" in lines[4]

    path = str(tmp_path / "plot.png")
    compare.plot(runs, path, "test")  # failed groups are named, not drawn
    assert os.path.getsize(path) > 1000


@pytest.mark.slow
def test_compare_script_runs_seeds_in_each_loss_geometry(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [sys.executable, "scripts/compare.py", "--flagfile=configs/digits.cfg",
           f"--out_dir={tmp_path}", "--losses=triplet,multi_similarity", "--seeds=0,1",
           "--epochs=1", "--image_size=16", "--resize_size=16", "--batch_size=40",
           "--samples_per_class=4"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "compare.json").read_text())
    assert [(r["loss"], r["seed"]) for r in results] == [
        ("triplet", 0), ("triplet", 1), ("multi_similarity", 0), ("multi_similarity", 1)]
    for r in results:
        spec_geometry = "cosine" if loss_registry.spec(r["loss"]).normalize else "euclidean"
        assert r["settings"]["geometry"] == spec_geometry
        assert r["sampler"] == loss_registry.spec(r["loss"]).sampler
        assert [p["epoch"] for p in r["curve"]] == [0, 1]
        saved = json.loads((tmp_path / f"{r['loss']}-{r['sampler']}-seed{r['seed']}"
                            / "metrics.json").read_text())
        assert saved["settings"] == r["settings"] and saved["after"] == r["after"]
    # The untrained model is measured in each run's own geometry: it differs by loss.
    assert results[0]["before"]["map@r"] != results[2]["before"]["map@r"]
    table = (tmp_path / "compare.md").read_text()
    assert "| triplet | local | euclidean |" in table
    assert "| multi_similarity | class_balanced | cosine |" in table
    assert (tmp_path / "compare.png").stat().st_size > 1000
    # --from_json merges earlier runs without training.
    merged = tmp_path / "merged"
    src = tmp_path / "compare.json"
    proc = subprocess.run([sys.executable, "scripts/compare.py", "--flagfile=configs/digits.cfg",
                           f"--out_dir={merged}", f"--from_json={src}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((merged / "compare.json").read_text()) == results
