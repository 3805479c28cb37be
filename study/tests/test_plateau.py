"""study/plateau.py and compare.py --plateau_patience: the budget to the validation plateau."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from _study import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _plateau():
    load_script("compare")  # puts study/ on the path (plateau imports clock)
    return sys.modules["plateau"] if "plateau" in sys.modules else __import__("plateau")


def test_rule_stops_after_patience_evaluations_without_a_gain():
    rule = _plateau().PlateauRule(patience=2, min_delta=0.01)
    assert not rule.update(0.5, 1)
    assert not rule.update(0.505, 2)  # within min_delta: no gain
    assert not rule.update(0.6, 3)    # a gain resets the count
    assert (rule.best, rule.best_index, rule.since_best) == (0.6, 3, 0)
    assert not rule.update(0.59, 4)
    assert rule.update(0.6, 5)        # two evaluations without a gain


def test_summary_times_to_the_plateau_and_to_90_percent_of_it():
    def point(epoch, val, test):
        return {"epoch": epoch, "train_seconds": 10.0 * epoch, "presentations": 100 * epoch,
                "val_map@r": val, "map@r": test}

    curve = [point(0, 0.1, 0.05), point(2, 0.3, 0.2), point(4, 0.5, 0.37),
             point(6, 0.6, 0.40), point(8, 0.55, 0.45)]
    s = _plateau().plateau_summary(curve, best_index=3)
    assert (s["epoch"], s["train_seconds"], s["presentations"]) == (6, 60.0, 600)
    # 90 % of the plateau's test MAP@R (0.40) is 0.36: first reached at epoch 4.
    assert (s["share_epoch"], s["share_train_seconds"]) == (4, 40.0)


def _folder(root, digits, offset, per_class=8):
    import tensorflow as tf
    from sklearn.datasets import load_digits

    bunch = load_digits()
    for digit in digits:
        rows = np.flatnonzero(bunch.target == digit)[offset:offset + per_class]
        folder = root / str(digit)
        folder.mkdir(parents=True, exist_ok=True)
        for j, row in enumerate(rows):
            gray = np.round(bunch.images[row] * (255 / 16)).astype(np.uint8)
            (folder / f"{j}.png").write_bytes(
                tf.io.encode_png(np.repeat(gray[:, :, None], 3, axis=2)).numpy())


def _benchmark(root):
    """A suite-like benchmark: train 0-5, test 6-9, val/train 0-3, val/test 4-5."""
    _folder(root / "train", range(6), 0)
    _folder(root / "test", range(6, 10), 0)
    _folder(root / "val" / "train", range(4), 0)
    _folder(root / "val" / "test", range(4, 6), 0)
    return root


def test_validation_data_are_training_classes_only(tmp_path):
    from sst_tf.config import TrainConfig

    bench = _benchmark(tmp_path / "b")
    cfg = TrainConfig(model_dir="m", dataset="folder", data_dir=str(bench))
    data, test, where = _plateau().plateau_data(cfg)
    names = lambda split: {split.class_names[c] for c in set(split.labels)}  # noqa: E731
    assert names(data.train) == {"0", "1", "2", "3"} and names(data.test) == {"4", "5"}
    assert names(test) == {"6", "7", "8", "9"} and "val/test" in where
    # Without a val/ folder (digits): half of every training class's images validate.
    cfg = TrainConfig(model_dir="m", dataset="digits")
    data, test, where = _plateau().plateau_data(cfg)
    assert len(data.train.labels) + len(data.test.labels) == 901 and len(test.labels) == 896
    assert set(data.train.labels) == set(data.test.labels) == set(range(10))
    assert "half of every training class" in where


def _config(tmp_path, bench, **kw):
    from sst_tf.config import TrainConfig

    base = dict(model_dir=str(tmp_path), dataset="folder", data_dir=str(bench),
                backbone="small_cnn", pretrained=False, image_size=8, resize_size=8,
                random_flip=False, embedding_dim=8, loss="contrastive",
                sampler="class_balanced", batch_size=16, samples_per_class=4, epochs=4,
                lr=1e-3, progress=False, validation_share=0.0)
    base.update(kw)
    return TrainConfig(**base).resolved()


@pytest.mark.slow
def test_an_interrupted_run_resumes_to_the_same_curve(tmp_path):
    from sst_tf import trainer as trainer_lib

    plateau = _plateau()
    bench = _benchmark(tmp_path / "b")
    whole = plateau.run_to_plateau(_config(tmp_path / "whole", bench), patience=10,
                                   eval_every=1, clock="cpu")
    assert whole["stopped"] == "cap" and whole["epochs"] == 4
    assert [p["epoch"] for p in whole["curve"]] == [0, 1, 2, 3, 4]
    # The same run, stopped during its third epoch (after two evaluations) ...
    real = trainer_lib.Trainer.train_epoch

    def stop_at_third(self, epoch, refresh, *a, **k):
        if epoch == 2:
            raise KeyboardInterrupt
        return real(self, epoch, refresh, *a, **k)

    trainer_lib.Trainer.train_epoch = stop_at_third
    try:
        with pytest.raises(KeyboardInterrupt):
            plateau.run_to_plateau(_config(tmp_path / "cut", bench), patience=10,
                                   eval_every=1, clock="cpu")
    finally:
        trainer_lib.Trainer.train_epoch = real
    with open(tmp_path / "cut" / plateau.PROGRESS) as f:
        assert json.load(f)["epoch"] == 2
    # ... and rerun: it continues from epoch 2 and ends where the whole run ended.
    cut = plateau.run_to_plateau(_config(tmp_path / "cut", bench), patience=10,
                                 eval_every=1, clock="cpu")
    assert [p["epoch"] for p in cut["curve"]] == [0, 1, 2, 3, 4]
    for a, b in zip(whole["curve"], cut["curve"], strict=True):
        assert a["val_map@r"] == pytest.approx(b["val_map@r"], abs=1e-6)
        assert a["map@r"] == pytest.approx(b["map@r"], abs=1e-6)


@pytest.mark.slow
def test_compare_to_the_plateau_resumes_a_suite_and_refuses_other_flags(tmp_path):
    bench = _benchmark(tmp_path / "b")
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    out = tmp_path / "out"
    cmd = [sys.executable, "study/compare.py", "--dataset=folder", "--backbone=small_cnn",
           "--nopretrained", "--image_size=8", "--resize_size=8", "--norandom_flip",
           "--embedding_dim=8", "--batch_size=16", "--samples_per_class=4", "--num_targets=3",
           f"--out_dir={out}", "--seeds=0", f"--benchmarks=b={bench}", "--threads=1",
           "--epochs=3", "--plateau_patience=2", "--compare_eval_every=1"]
    proc = subprocess.run(cmd + ["--losses=contrastive"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = json.loads((out / "compare.json").read_text())
    assert [r["loss"] for r in first] == ["contrastive"]
    run = first[0]
    assert run["stopped"] in ("plateau", "cap") and run["epochs"] <= 3
    best = max(run["curve"][1:], key=lambda p: p["val_map@r"])
    assert run["after"]["map@r"] == best["map@r"]  # the test MAP@R at the best validation
    table = (out / "compare.md").read_text()
    assert "training to the validation plateau (patience 2" in table
    assert "| contrastive |" in table and "train s to 90 %" in table
    # A second loss joins: the finished run is kept, not trained again.
    proc = subprocess.run(cmd + ["--losses=contrastive,multi_similarity"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Resuming the comparison" in proc.stderr and "1 runs done" in proc.stderr
    both = json.loads((out / "compare.json").read_text())
    assert [r["loss"] for r in both] == ["contrastive", "multi_similarity"]
    assert both[0] == run
    # Other training flags in the same folder: refused in one line, nothing changed.
    proc = subprocess.run(cmd + ["--losses=contrastive", "--lr=0.5"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("compare.py:")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "(config.lr differs)" in errors[0] and "another --out_dir" in errors[0]
    assert json.loads((out / "compare.json").read_text()) == both


def test_a_record_field_of_another_version_does_not_stop_a_resume(tmp_path):
    compare = load_script("compare")
    record = {"config": {"lr": 0.002, "validation_share": 0.0}, "benchmarks": {"b": "/d"},
              "budget": {"plateau_patience": 5}}
    assert compare.resumed_results(str(tmp_path), record) == []  # a first run writes it
    earlier = json.loads((tmp_path / "compare_flags.json").read_text())
    assert earlier == record
    runs = [{"loss": "sst", "sampler": "local", "seed": 0, "benchmark": "b"}]
    (tmp_path / "compare.json").write_text(json.dumps(runs))
    # A version that records one field more and one less: the shared fields decide.
    newer = {**record, "config": {"lr": 0.002, "export_formats": ""}}
    assert compare.resumed_results(str(tmp_path), newer) == runs
    with pytest.raises(SystemExit):
        compare.resumed_results(str(tmp_path), {**record, "budget": {"plateau_patience": 3}})
