"""study/short_table.sh: the 30-second table's runs on a tiny suite; a rerun resumes."""

import json
import os
import subprocess

import pytest
from _suite_data import backbone_weights, digit_folders

from sst_tf import loss_registry

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRATCH = ("cross_script", "within_script", "typeface", "many_classes")
# The tiny suite's shape: 8 x 8 images, an 8-d head, batches of 16, one short epoch.
TINY = ("--budget_seconds=0.001 --image_size=8 --resize_size=8 --embedding_dim=8 "
        "--batch_size=16 --samples_per_class=4 --num_targets=3")


def _short_table(suite, out, only, extra=TINY):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", ONLY=only,
               EXTRA_FLAGS=extra)
    return subprocess.run(["bash", "study/short_table.sh", str(suite), str(out), "0"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_every_benchmark_of_the_table_runs_each_loss_in_its_defaults_and_resumes(tmp_path):
    suite, out = tmp_path / "suite", tmp_path / "out"
    for offset, name in enumerate(SCRATCH):
        digit_folders(suite / name, offset)
    backbone_weights(suite / "small_cnn_han.weights.h5")  # the pretrained backbone, given
    proc = _short_table(suite, out, "multi_similarity,sst")
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = {}
    for part, benches in (("scratch", SCRATCH), ("pretrained", ("cross_script+pretrained",)),
                          ("digits", ("digits",))):
        stored = json.loads((out / part / "compare.json").read_text())
        # The registry's order of the losses, whatever the order of ONLY.
        assert [(r["benchmark"], r["loss"]) for r in stored] == [
            (b, loss) for b in benches for loss in ("sst", "multi_similarity")], part
        for r in stored:
            assert "error" not in r and r["variant"] == r["loss"], r
            assert r["sampler"] == loss_registry.spec(r["loss"]).sampler
            assert r["clock"] == "cpu" and r["settings"]["params"] == loss_registry.loss_params(
                r["loss"])
        runs[part] = stored
    # Rerun: every run is kept, none trains again.
    again = _short_table(suite, out, "multi_similarity,sst")
    assert again.returncode == 0, again.stderr[-3000:]
    for part, stored in runs.items():
        assert json.loads((out / part / "compare.json").read_text()) == stored, part


def test_a_list_of_losses_naming_none_is_refused_in_one_line(tmp_path):
    proc = _short_table(tmp_path, tmp_path / "out", "sst_paper,circel")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "short_table.sh: ONLY=sst_paper,circel names no loss"]
    assert not (tmp_path / "out").exists()
