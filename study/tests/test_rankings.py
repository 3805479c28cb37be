"""study/rankings.py: two budgets' ranks side by side; the results page's long table."""

import glob
import json
import os
import subprocess
import sys

import pytest
from _study import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUNS = os.path.join(ROOT, "study", "docs", "suite_runs")


def _rankings():
    # rankings.py imports compare.py as `compare`: the one module (its flags defined once).
    sys.modules.setdefault("compare", load_script("compare"))
    return load_script("rankings")


def _run(loss, bench, seed, after, before=0.1):
    return {"loss": loss, "sampler": "s", "seed": seed, "benchmark": bench,
            "before": {"map@r": before}, "after": {"map@r": after}, "curve": []}


def _write(path, runs):
    path.write_text(json.dumps(runs))
    return str(path)


def test_a_later_file_replaces_its_runs_and_other_seeds_add_up(tmp_path):
    old = _write(tmp_path / "old.json", [_run("a", "x", 0, 0.5), _run("b", "x", 0, 0.4)])
    new = _write(tmp_path / "new.json", [_run("a", "x", 0, 0.9)])
    seed1 = _write(tmp_path / "seed1.json", [_run("a", "x", 1, 0.7)])
    runs = load_script("compare").read_runs([old, new, seed1])
    got = sorted((r["loss"], r["seed"], r["after"]["map@r"]) for r in runs)
    assert got == [("a", 0, 0.9), ("a", 1, 0.7), ("b", 0, 0.4)]


def test_ranks_share_ties_and_a_loss_without_a_passed_run_is_last():
    rankings = _rankings()
    runs = [_run("a", "x", 0, 0.5), _run("b", "x", 0, 0.5), _run("c", "x", 0, 0.6),
            _run("d", "x", 0, 0.05)]  # d ends below its untrained model: failed
    assert rankings.benchmark_ranks(runs, ["a", "b", "c", "d"]) == {
        "c": 1.0, "a": 2.0, "b": 2.0, "d": 4.0}


def test_kendall_tau_is_one_for_the_same_order_and_minus_one_reversed():
    rankings = _rankings()
    x = {"a": 1, "b": 2, "c": 3}
    assert rankings.kendall_tau(x, x) == pytest.approx(1.0)
    assert rankings.kendall_tau(x, {"a": 3, "b": 2, "c": 1}) == pytest.approx(-1.0)
    assert rankings.kendall_tau(x, {"a": 1, "b": 3, "c": 2}) == pytest.approx(1 / 3)


def test_the_table_keeps_the_losses_and_benchmarks_both_budgets_have():
    rankings = _rankings()
    short = [_run("a", "x", 0, 0.6), _run("b", "x", 0, 0.5), _run("only_short", "x", 0, 0.9),
             _run("a", "y", 0, 0.5)]
    long = [_run("a", "x", 0, 0.5), _run("b", "x", 0, 0.6), _run("only_long", "x", 0, 0.9)]
    table = rankings.ranking_table(short, long)
    assert "only_short" not in table and "only_long" not in table
    assert "30 s: y" not in table  # benchmark y has no long runs
    assert "| b | 2 | **2.00** | 1 | **1.00** |" in table
    assert "x -1.00" in table
    with pytest.raises(ValueError, match="share 0 losses"):
        rankings.ranking_table(short, [_run("z", "x", 0, 0.5)])


def test_a_loss_whose_settings_differ_between_the_budgets_is_left_out_and_named():
    rankings = _rankings()

    def run(loss, after, lr=1.0, params=None):
        return dict(_run(loss, "x", 0, after), settings={
            "sampler": "s", "geometry": "cosine", "loss_lr_multiplier": lr,
            "params": params or {}})

    short = [run("a", 0.6), run("b", 0.5, params={"scale": 32.0, "new": 1}), run("c", 0.4),
             run("d", 0.3, lr=0.25)]
    long = [run("a", 0.5), run("b", 0.6, params={"scale": 16.0}), run("c", 0.6),
            run("d", 0.4)]
    assert rankings.settings_differences(short, long) == {
        "b": ["params.scale"], "d": ["loss_lr_multiplier"]}
    table = rankings.ranking_table(short, long)
    assert "| b |" not in table and "| d |" not in table
    assert "| c | 2 | **2.00** | 1 | **1.00** |" in table
    assert ("Left out, their settings differ between the budgets: b (params.scale); "
            "d (loss_lr_multiplier).") in table
    # A parameter only one budget recorded (added to the registry later) is not compared.
    assert rankings.settings_differences([run("a", 0.6, params={"new": 1})], [run("a", 0.5)]) \
        == {}


def long_table_files():
    """The long table's compare.json files: every arm, then the margin losses rerun
    with their head batch norm (later files replace those arms' runs)."""
    def files(folder):
        return sorted(glob.glob(os.path.join(RUNS, folder, "seed*", "*", "compare.json")))
    return files("2026-12-07_long") + files("2026-12-07_long_margin_bn")


def _long_runs():
    return load_script("compare").read_runs(long_table_files())


def _short_runs():
    # The 30-second table of every loss on the long table's build of the suite.
    return load_script("compare").read_runs([os.path.join(RUNS, "2026-12-07_suite_30s.json")])


def test_the_results_page_long_table_and_both_rankings_are_the_stored_runs():
    compare, rankings = load_script("compare"), _rankings()
    long = _long_runs()
    # Both seeds of every arm on the four benchmarks, each trained to its plateau.
    cells = {(r["benchmark"], compare.arm(r), r["seed"]) for r in long}
    assert len(cells) == len(long) == 4 * 14 * 2
    assert all(r["stopped"] == "plateau" for r in long)
    with open(os.path.join(ROOT, "docs", "results.md")) as f:
        page = f.read()
    assert compare.suite_matrix(long, 0.9).strip() in page
    assert compare.plateau_matrix(long).strip() in page
    assert rankings.ranking_table(_short_runs(), long).strip() in page
    # The README's plateau ranks are the aggregate's order (ties share a rank).
    order = compare.aggregate(long)
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    for a in order:
        if a["loss"] == "sst_paper":
            continue
        rank = 1 + sum(b["mean_rank"] < a["mean_rank"] for b in order)
        tied = sum(b["mean_rank"] == a["mean_rank"] for b in order) > 1
        row = next(line for line in readme.splitlines() if line.startswith(f"| `{a['loss']}` |"))
        assert row.endswith(f"| {rank}{'=' if tied else ''} |"), (row, rank)


def test_the_command_names_a_missing_file_in_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "study/rankings.py", f"--short={tmp_path}/nowhere.json",
         f"--long={tmp_path}/nowhere.json"], cwd=ROOT, capture_output=True, text=True,
        timeout=120, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr
    assert f"{tmp_path}/nowhere.json" in errors[0] and "Traceback" not in proc.stderr
