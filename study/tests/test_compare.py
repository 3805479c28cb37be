"""study/compare.py: seeds, mean ± std, runs not above the untrained model marked failed."""

import json
import os
import statistics
import subprocess
import sys

import pytest
from _study import load_script
from _suite_data import backbone_weights, digit_folders

from sst_tf import loss_registry

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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
    cmd = [sys.executable, "study/compare.py", "--flagfile=configs/digits.cfg",
           f"--out_dir={tmp_path}", "--losses=contrastive,multi_similarity", "--seeds=0,1",
           "--epochs=1", "--image_size=16", "--resize_size=16", "--batch_size=40",
           "--samples_per_class=4"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "compare.json").read_text())
    assert [(r["loss"], r["seed"]) for r in results] == [
        ("contrastive", 0), ("contrastive", 1), ("multi_similarity", 0),
        ("multi_similarity", 1)]
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
    assert "| contrastive | class_balanced | euclidean |" in table
    assert "| multi_similarity | class_balanced | cosine |" in table
    assert (tmp_path / "compare.png").stat().st_size > 1000
    # --from_json merges earlier runs without training.
    merged = tmp_path / "merged"
    src = tmp_path / "compare.json"
    proc = subprocess.run([sys.executable, "study/compare.py", "--flagfile=configs/digits.cfg",
                           f"--out_dir={merged}", f"--from_json={src}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((merged / "compare.json").read_text()) == results


def _curve_run(loss, bench, seed, before, points, sampler="local"):
    """A finished run with curve [(seconds, MAP@R)], its last point the final MAP@R."""
    curve = [{"epoch": e, "train_seconds": t, "map@r": m} for e, (t, m) in enumerate(points)]
    after = {"map@r": points[-1][1], "r_precision": 0.0, "recall@1": 0.0, "nmi": 0.0}
    return {"loss": loss, "sampler": sampler, "seed": seed, "benchmark": bench,
            "train_seconds": points[-1][0], "before": {"map@r": before}, "after": after,
            "curve": curve, "settings": {"geometry": "cosine"}}


def test_seconds_to_share_of_the_benchmarks_best():
    compare = _load_compare()
    runs = [_curve_run("sst", "a", 0, 0.1, [(0, 0.1), (10, 0.5), (20, 0.8)]),
            _curve_run("sst", "a", 1, 0.1, [(0, 0.1), (12, 0.75), (24, 0.8)]),
            _curve_run("triplet", "a", 0, 0.1, [(0, 0.1), (10, 0.3), (20, 0.6)]),
            _curve_run("contrastive", "a", 0, 0.1, [(0, 0.1), (5, 0.73), (9, 0.7)])]
    # Best mean final: sst 0.8; target 0.9 * 0.8 = 0.72.
    times = compare.seconds_to_share(runs, 0.9)
    assert times[("sst", "local")] == f"{statistics.fmean([20, 12]):.0f}"
    assert times[("triplet", "local")] == "not reached"
    assert times[("contrastive", "local")] == "5"   # the first evaluation at the target
    runs.append(_curve_run("sst", "a", 2, 0.1, [(0, 0.1), (30, 0.6), (40, 0.65)]))
    best = statistics.fmean([0.8, 0.8, 0.65])
    assert 0.65 < 0.9 * best  # the new seed never reaches the (lower) target
    assert compare.seconds_to_share(runs, 0.9)[("sst", "local")] == "16 (2/3 runs)"


def test_aggregate_mean_rank_and_gain_over_the_floor():
    compare = _load_compare()
    runs = [_curve_run("sst", "a", 0, 0.1, [(0, 0.1), (5, 0.5)]),
            _curve_run("triplet", "a", 0, 0.2, [(0, 0.2), (5, 0.6)]),
            _curve_run("sst", "b", 0, 0.3, [(0, 0.3), (5, 0.9)]),
            _curve_run("triplet", "b", 0, 0.3, [(0, 0.3), (5, 0.25)])]  # failed on b
    rows = {a["loss"]: a for a in compare.aggregate(runs)}
    assert rows["sst"]["mean_rank"] == statistics.fmean([2, 1])
    assert rows["triplet"]["mean_rank"] == statistics.fmean([1, 2])  # failed: last rank
    assert rows["sst"]["mean_gain"] == pytest.approx(statistics.fmean([0.4, 0.6]))
    assert rows["triplet"]["mean_gain"] == pytest.approx(statistics.fmean([0.4, -0.05]))
    assert rows["triplet"]["failed"] == 1 and rows["sst"]["failed"] == 0
    text = compare.suite_markdown(runs, 0.9)
    assert "### a" in text and "### b" in text and "### aggregate" in text
    assert "| sst | local | 1.50 | +0.500 | 2 | 0 |" in text
    matrix = compare.suite_matrix(runs, 0.9).splitlines()
    assert matrix[0] == "| loss | sampler | a | b |"
    # a: best 0.6, target 0.54: triplet reaches it at 5 s, sst never; b: triplet failed.
    assert matrix[2] == "| sst | local | 0.500, not reached | 0.900, 5 s |"
    assert matrix[3] == "| triplet | local | 0.600, 5 s | failed (0/1) |"
    assert matrix[4] == "| floor (before training) | | 0.100-0.200 | 0.300-0.300 |"
    assert text.index("### MAP@R on every benchmark") < text.index("### a")
    runs.append(_curve_run("sst", "b", 1, 0.3, [(0, 0.3), (5, 0.5)]))  # misses b's target
    assert compare.suite_matrix(runs, 0.9).splitlines()[2].endswith(
        f"| {statistics.fmean([0.9, 0.5]):.3f} ± {statistics.stdev([0.9, 0.5]):.3f}, "
        "5 s (1/2 runs) |")
    # The ranked table: the aggregate's order (ties by the larger gain), no seconds.
    ranked = compare.ranked_matrix(runs).splitlines()
    assert ranked[0] == "| loss | sampler | a | b | mean rank | mean gain |"
    b_cell = f"{statistics.fmean([0.9, 0.5]):.3f} ± {statistics.stdev([0.9, 0.5]):.3f}"
    sst_gain = statistics.fmean([0.4, statistics.fmean([0.6, 0.2])])
    assert ranked[2] == f"| sst | local | 0.500 | {b_cell} | 1.50 | {sst_gain:+.3f} |"
    assert ranked[3] == "| triplet | local | 0.600 | failed (0/1) | 1.50 | +0.175 |"
    assert ranked[4] == "| floor (before training) | | 0.100-0.200 | 0.300-0.300 | | |"
    assert "### Ranked" in compare.suite_markdown(runs, 0.9)


def test_parse_benchmarks_names_the_flag():
    compare = _load_compare()
    assert compare.parse_benchmarks(["a=/x", "b=/y=z"]) == [("a", "/x"), ("b", "/y=z")]
    with pytest.raises(ValueError, match="--benchmarks entries are name=data_dir"):
        compare.parse_benchmarks(["a"])
    with pytest.raises(ValueError, match="--benchmarks names 'a' twice"):
        compare.parse_benchmarks(["a=/x", "a=/y"])


def _two_benchmarks_and_weights(root) -> str:
    """Folder benchmarks root/a and root/b and a small_cnn backbone file; returns its path."""
    digit_folders(root / "a", 0)
    digit_folders(root / "b", 8)
    return backbone_weights(root / "w.weights.h5")


@pytest.mark.slow
def test_suite_runs_each_benchmark_to_the_budget_and_from_the_weights(tmp_path):
    weights = _two_benchmarks_and_weights(tmp_path)
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    out = tmp_path / "out"
    cmd = [sys.executable, "study/compare.py", "--dataset=folder", "--backbone=small_cnn",
           "--nopretrained", "--image_size=8", "--resize_size=8", "--norandom_flip",
           "--embedding_dim=8", "--batch_size=16", "--samples_per_class=4", "--num_targets=3",
           f"--out_dir={out}", "--losses=sst,multi_similarity", "--seeds=0",
           f"--benchmarks=a={tmp_path / 'a'},b={tmp_path / 'b'}", "--budget_seconds=0.001",
           "--pretrained_benchmarks=b", f"--suite_weights={weights}", "--threads=1",
           "--epochs=50"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "compare.json").read_text())
    assert [(r["benchmark"], r["loss"]) for r in results] == [
        (b, loss) for b in ("a", "b", "b+pretrained") for loss in ("sst", "multi_similarity")]
    for r in results:
        assert "error" not in r, r
        # The budget (far below one epoch) ends the run after its first epoch, not --epochs.
        assert r["epochs"] == 1 and [p["epoch"] for p in r["curve"]] == [0, 1]
        assert (out / r["benchmark"] / f"{r['loss']}-{r['sampler']}-seed0"
                / "metrics.json").is_file()
    scratch = {r["loss"]: r for r in results if r["benchmark"] == "b"}
    pre = {r["loss"]: r for r in results if r["benchmark"] == "b+pretrained"}
    for loss in scratch:  # another starting point: another untrained floor
        assert pre[loss]["before"]["map@r"] != scratch[loss]["before"]["map@r"]
    table = (out / "compare.md").read_text()
    for head in ("### a", "### b", "### b+pretrained", "### aggregate"):
        assert head in table
    assert (out / "compare.png").stat().st_size > 1000
    r = subprocess.run(cmd[:-4] + ["--pretrained_benchmarks=c"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "--pretrained_benchmarks" in r.stderr.strip().splitlines()[-1]
    for bad, flag in ((["--noscratch", "--pretrained_benchmarks="], "--noscratch"),
                      (["--benchmark_name=x"], "--benchmark_name"),
                      (["--variant=v:loss=sst", "--variant=v:loss=triplet"], "--variant"),
                      (["--variant=v:marginn=0.1"], "--variant v: unknown field")):
        r = subprocess.run(cmd + bad, cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 2 and flag in r.stderr.strip().splitlines()[-1], r.stderr


@pytest.mark.slow
def test_noscratch_and_a_named_single_set_join_one_suite_table(tmp_path):
    weights = _two_benchmarks_and_weights(tmp_path)
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    common = [sys.executable, "study/compare.py", "--dataset=folder", "--backbone=small_cnn",
              "--nopretrained", "--image_size=8", "--resize_size=8", "--norandom_flip",
              "--embedding_dim=8", "--batch_size=16", "--samples_per_class=4",
              "--num_targets=3", "--losses=sst", "--seeds=0", "--epochs=1", "--threads=1"]
    pre, single, merged = tmp_path / "pre", tmp_path / "single", tmp_path / "merged"
    ref = tmp_path / "ref"
    runs = [common + [f"--out_dir={pre}", f"--benchmarks=b={tmp_path / 'b'}", "--noscratch",
                      "--pretrained_benchmarks=b", f"--suite_weights={weights}"],  # default: cpu
            common + [f"--out_dir={single}", f"--data_dir={tmp_path / 'a'}",
                      "--benchmark_name=digits_like", "--budget_clock=wall"],
            common + [f"--out_dir={ref}", f"--data_dir={tmp_path / 'a'}",
                      "--benchmark_name=digits_like", "--budget_clock=reference"],
            common + [f"--out_dir={tmp_path / 'arms'}", f"--data_dir={tmp_path / 'a'}",
                      "--variant=m01:loss=triplet,margin=0.1,normalize=true",
                      "--variant=m05:loss=triplet,margin=0.5,normalize=false"]]
    for cmd in runs:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    pre_runs = json.loads((pre / "compare.json").read_text())
    single_runs = json.loads((single / "compare.json").read_text())
    assert [r["benchmark"] for r in pre_runs] == ["b+pretrained"]  # no scratch run of b
    assert [r["benchmark"] for r in single_runs] == ["digits_like"]
    # Training seconds on the clock asked for: by default CPU time, elapsed with wall, and
    # with reference CPU time scaled by the speed probe measured before the epoch.
    ref_runs = json.loads((ref / "compare.json").read_text())
    assert pre_runs[0]["clock"] == "cpu" and single_runs[0]["clock"] == "wall"
    assert ref_runs[0]["clock"] == "reference"
    assert single_runs[0]["train_seconds"] == single_runs[0]["wall_seconds"]
    assert 0 < pre_runs[0]["train_seconds"] != pre_runs[0]["wall_seconds"]
    for r in pre_runs + single_runs + ref_runs:  # one probe per epoch, or one before training
        assert len(r["reference_op_seconds"]) == 1 and r["reference_op_seconds"][0] > 0
    # The probe does not touch the training: the same run on the wall clock ends the same.
    assert ref_runs[0]["after"] == single_runs[0]["after"]
    assert ref_runs[0]["curve"][0] == single_runs[0]["curve"][0]
    assert (single / "digits_like" / "sst-local-seed0" / "metrics.json").is_file()
    # --variant: named arms in place of --losses, each with its own settings.
    arms = json.loads((tmp_path / "arms" / "compare.json").read_text())
    assert [(r["variant"], r["loss"], r["settings"]["margin"], r["settings"]["geometry"])
            for r in arms] == [("m01", "triplet", 0.1, "cosine"),
                               ("m05", "triplet", 0.5, "euclidean")]
    assert (tmp_path / "arms" / "m01-local-seed0" / "metrics.json").is_file()
    arms_table = (tmp_path / "arms" / "compare.md").read_text()
    assert "| m01 | local | cosine |" in arms_table and "| m05 | local | euclidean |" in arms_table
    proc = subprocess.run(common + [f"--out_dir={merged}", f"--data_dir={tmp_path / 'a'}",
                                    "--budget_seconds=60",
                                    f"--from_json={pre / 'compare.json'},"
                                    f"{single / 'compare.json'}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (merged / "compare.md").read_text()
    for head in ("### b+pretrained", "### digits_like", "### aggregate"):
        assert head in table
    assert "| sst | local | 1.00 |" in table  # the one loss ranks first on both
    assert "60 training seconds (cpu/wall clock;" in table  # the stored runs' clocks
    # Without --budget_seconds the header gives the stored runs' own seconds and epochs.
    proc = subprocess.run(common + [f"--out_dir={tmp_path / 'merged2'}",
                                    f"--data_dir={tmp_path / 'a'}",
                                    f"--from_json={pre / 'compare.json'}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = json.loads((pre / "compare.json").read_text())
    seconds = [r["train_seconds"] for r in runs]
    assert (tmp_path / "merged2" / "compare.md").read_text().startswith(
        f"Stored runs of `b+pretrained`: {min(seconds):.0f}-{max(seconds):.0f} training "
        f"seconds (")


def test_plot_of_budget_runs_whose_seeds_reach_different_epochs(tmp_path):
    compare = _load_compare()
    runs = [_curve_run("sst", None, 0, 0.1, [(0, 0.1), (10, 0.5), (20, 0.8)]),
            _curve_run("sst", None, 1, 0.1, [(0, 0.1), (12, 0.6)]),  # one epoch fewer
            _curve_run("triplet", None, 0, 0.1, [(0, 0.1), (9, 0.3), (18, 0.4), (27, 0.5)])]
    for r in runs:
        del r["benchmark"]
    path = str(tmp_path / "plot.png")
    compare.plot(runs, path, "budget")  # raised IndexError before
    assert os.path.getsize(path) > 1000


def test_suite_plot_labels_a_loss_that_failed_on_the_first_benchmark(tmp_path, monkeypatch):
    compare = _load_compare()
    runs = []
    for bench in ("glyphs", "digits"):
        for seed in (0, 1):
            runs.append({**_run("sst", seed, 0.2, 0.6), "benchmark": bench})
            # Proxy-Anchor ends below its floor on the first benchmark only.
            after = 0.1 if bench == "glyphs" else 0.7
            runs.append({**_run("proxy_anchor", seed, 0.2, after), "benchmark": bench})
    figures = []
    monkeypatch.setattr(compare, "_save_figure", lambda fig, path: figures.append(fig))
    compare.suite_plot(runs, str(tmp_path / "suite.png"))
    legend = [t.get_text() for t in figures[0].axes[0].get_legend().get_texts()]
    assert legend == ["sst / class_balanced", "proxy_anchor / class_balanced"]


def _stored(*names):
    """The runs of these study/docs/suite_runs files, concatenated."""
    runs = []
    for name in names:
        with open(os.path.join(ROOT, "study", "docs", "suite_runs", f"{name}.json")) as f:
            runs.extend(json.load(f))
    return runs


def _study_section(start, stop):
    """The text of study/docs/sst_study.md from `start` up to `stop`."""
    with open(os.path.join(ROOT, "study", "docs", "sst_study.md")) as f:
        text = f.read()
    return text[text.index(start):text.index(stop)]


def test_stored_suite_runs_rebuild_the_aggregate_of_the_study():
    """study/docs/suite_runs holds the runs of sst_study.md section 12: its aggregate is theirs."""
    compare = _load_compare()
    runs = _stored("2026-12-03_scratch_seed0_60s", "2026-12-03_cross_script_pretrained_60s",
                   "2026-12-03_digits_30s")
    section = _study_section("## 12.", "## 13.")
    rows = {line.split(" | ")[0].strip("| "): line for line in section.splitlines()
            if line.startswith("| ") and "mean rank" not in line}
    aggregate = compare.aggregate(runs)
    assert len(aggregate) == 11
    for a in aggregate:
        row = rows[a["loss"]]
        assert f"{a['mean_rank']:.2f}" in row and f"{a['mean_gain']:+.3f}" in row, row


def test_stored_validation_runs_give_the_table_of_section_13():
    """The validation table of sst_study.md section 13 is the mean of the stored runs."""
    runs = _stored("2026-12-03b_val_defaults_60s", "2026-12-03_val_triplet_contrastive_60s")
    section = _study_section("## 13.", "Three defaults changed")
    # Table rows by arm, in the order of the stored variants.
    arms = {"sst": "sst (previous default", "sst_refresh_memory": "**sst, `--refresh=memory`**",
            "sst_mem_t3": "sst, memory, `--num_targets=3`",
            "triplet": "triplet (previous default", "triplet_l2_m01": "**triplet, unit vectors",
            "npairs": "npairs (previous default", "npairs_s16": "**npairs, `--npairs_scale=16`**"}
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    benchmarks = ("cross_script", "within_script", "typeface", "many_classes")
    for arm, label in arms.items():
        row = next(line for line in lines if line.startswith(f"| {label}"))
        cells = [c.strip().strip("*") for c in row.strip("|").split("|")][1:5]
        for bench, cell in zip(benchmarks, cells, strict=True):
            values = [r["after"]["map@r"] for r in runs
                      if r.get("variant") == arm and r["benchmark"] == bench and "after" in r]
            assert cell.startswith(f"{statistics.fmean(values):.3f}"), (arm, bench, cell)



def test_the_header_reports_the_speed_probes_of_the_runs():
    compare = _load_compare()
    runs = [dict(_run("sst", 0, 0.1, 0.5), reference_op_seconds=[0.030, 0.040]),
            dict(_run("sst", 1, 0.1, 0.5), reference_op_seconds=[0.020]),
            _run("sst", 2, 0.1, 0.5)]  # stored before the probes: no field
    text = compare.probe_summary(runs)
    assert "median 30.0 ms over 3 probes, range 20.0-40.0 ms" in text
    assert f"{compare.REFERENCE_OP_SECONDS * 1000:.1f} ms" in text
    assert compare.probe_summary(runs[2:]) == ""


def test_the_header_warns_when_merged_runs_ran_at_different_speeds():
    compare = _load_compare()
    slow = dict(_run("sst", 0, 0.1, 0.5), reference_op_seconds=[0.032, 0.031, 0.033])
    fast = dict(_run("sst", 1, 0.1, 0.5), reference_op_seconds=[0.012])
    text = compare.probe_summary([slow, fast])
    assert "The runs' probes differ by 2.67 x" in text and "by epochs" in text
    near = dict(fast, reference_op_seconds=[0.032 / compare.MIXED_SPEED_RATIO * 1.01])
    assert "differ" not in compare.probe_summary([slow, near])


def test_stored_runs_of_section_14_give_its_aggregate():
    """sst_study.md section 14 is the aggregate of its stored runs."""
    compare = _load_compare()
    runs = _stored("2026-12-03c_scratch_seeds12_60s", "2026-12-03c_pretrained_seed0_60s",
                   "2026-12-03c_digits_seed0_30s")
    section = _study_section("## 14.", "## 15.")
    aggregate = compare.aggregate(runs)
    assert len(aggregate) == 11 and len(runs) == 110
    for a in aggregate:
        rank, gain = f"{a['mean_rank']:.2f}", f"{a['mean_gain']:+.3f}"
        assert f"| {a['loss']} | {a['sampler']} | {rank} | {gain} |" in section, a


# The eleven losses of the 30-second tables of sections 15-17 (section 19 has them all).
SUITE_LOSSES = ("sst", "triplet", "contrastive", "triplet_semihard", "triplet_hard",
                "triplet_hard_soft", "lifted_struct", "npairs", "pairwise_contrastive",
                "multi_similarity", "proxy_anchor")
SUITE_15 = ("cross_script", "within_script", "typeface", "many_classes",
            "cross_script+pretrained", "digits")


def _assert_suite_table(runs, section):
    """Every row of a suite table's aggregate is its runs' mean rank and mean gain."""
    compare = _load_compare()
    for a in compare.aggregate(runs):
        rank, gain = f"{a['mean_rank']:.2f}", f"{a['mean_gain']:+.3f}"
        assert f"| {a['loss']} | {a['sampler']} | {rank} | {gain} |" in section, a


def _assert_complete_suite(runs, losses=SUITE_LOSSES):
    """Every loss x six benchmarks x seeds 0-2, on the CPU clock at one machine speed."""
    compare = _load_compare()
    cells = {}
    for r in runs:
        cells.setdefault((r["loss"], r["benchmark"]), []).append(r["seed"])
    assert len(runs) == len(losses) * 6 * 3
    assert {loss for loss, _ in cells} == set(losses)
    assert all(sorted(seeds) == [0, 1, 2] for seeds in cells.values())
    assert {bench for _, bench in cells} == set(SUITE_15)
    assert {r["clock"] for r in runs if "error" not in r} == {"cpu"}
    assert "differ" not in compare.probe_summary(runs)


def test_the_suite_table_of_section_15_is_its_stored_runs():
    """All eleven losses x six benchmarks x three seeds, one session: the table is theirs."""
    runs = _stored("2026-12-05_suite_30s")
    _assert_complete_suite(runs)
    _assert_suite_table(runs, _study_section("## 15.", "## 16."))


# The losses whose defaults section 16 changed; their suite rows were rerun.
RETUNED_16 = ("pairwise_contrastive", "proxy_anchor")


def test_the_suite_table_of_section_16_is_its_stored_runs():
    """Section 15's runs with the two retuned losses rerun in their new defaults."""
    reruns = _stored("2026-12-06_suite_retuned_30s")
    assert {r["loss"] for r in reruns} == set(RETUNED_16)
    runs = [r for r in _stored("2026-12-05_suite_30s") if r["loss"] not in RETUNED_16]
    runs += reruns
    _assert_complete_suite(runs)
    # The reruns trained with the new defaults (digits.cfg sets its own K = 10).
    for r in reruns:
        s = r["settings"]
        if r["loss"] == "proxy_anchor":
            assert s["sampler"] == "random", r["benchmark"]
        elif r["benchmark"] != "digits":
            assert s["samples_per_class"] == 5, r["benchmark"]
    _assert_suite_table(runs, _study_section("## 16.", "## 17."))


# The losses whose defaults section 17 changed (their learning rates), rerun.
RETUNED_17 = {"proxy_anchor": 0.25, "triplet_hard": 0.1}


def test_the_suite_table_of_section_17_is_its_stored_runs():
    """Section 16's table with the two losses of section 17 rerun."""
    reruns = _stored("2026-12-06b_suite_retuned_30s")
    assert {r["loss"] for r in reruns} == set(RETUNED_17)
    for r in reruns:
        assert r["settings"]["loss_lr_multiplier"] == RETUNED_17[r["loss"]], r["benchmark"]
    runs = [r for r in _stored("2026-12-05_suite_30s")
            if r["loss"] not in RETUNED_16 + tuple(RETUNED_17)]
    runs += [r for r in _stored("2026-12-06_suite_retuned_30s")
             if r["loss"] == "pairwise_contrastive"]
    runs += reruns
    _assert_complete_suite(runs)
    _assert_suite_table(runs, _study_section("## 17.", "## 18."))


def test_the_suite_table_of_section_19_the_results_page_and_the_readme_are_its_runs():
    """Every loss of the registry in its defaults of one day, on one build of the suite."""
    compare = _load_compare()
    runs = _stored("2026-12-07_suite_30s")
    _assert_complete_suite(runs, loss_registry.LOSSES)
    for r in runs:  # each run trained in today's registry defaults of its loss
        spec, s = loss_registry.spec(r["loss"]), r["settings"]
        assert r["variant"] == r["loss"] and r["sampler"] == spec.sampler, r["loss"]
        assert s["params"] == loss_registry.loss_params(r["loss"]), r["loss"]
        assert (s["margin"], s["loss_lr_multiplier"]) == (spec.margin, spec.lr_multiplier)
    table = compare.ranked_matrix(runs).strip()
    with open(os.path.join(ROOT, "docs", "results.md")) as f:
        page = f.read()
    assert table in _study_section("## 19.", "## Not done") and table in page
    # The README's 30-second ranks are the aggregate's order (ties share a rank).
    order = compare.aggregate(runs)
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    for a in order:
        rank = 1 + sum(b["mean_rank"] < a["mean_rank"] for b in order)
        tied = sum(b["mean_rank"] == a["mean_rank"] for b in order) > 1
        row = next(line for line in readme.splitlines() if line.startswith(f"| `{a['loss']}` |"))
        assert row.split(" | ")[-2] == f"{rank}{'=' if tied else ''}", (row, rank)


def _assert_validation_table(runs, section):
    """Each arm's row of a validation table: MAP@R means of its passed runs per set, and
    their mean over the four sets when every set has a passed run."""
    compare = _load_compare()
    lines = [line for line in section.splitlines() if line.startswith("| `")]
    benchmarks = ("cross_script", "within_script", "typeface", "many_classes")
    arms = list(dict.fromkeys(r["variant"] for r in runs))
    for arm in arms:
        row = next(line for line in lines if line.startswith(f"| `{arm}`"))
        cells = [c.strip().strip("*") for c in row.strip("|").split("|")][2:7]
        means = []
        for bench, cell in zip(benchmarks, cells[:4], strict=True):
            passed = [r["after"]["map@r"] for r in runs if r["variant"] == arm
                      and r["benchmark"] == bench and compare.failure(r) is None]
            if passed:
                means.append(statistics.fmean(passed))
                assert cell.startswith(f"{means[-1]:.3f}"), (arm, bench, cell)
            else:
                assert cell.startswith("failed"), (arm, bench, cell)
        want = f"{statistics.fmean(means):.3f}" if len(means) == len(benchmarks) else "-"
        assert cells[4] == want, (arm, cells[4])
    return arms


def test_stored_validation_runs_give_the_table_of_section_15():
    """The validation table of sst_study.md section 15 is the mean of the stored runs."""
    arms = _assert_validation_table(_stored("2026-12-05_val_30s"),
                                    _study_section("## 15.", "## 16."))
    assert len(arms) >= 9


def _assert_paired_table(runs, section, default_of=None):
    """Each `| arm | gain | t | won |` row of a section: the arm's paired gain over its
    default (`default_of(arm)`; None: the arm's name without its last `_part`; same set
    and seed) in its runs."""
    value = {(r["variant"], r["benchmark"], r["seed"]): r["after"]["map@r"] for r in runs}
    rows = [line for line in section.splitlines() if line.startswith("| `")
            and line.count("|") == 5]  # | arm | gain | t | won |
    for row in rows:
        arm, gain, t, won = [c.strip().strip("`") for c in row.strip("|").split("|")]
        # pa_random -> pa, pairwise_k5 -> pairwise
        default = default_of(arm) if default_of else arm.rsplit("_", 1)[0]
        diffs = [v - value[(default, bench, seed)] for (a, bench, seed), v in value.items()
                 if a == arm]
        mean = statistics.fmean(diffs)
        se = statistics.stdev(diffs) / len(diffs) ** 0.5
        assert (gain, t, won) == (f"{mean:+.3f}", f"{mean / se:.1f}",
                                  f"{sum(d > 0 for d in diffs)}/{len(diffs)}"), row
    return rows


def test_stored_validation_runs_give_the_tables_of_section_16():
    """Section 16's validation table and its paired gains are those of the stored runs."""
    runs = _stored("2026-12-06_val_baselines_30s")
    section = _study_section("## 16.", "## 17.")
    arms = _assert_validation_table(runs, section)
    assert len(arms) >= 36  # SST's candidate and 5 arms of each of the 7 baselines
    assert len(_assert_paired_table(runs, section)) >= 8


def test_stored_validation_runs_give_the_tables_of_section_17():
    """Section 17's arms, each paired with its default rerun in the same session."""
    runs = _stored("2026-12-06b_val_baselines_30s")
    section = _study_section("## 17.", "## 18.")
    arms = _assert_validation_table(runs, section)
    defaults = [a for a in arms if "_" not in a]
    assert len(defaults) == 10  # every baseline's default, rerun beside its arms
    for arm in arms:
        assert arm.rsplit("_", 1)[0] in defaults, arm
        assert len([r for r in runs if r["variant"] == arm]) == 8, arm
    rows = _assert_paired_table(runs, section)
    assert len(rows) == len(arms) - len(defaults)  # every arm's paired gain is shown


def test_stored_validation_runs_give_the_tables_of_section_18():
    """Section 18: six arms of each of the six newest losses beside its default."""
    runs = _stored("2026-12-07_val_new_losses_30s")
    section = _study_section("## 18.", "## 19.")
    arms = _assert_validation_table(runs, section)
    loss_of = {r["variant"]: r["loss"] for r in runs}
    defaults = [a for a in arms if loss_of[a] == a]
    assert sorted(defaults) == sorted(["circle", "supcon", "ntxent", "arcface", "cosface",
                                       "subcenter_arcface"])
    for arm in arms:
        assert len([r for r in runs if r["variant"] == arm]) == 8, arm
    for loss in defaults:
        assert len([a for a in arms if loss_of[a] == loss]) == 7, loss  # default + 6 arms
    rows = _assert_paired_table(runs, section, default_of=loss_of.get)
    assert len(rows) == len(arms) - len(defaults)  # every arm's paired gain is shown


# Bad input (rows of docs/errors.md): (id, argv, words of the one error line).
BAD_INPUT = [
    ("compare-no-out-dir", [], ["--out_dir is required"]),
    ("compare-out-dir-user-folder", ["--out_dir={user}"], ["--out_dir={user}", "did not write"]),
    ("compare-from-json-missing", ["--out_dir={tmp}/cmp", "--from_json={tmp}/nowhere.json"],
     ["--from_json={tmp}/nowhere.json"]),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c[0]) for c in BAD_INPUT])
def test_bad_input(case, tmp_path):
    _, argv, words = case
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("the user's\n")
    names = {"user": str(user), "tmp": str(tmp_path)}
    cmd = [sys.executable, "study/compare.py", "--flagfile=configs/digits.cfg",
           *(a.format(**names) for a in argv)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert proc.returncode == 2, proc.stderr
    assert len(errors) == 1 and errors[0].startswith("compare.py: error: "), proc.stderr
    for word in words:
        assert word.format(**names) in errors[0], (word, errors[0])
    assert "Traceback" not in proc.stderr
    assert (user / "notes.txt").read_text() == "the user's\n"
