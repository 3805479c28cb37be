"""Results table of sst_tf.report."""

import json

import pytest

from sst_tf import report


def _write(tmp_path, dataset, before, after):
    (tmp_path / "metrics.json").write_text(json.dumps({"before": before, "after": after}))
    (tmp_path / "config.json").write_text(json.dumps({"dataset": dataset}))


def _row(table, key):
    return next(line.split() for line in table.splitlines() if line.startswith(key + " "))


def test_cub_table_has_run_and_published_numbers(tmp_path):
    after = {"recall@1": 0.6123, "recall@2": 0.7, "recall@4": 0.8, "recall@8": 0.875,
             "nmi": 0.66, "map@r": 0.21, "r_precision": 0.3}
    before = {k: v / 2 for k, v in after.items()}
    _write(tmp_path, "cub", before, after)
    table = report.report(str(tmp_path))
    assert table.splitlines()[0].startswith("CUB-200-2011")
    assert _row(table, "recall@1") == ["recall@1", "30.6", "61.2", "52.4", "65.7", "68.4"]
    assert _row(table, "recall@8") == ["recall@8", "43.8", "87.5"]
    assert _row(table, "nmi") == ["nmi", "33.0", "66.0"]
    order = [line.split()[0] for line in table.splitlines()[3:10]]
    assert order == ["recall@1", "recall@2", "recall@4", "recall@8", "nmi", "map@r",
                     "r_precision"]


def test_sop_recall_ks_sorted_numerically_and_missing_refs(tmp_path):
    after = {"recall@1000": 0.97, "recall@1": 0.7, "recall@100": 0.93, "recall@10": 0.85,
             "nmi": 0.88}
    _write(tmp_path, "sop", {}, after)
    table = report.report(str(tmp_path))
    keys = [line.split()[0] for line in table.splitlines() if line.startswith("recall@")]
    assert keys == ["recall@1", "recall@10", "recall@100", "recall@1000"]
    assert _row(table, "recall@1") == ["recall@1", "-", "70.0", "-", "78.2", "79.1"]
    assert _row(report.report(str(tmp_path), "cars196"), "recall@1")[3:] == ["-", "84.1", "86.1"]


def test_missing_metrics_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.json not found"):
        report.report(str(tmp_path))


def test_thresholds_and_their_test_rates_follow_the_table(tmp_path):
    after = {"recall@1": 0.6, "map@r": 0.2, "nmi": 0.5, "r_precision": 0.3}
    _write(tmp_path, "folder", after, after)
    rates = {"precision": 0.9, "recall": 0.5, "f1": 0.64, "fmr": 0.011, "fnmr": 0.5}
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    metrics["calibration"] = {"thresholds": {"best_f1": 0.62, "fmr=0.01": 0.46},
                              "source": "the validation classes (8 training classes, 400 "
                                        "images, held out of training)",
                              "test": {"best_f1": rates, "fmr=0.01": rates}}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    lines = report.report(str(tmp_path)).splitlines()
    at = lines.index("same/different thresholds from the validation classes (8 training "
                     "classes, 400 images, held out of training), on the test split:")
    assert lines[at + 1].split()[:3] == ["best_f1", "distance", "0.6200:"]
    assert "FNMR 0.5000 at FMR 0.0110" in lines[at + 2]
    # A run without calibration: the table alone.
    _write(tmp_path, "folder", after, after)
    assert "thresholds" not in report.report(str(tmp_path))
