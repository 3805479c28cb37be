"""study/paired_gains.py: an arm's paired gain over its default, on validation classes."""

import math
import os
import subprocess
import sys

import pytest
from _study import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _paired():
    # paired_gains.py imports compare.py as `compare`: one module, its flags defined once.
    sys.modules.setdefault("compare", load_script("compare"))
    return load_script("paired_gains")


def _run(arm, bench, seed, val, test):
    return {"loss": arm, "sampler": "s", "seed": seed, "benchmark": bench,
            "plateau": {"val_map@r": val}, "after": {"map@r": test}}


def test_gain_t_and_pairs_won_over_the_default_on_validation_classes():
    paired = _paired()
    runs = [_run("d", "x", 0, 0.50, 0.30), _run("d", "x", 1, 0.60, 0.30),
            _run("d", "y", 0, 0.40, 0.20),
            _run("a", "x", 0, 0.55, 0.10), _run("a", "x", 1, 0.62, 0.10),
            _run("a", "y", 0, 0.43, 0.10),
            _run("a", "z", 0, 0.99, 0.99)]  # no default on z: not a pair
    (g,) = paired.paired_gains(runs, [("a", "d")])
    diffs = [0.05, 0.02, 0.03]
    se = (sum((d - 0.1 / 3) ** 2 for d in diffs) / 2) ** 0.5 / 3 ** 0.5
    assert g["pairs"] == 3 and g["won"] == 3
    assert g["val_gain"] == pytest.approx(0.1 / 3)
    assert g["t"] == pytest.approx((0.1 / 3) / se)
    assert g["test_gain"] == pytest.approx(-0.5 / 3)  # reported, never decides
    assert g["passes"] == (g["t"] >= 2.0)
    table = paired.gains_table([g])
    assert "| `a` | `d` | +0.033 |" in table and "| 3/3 |" in table


def test_fixed_budget_runs_on_validation_splits_compare_their_final_map():
    paired = _paired()
    runs = [{"loss": a, "sampler": "s", "seed": seed, "benchmark": "x",
             "after": {"map@r": m}}
            for a, seed, m in (("d", 0, 0.40), ("d", 1, 0.50), ("a", 0, 0.46), ("a", 1, 0.52))]
    runs.append({"loss": "a", "sampler": "s", "seed": 2, "benchmark": "x", "error": "boom"})
    (g,) = paired.paired_gains(runs, [("a", "d")], budget="fixed")
    assert g["pairs"] == 2 and g["won"] == 2
    assert g["val_gain"] == pytest.approx(0.04)
    assert math.isnan(g["test_gain"])
    assert "| 2/2 | - |" in paired.gains_table([g])
    with pytest.raises(ValueError, match="no run paired"):  # plateau runs: none here
        paired.paired_gains(runs, [("a", "d")])


def test_one_pair_has_no_t_and_does_not_pass():
    paired = _paired()
    (g,) = paired.paired_gains([_run("d", "x", 0, 0.5, 0.3), _run("a", "x", 0, 0.9, 0.9)],
                               [("a", "d")])
    assert math.isnan(g["t"]) and not g["passes"]


def test_an_arm_without_its_default_is_named():
    with pytest.raises(ValueError, match="'a' has no run paired with a run of 'd'"):
        _paired().paired_gains([_run("a", "x", 0, 0.5, 0.3)], [("a", "d")])


def test_the_command_refuses_a_malformed_pair_in_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "study/paired_gains.py", f"--runs={tmp_path}/x.json", "--pairs=a-d"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr
    assert "'a-d' is not ARM:DEFAULT" in errors[0] and "Traceback" not in proc.stderr


def test_the_results_page_retest_of_the_defaults_is_the_stored_runs():
    """docs/results.md's long-budget retest: each arm against the long table's run of its
    default (same benchmark and seed), as paired_gains.py computes it."""
    import glob

    paired = _paired()
    runs_dir = os.path.join(ROOT, "study", "docs", "suite_runs")
    files = sorted(glob.glob(os.path.join(runs_dir, "2026-12-07_long", "seed*", "*",
                                          "compare.json")))
    files += sorted(glob.glob(os.path.join(runs_dir, "2026-12-07_long_defaults", "seed*", "*",
                                           "compare.json")))
    runs = load_script("compare").read_runs(files)
    with open(os.path.join(ROOT, "docs", "results.md")) as f:
        page = f.read()
    section = page[page.index("## Defaults at the long budget"):page.index("## Digits")]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    pairs = [tuple(c.strip().strip("`") for c in row.strip("|").split("|")[:2]) for row in rows]
    assert len(pairs) >= 5
    table = paired.gains_table(paired.paired_gains(runs, pairs))
    assert table.strip() in section
    for g in paired.paired_gains(runs, pairs):
        assert g["pairs"] == 4, g  # two benchmarks x two seeds
