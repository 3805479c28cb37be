r"""Compare losses on one data set, each in its own defaults, over several seeds.

  python study/compare.py --flagfile=configs/digits.cfg --out_dir=runs/compare \
      --losses=sst,triplet,multi_similarity,proxy_anchor --seeds=0,1,2 --epochs=20

Every `sst_tf.train` flag sets the shared configuration (data set, model,
epochs, learning rate, ...). Each loss runs with its documented defaults
(`sst_tf.loss_registry`: normalisation, sampler, margin, learning-rate factor)
unless a flag given here sets them for all; `--samplers` optionally spans a
grid of samplers. Every (loss, sampler) trains once per seed in this process
for the same number of epochs (the learning-rate plateau schedule applies,
early stopping does not, so every method gets the same budget) and is
evaluated on the test split every `--compare_eval_every` epochs, in the
geometry of its own model (unit vectors when it normalises).

A run whose final MAP@R is not above the untrained model's (same seed, same
geometry) is marked failed, as is a run that raised: it is listed as failed in
the table and left out of the statistics and the plot.

Writes to --out_dir: `compare.md` (Markdown table: mean ± std over the passed
seeds of MAP@R, R-Precision, Recall@1, NMI, the untrained model's MAP@R, the
failed runs), `compare.png` (MAP@R against epoch and against training seconds, final
MAP@R per loss),
`compare.json` (every run with its curve and settings) and one model_dir per
run (`<loss>-<sampler>-seed<seed>/`, final checkpoint and metrics.json).
`--variant=NAME:field=value,...` (repeatable) replaces `--losses` x
`--samplers` by named arms, e.g. a baseline at other parameters
(`--variant=triplet_m01:loss=triplet,margin=0.1,normalize=true`): each is a row
of the tables under its name, so a grid runs on the suite's validation splits
(`--benchmarks=cross_script=data/suite/cross_script/val,...`) like the losses.
`--from_json=a/compare.json,b/compare.json` trains nothing and writes the
table and plot of earlier runs together (a later file replaces the runs of
every arm, benchmark and seed it holds).

The suite (study/docs/devbench.md#the-benchmark-suite): `--benchmarks=name=dir,...`
runs every loss x seed on each data set (`--pretrained_benchmarks` also from
`--suite_weights`, with a smaller backbone and larger head rate), and
`--budget_seconds` gives every run the same training time (whole epochs until
the budget) instead of `--epochs`, measured by default in the process's CPU
time (`--budget_clock=cpu`; `reference` scales it by a speed probe,
study/clock.py; `wall` for elapsed time). A CPU second is equal work only
within one session of one machine: run a table's cells in one session, one job
per core (compare.md warns when merged runs' speed probes disagree).
`--noscratch` runs only the pretrained variants (a second process can take
them on another core), and `--benchmark_name=NAME`
names the flags' one data set, so that a run of another config (digits:
`--flagfile=configs/digits.cfg --benchmark_name=digits`) joins the suite's
tables through `--from_json`. compare.md then has one table per
benchmark, the training seconds each loss needs to reach `--share` (0.9) of
the benchmark's best mean MAP@R, and an aggregate (mean rank, mean gain over
the floor = the model before training); compare.png one bar per benchmark and
loss. `--quick` is the subset run in study/docs/sst_study.md:

  taskset -c 1 python study/compare.py --flagfile=configs/glyphs.cfg --quick \
      --suite_dir=data/suite --suite_weights=data/suite/small_cnn_han.weights.h5 \
      --threads=1 --out_dir=runs/quick
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import os
import statistics
import sys
import traceback

import keras
from absl import flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from clock import (  # noqa: E402
    CLOCKS,
    REFERENCE_OP_SECONDS,
    TrainingClock,
    reference_op_seconds,
)
from plateau import run_to_plateau  # noqa: E402

from sst_tf import cli, config_flags, loss_registry  # noqa: E402
from sst_tf import train as train_cli  # noqa: E402  (defines the shared training flags)
from sst_tf.config import LOSSES  # noqa: E402
from sst_tf.outputs import check_output_dir, write_marker, write_text_atomic  # noqa: E402

flags.DEFINE_list("losses", list(LOSSES), "Losses to compare (--loss values).")
flags.DEFINE_list("samplers", [], "Samplers to compare (--sampler values); empty: each "
                  "loss's default sampler.")
flags.DEFINE_multi_string("variant", None, "NAME:field=value,... (sst_tf.train flag names): "
                          "one arm of the comparison, in place of --losses x --samplers; "
                          "loss= picks the loss (default: --loss), fields not set take the "
                          "loss's defaults. E.g. --variant=triplet_m01:loss=triplet,margin=0.1,"
                          "normalize=true.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds; every (loss, sampler) runs once per seed.")
flags.DEFINE_string("out_dir", None, "Output folder of the comparison.")
flags.DEFINE_integer("compare_eval_every", 1, "Evaluate every N epochs for the curves.")
flags.DEFINE_float("budget_seconds", 0.0, "Equal training-time budget per run (--budget_clock): "
                   "train whole epochs until this many training seconds (sampling + steps) "
                   "have passed, then evaluate; 0: --epochs epochs.")
flags.DEFINE_integer("plateau_patience", 0, "The budget to the plateau (study/plateau.py): "
                     "train until the validation MAP@R (training classes only: a benchmark's "
                     "val/ folder, else half of every training class's images) has not "
                     "improved for this many evaluations (every --compare_eval_every "
                     "epochs), at most --epochs epochs; the result is the test evaluation at "
                     "the best validation MAP@R. Runs and the suite resume where they "
                     "stopped. 0: off (--budget_seconds or --epochs).")
flags.DEFINE_float("plateau_min_delta", 0.0, "With --plateau_patience: the validation MAP@R "
                   "must rise by more than this to count as an improvement.")
flags.DEFINE_enum("budget_clock", "cpu", list(CLOCKS), "Clock of --budget_seconds and of "
                  "the curves' training seconds: cpu = the process's CPU time (not shortened "
                  "by a job sharing the core; equal work within one session, but one CPU "
                  "second was twice the work in one session as in another, so a table's runs "
                  "come from one session: study/docs/sst_study.md sections 14-15), reference = the "
                  "CPU time scaled by a speed probe taken before every epoch (it did not "
                  "carry the unit across sessions: the probe moved 2.7 x where the training "
                  "moved 1.7-2.1 x), wall = elapsed time.")
flags.DEFINE_list("benchmarks", [], "The suite: name=data_dir pairs (e.g. typeface=data/suite/"
                  "typeface); every loss x seed runs on each; one table per benchmark and an "
                  "aggregate. Empty: the one data set of --data_dir.")
flags.DEFINE_list("pretrained_benchmarks", [], "Benchmarks (names of --benchmarks) that also run "
                  "from --suite_weights, as '<name>+pretrained', with lr x --pretrained_lr_scale "
                  "and head_lr_multiplier --pretrained_head_lr_multiplier (the paper's shape: "
                  "small backbone rate, larger head rate).")
flags.DEFINE_bool("scratch", True, "Run every --benchmarks entry from scratch; --noscratch runs "
                  "only the --pretrained_benchmarks variants (e.g. on a second core).")
flags.DEFINE_string("benchmark_name", None, "Without --benchmarks: the name of the flags' one "
                    "data set in compare.json and the tables, so its runs join a suite "
                    "table through --from_json (e.g. digits, with configs/digits.cfg).")
flags.DEFINE_string("suite_weights", None, "Backbone weights file of study/pretrain.py for "
                    "--pretrained_benchmarks.")
flags.DEFINE_float("pretrained_lr_scale", 0.25, "Backbone learning-rate factor of the "
                   "pretrained runs.")
flags.DEFINE_float("pretrained_head_lr_multiplier", 4.0, "Head learning-rate multiplier of the "
                   "pretrained runs.")
flags.DEFINE_float("share", 0.9, "Time to reach this share of a benchmark's best MAP@R (the "
                   "best mean final MAP@R of any loss there) is reported per loss.")
flags.DEFINE_integer("threads", 0, "TensorFlow intra- and inter-op threads (0: TensorFlow's "
                     "choice); pin the process too, e.g. taskset -c 1.")
flags.DEFINE_bool("quick", False, "The quick subset: --losses=sst,contrastive,multi_similarity "
                  "--seeds=0 --budget_seconds=60 on the four benchmarks of --suite_dir, "
                  "cross_script also pretrained from --suite_weights when given (under 20 "
                  "minutes on 2 cores).")
flags.DEFINE_string("suite_dir", "data/suite", "Folder of study/make_suite.py (--quick).")
flags.DEFINE_list("from_json", [], "Train nothing: merge these compare.json files (earlier "
                  "runs with the same training flags as given here) and write their table "
                  "and plot to --out_dir.")

FLAGS = flags.FLAGS

# Columns of the table: (metrics.json key, heading).
METRICS = (("map@r", "MAP@R"), ("r_precision", "R-Precision"), ("recall@1", "Recall@1"),
           ("nmi", "NMI"))


def run_cell(base, loss: str, sampler: str | None, seed: int, out_dir: str,
             eval_every: int, budget_seconds: float = 0.0, benchmark: str | None = None,
             clock: str = "wall", variant: str | None = None,
             overrides: dict | None = None, plateau_patience: int = 0,
             plateau_min_delta: float = 0.0) -> dict:
    """Trains one (loss, sampler, seed) run; returns its curve, metrics and settings.

    `sampler` None means the loss's default. "before" is the untrained model,
    evaluated like "after" (the model's own output geometry). With
    `budget_seconds` > 0 the run trains whole epochs until its training
    seconds reach the budget (the epoch that crosses it is finished), instead
    of `base.epochs` epochs. `clock` "cpu" measures training seconds as the
    process's CPU time (unchanged by other jobs on the core), "reference" as
    that CPU time scaled by the machine's measured speed (study/clock.py),
    "wall" as elapsed time; the elapsed training seconds are recorded either
    way, and so are the speed probes ("reference_op_seconds": one per epoch
    with the reference clock, one before training with the others). `variant`
    names an arm of `--variant` and `overrides` its configuration fields
    (other than loss and sampler). `plateau_patience` > 0 trains to the
    validation plateau instead (study/plateau.py: at most `base.epochs`
    epochs, resumable), and "after" is the test evaluation at the best
    validation MAP@R.
    """
    from sst_tf.trainer import Trainer

    keras.backend.clear_session()
    gc.collect()
    # All training images: the study validates on its own (val/ splits, study/plateau.py).
    cfg = dataclasses.replace(base, **(overrides or {}), loss=loss, sampler=sampler, seed=seed,
                              eval_every=0, progress=False, validation_share=0.0).resolved()
    name = f"{variant or loss}-{cfg.sampler}-seed{seed}"
    cfg = dataclasses.replace(
        cfg, model_dir=os.path.join(out_dir, *([benchmark] if benchmark else []), name))
    identity = {"loss": loss, "sampler": cfg.sampler, "seed": seed,
                **({"benchmark": benchmark} if benchmark else {}),
                **({"variant": variant} if variant else {})}
    if plateau_patience:
        out = run_to_plateau(cfg, plateau_patience, eval_every, clock, plateau_min_delta)
        write_text_atomic(os.path.join(cfg.model_dir, "metrics.json"), json.dumps(
            {k: out[k] for k in ("before", "after", "final", "plateau", "settings", "curve")},
            indent=2))
        return {**identity, **out}
    trainer = Trainer(cfg)
    before = trainer.evaluate()
    curve = [(0.0, 0, before)]
    train_seconds = wall_seconds = 0.0
    timer = TrainingClock(clock)
    probes = [] if clock == "reference" else [reference_op_seconds()]
    epoch = 0
    while (train_seconds < budget_seconds) if budget_seconds > 0 else (epoch < cfg.epochs):
        refresh = epoch == 0 or epoch % cfg.refresh_every == 0
        timer.start()
        stats = trainer.train_epoch(epoch, refresh)
        seconds, elapsed = timer.stop()
        wall_seconds += elapsed
        train_seconds += seconds
        trainer.end_epoch(epoch, stats["loss"])
        last = (train_seconds >= budget_seconds) if budget_seconds > 0 else (
            epoch + 1 == cfg.epochs)
        epoch += 1
        if epoch % eval_every == 0 or last:
            result = trainer.evaluate()
            curve.append((train_seconds, epoch, result))
            logging.info("%s/%s seed %d epoch %d (%.1fs): MAP@R %.4f (untrained %.4f)", loss,
                         cfg.sampler, seed, epoch, train_seconds, result["map@r"],
                         before["map@r"])
    os.makedirs(cfg.model_dir, exist_ok=True)
    trainer.checkpoints.manager.save(checkpoint_number=epoch)
    after = curve[-1][2]
    metrics = {"before": before, "after": after,
               "settings": loss_registry.settings(trainer.config),
               "curve": [{"train_seconds": t, "epoch": e, **m} for t, e, m in curve]}
    write_text_atomic(os.path.join(cfg.model_dir, "metrics.json"), json.dumps(metrics, indent=2))
    out = {"loss": loss, "sampler": cfg.sampler, "seed": seed,
           "train_seconds": train_seconds, "clock": clock, "wall_seconds": wall_seconds,
           "epochs": epoch, "reference_op_seconds": probes + timer.op_seconds, **metrics}
    if benchmark:
        out["benchmark"] = benchmark
    if variant:
        out["variant"] = variant
    return out


def cell_key(run: dict) -> tuple:
    """A run's place in the comparison: (benchmark or "-", arm, sampler, seed)."""
    return (run.get("benchmark", "-"), arm(run), run["sampler"], run["seed"])


def run_record(base, cells, arms, seeds) -> dict:
    """What a resumed comparison must share with the runs already in its folder."""
    def plain(value):
        return json.loads(json.dumps(value, default=str))

    # Fields a comparison sets itself or never uses are left out.
    unused = ("model_dir", "seed", "progress", "validation_share", "export", "export_formats",
              "calibrate")
    return plain({"config": {k: v for k, v in dataclasses.asdict(base).items()
                             if k not in unused},
                  "benchmarks": {name or "-": cfg.data_dir for name, cfg in cells},
                  "budget": {k: FLAGS[k].value for k in (
                      "budget_seconds", "budget_clock", "plateau_patience",
                      "plateau_min_delta", "compare_eval_every", "pretrained_lr_scale",
                      "pretrained_head_lr_multiplier", "suite_weights")}})


def resumed_results(out_dir: str, record: dict) -> list[dict]:
    """The runs of an earlier, interrupted comparison in `out_dir` with the same flags.

    Writes `record` to `compare_flags.json` on a first run. A folder whose
    record differs (other training flags or budget) is refused: its runs
    would not be comparable. Arms and seeds may be added or left out; a field
    only one of the records has (a flag another version added) is ignored.
    """
    flags_path = os.path.join(out_dir, "compare_flags.json")
    runs_path = os.path.join(out_dir, "compare.json")
    if os.path.exists(flags_path):
        with open(flags_path) as f:
            earlier = json.load(f)
        # Fields on one side only (a version that added or dropped a flag) do not count.
        changed = sorted(f"{part}.{k}" for part in record
                         for k in set(record[part]) & set(earlier.get(part, {}))
                         if record[part][k] != earlier[part][k])
        if changed:
            _fail(f"--out_dir={out_dir} holds a comparison run with other flags "
                  f"({', '.join(changed)} {'differs' if len(changed) == 1 else 'differ'}): "
                  "its runs would not be comparable. Give the same flags to resume it, or "
                  "another --out_dir.")
        if os.path.exists(runs_path):
            try:
                return read_runs([runs_path])
            except ValueError as e:
                _fail(f"--out_dir={out_dir}: {e}")
        return []
    write_text_atomic(flags_path, json.dumps(record, indent=2))
    return []


def plateau_budget_text(results: list[dict]) -> str:
    """The header's budget sentence for runs trained to the validation plateau.

    The evaluation interval of each benchmark comes from its runs' curves, so
    that merged runs (`--from_json`) of other intervals are described as they ran.
    """
    runs = [r for r in results if "plateau" in r]
    caps = sorted({r["stopped"] for r in runs})
    intervals = {}
    for r in runs:
        curve = r.get("curve", [])
        if len(curve) > 1:
            intervals.setdefault(r.get("benchmark", "-"), (
                curve[1]["epoch"] - curve[0]["epoch"],
                curve[1].get("presentations", 0) - curve[0].get("presentations", 0)))
    if len(intervals) > 1 or FLAGS.from_json:
        every = "; ".join(f"{bench}: every {epochs} epochs (~{shown / 1000:.0f}k images)"
                          for bench, (epochs, shown) in sorted(intervals.items()))
        cadence = f"evaluations of {every}"
    else:
        cadence = (f"evaluations of every {FLAGS.compare_eval_every} epochs, at most "
                   f"{FLAGS.epochs} epochs")
    return (f"training to the validation plateau (patience {FLAGS.plateau_patience} "
            f"{cadence}; runs ended by: {', '.join(caps)}; validation: "
            f"{'; '.join(sorted({r['validation'] for r in runs}))}; result = test MAP@R at "
            "the best validation MAP@R)")


# Runs whose median speed probes differ by more than this came from machines of
# different speed: within one session the runs' probes spread up to 1.72 x
# (2026-12-05, 198 runs), between two sessions they moved 2.7 x (section 15).
MIXED_SPEED_RATIO = 2.0


def probe_summary(results: list[dict]) -> str:
    """One sentence on the machine's speed: the runs' reference-op probes against the unit's.

    Adds a warning when the runs' median probes differ by more than
    `MIXED_SPEED_RATIO` (runs of machines or sessions of different speed). Empty
    when no run carries probes (runs stored before the probes existed).
    """
    probes = [p for r in results for p in r.get("reference_op_seconds", [])]
    if not probes:
        return ""
    text = (f"Speed probe (study/clock.py): median {statistics.median(probes) * 1000:.1f} ms "
            f"over {len(probes)} probes, range {min(probes) * 1000:.1f}-"
            f"{max(probes) * 1000:.1f} ms (the reference second's machine: "
            f"{REFERENCE_OP_SECONDS * 1000:.1f} ms).")
    per_run = [statistics.median(r["reference_op_seconds"]) for r in results
               if r.get("reference_op_seconds")]
    ratio = max(per_run) / min(per_run)
    if ratio > MIXED_SPEED_RATIO:
        text += (f" **The runs' probes differ by {ratio:.2f} x: they ran on machines of "
                 f"different speed, where an equal budget is not equal work; compare them "
                 f"by epochs, not by seconds.**")
    return text


def arm(run: dict) -> str:
    """The row a run belongs to: its --variant name, else its loss."""
    return run.get("variant") or run["loss"]


def failure(run: dict) -> str | None:
    """Why a run counts as failed (None if it passed).

    A run fails when it raised ("error") or when its final MAP@R is not above
    the untrained model's, both measured in the run's own geometry.
    """
    if "error" in run:
        return run["error"]
    before, after = run["before"]["map@r"], run["after"]["map@r"]
    if not after > before:
        return f"MAP@R {after:.3f} not above the untrained {before:.3f}"
    return None


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"


def summarize(results: list[dict]) -> list[dict]:
    """One summary per (loss or variant, sampler), in order of first appearance.

    Returns:
      Dicts with "loss" (the variant's name for a --variant run), "sampler",
      "geometry", "runs" (all), "passed" (runs that did not fail) and "failed"
      ([(seed, reason)]).
    """
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in results:
        groups.setdefault((arm(r), r["sampler"]), []).append(r)
    out = []
    for (loss, sampler), runs in groups.items():
        geometry = next((r["settings"]["geometry"] for r in runs if "settings" in r), "-")
        failed = [(r.get("seed"), failure(r)) for r in runs if failure(r)]
        out.append({"loss": loss, "sampler": sampler, "geometry": geometry, "runs": runs,
                    "passed": [r for r in runs if not failure(r)], "failed": failed})
    return out


def markdown_table(results: list[dict]) -> str:
    """The comparison table: one row per (loss, sampler), mean ± std over passed seeds."""
    head = (["loss", "sampler", "geometry", "passed"] + [h for _, h in METRICS]
            + ["untrained MAP@R", "train s", "failed runs"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in summarize(results):
        passed = g["passed"]
        finished = [r for r in g["runs"] if "error" not in r]
        untrained = (f"{statistics.fmean(r['before']['map@r'] for r in finished):.3f}"
                     if finished else "-")
        failed = "; ".join(f"seed {seed}: {why}" for seed, why in g["failed"]) or "-"
        failed = failed.replace("|", "/")
        if passed:
            cells = [_mean_std([r["after"][k] for r in passed]) for k, _ in METRICS]
            seconds = f"{statistics.fmean(r['train_seconds'] for r in passed):.0f}"
        else:
            cells = ["failed"] * len(METRICS)
            seconds = "-"
        row = ([g["loss"], g["sampler"], g["geometry"], f"{len(passed)}/{len(g['runs'])}"]
               + cells + [untrained, seconds, failed])
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def by_benchmark(results: list[dict]) -> dict[str, list[dict]]:
    """The runs of each benchmark, in order of first appearance ("-": no benchmark)."""
    out: dict[str, list[dict]] = {}
    for r in results:
        out.setdefault(r.get("benchmark", "-"), []).append(r)
    return out


def _mean_final(group: dict) -> float:
    """Mean final MAP@R of a summary's passed runs (nan when none passed)."""
    finals = [r["after"]["map@r"] for r in group["passed"]]
    return statistics.fmean(finals) if finals else math.nan


def seconds_to_share(results: list[dict], share: float,
                     unit: str = "") -> dict[tuple[str, str], str]:
    """Training seconds each (loss, sampler) needs to reach `share` of the best MAP@R.

    The best is the highest mean final MAP@R of any (loss, sampler) in
    `results` (one benchmark). A run reaches the target at the first
    evaluation of its curve at or above it; the cell is the mean over the
    passed runs that reached it, followed by `unit` ("a/b runs" added when
    not all did), or "not reached".
    """
    groups = summarize(results)
    finals = [m for m in (_mean_final(g) for g in groups) if not math.isnan(m)]
    if not finals:
        return {}
    target = share * max(finals)
    out = {}
    for g in groups:
        times = []
        for r in g["passed"]:
            hit = next((p["train_seconds"] for p in r["curve"] if p["map@r"] >= target), None)
            if hit is not None:
                times.append(hit)
        if not times:
            out[(g["loss"], g["sampler"])] = "not reached"
        else:
            cell = f"{statistics.fmean(times):.0f}{unit}"
            if len(times) < len(g["passed"]):
                cell += f" ({len(times)}/{len(g['passed'])} runs)"
            out[(g["loss"], g["sampler"])] = cell
    return out


def aggregate(results: list[dict]) -> list[dict]:
    """Per (loss, sampler) over the benchmarks: mean rank and mean gain over the floor.

    On each benchmark the (loss, sampler) pairs are ranked by mean final MAP@R
    of their passed runs (1 = best; a pair with no passed run shares the last
    rank). The gain is the mean final MAP@R minus the mean "before" MAP@R (the
    untrained or pretrained floor, same geometry) over its finished runs, so a
    failed run counts with its (non-positive) gain.

    Returns:
      [{"loss", "sampler", "mean_rank", "mean_gain", "benchmarks", "failed"}]
      sorted by mean rank.
    """
    ranks: dict[tuple[str, str], list[float]] = {}
    gains: dict[tuple[str, str], list[float]] = {}
    failed: dict[tuple[str, str], int] = {}
    benches = by_benchmark(results)
    for runs in benches.values():
        groups = summarize(runs)
        finals = [(_mean_final(g), (g["loss"], g["sampler"])) for g in groups]
        ordered = sorted((m, k) for m, k in finals if not math.isnan(m))
        ordered.sort(key=lambda mk: -mk[0])
        for rank, (_, key) in enumerate(ordered, start=1):
            ranks.setdefault(key, []).append(float(rank))
        for m, key in finals:
            if math.isnan(m):
                ranks.setdefault(key, []).append(float(len(groups)))
        for g in groups:
            key = (g["loss"], g["sampler"])
            finished = [r for r in g["runs"] if "error" not in r]
            if finished:
                gains.setdefault(key, []).append(statistics.fmean(
                    r["after"]["map@r"] - r["before"]["map@r"] for r in finished))
            failed[key] = failed.get(key, 0) + len(g["failed"])
    out = [{"loss": k[0], "sampler": k[1], "mean_rank": statistics.fmean(v),
            "mean_gain": statistics.fmean(gains[k]) if gains.get(k) else math.nan,
            "benchmarks": len(v), "failed": failed.get(k, 0)} for k, v in ranks.items()]
    return sorted(out, key=lambda a: (a["mean_rank"], -a["mean_gain"]))


def suite_matrix(results: list[dict], share: float) -> str:
    """MAP@R of every (loss, sampler) on every benchmark in one table.

    A cell is the mean ± std of the passed seeds (n = passed/finished when a
    seed failed), "failed" when none passed, then the training seconds to
    `share` of that benchmark's best; the last row is each benchmark's floor
    (the model before training: the range over its runs, both geometries).
    """
    benches = by_benchmark(results)
    keys = list(dict.fromkeys((arm(r), r["sampler"]) for r in results))
    head = ["loss", "sampler", *benches]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    summaries = {b: {(g["loss"], g["sampler"]): g for g in summarize(runs)}
                 for b, runs in benches.items()}
    times = {b: seconds_to_share(runs, share, unit=" s") for b, runs in benches.items()}
    for key in keys:
        row = [*key]
        for b in benches:
            g = summaries[b].get(key)
            cell = _map_cell(g)
            if g is not None and g["passed"]:
                cell += f", {times[b].get(key, '-')}"
            row.append(cell)
        lines.append("| " + " | ".join(row) + " |")
    lines.append(_floor_row(benches))
    return "\n".join(lines) + "\n"


def _map_cell(group: dict | None) -> str:
    """Mean ± std MAP@R of a group's passed runs, "(passed/finished)" when one failed."""
    if group is None:
        return "-"
    finals = [r["after"]["map@r"] for r in group["passed"]]
    cell = _mean_std(finals) if finals else "failed"
    if group["failed"]:
        cell += f" ({len(group['passed'])}/{len(group['runs'])})"
    return cell


def _floor_row(benches: dict[str, list[dict]]) -> str:
    """The table row of each benchmark's floor: the range of its runs' untrained MAP@R."""
    floors = []
    for runs in benches.values():
        before = [r["before"]["map@r"] for r in runs if "error" not in r]
        floors.append(f"{min(before):.3f}-{max(before):.3f}" if before else "-")
    return "| floor (before training) | | " + " | ".join(floors) + " |"


def ranked_matrix(results: list[dict]) -> str:
    """MAP@R of every (loss, sampler) on every benchmark, in the order of the aggregate.

    A cell is as in `suite_matrix` without the seconds; the last two columns
    are the aggregate's mean rank and mean gain over the floor (`aggregate`).
    """
    benches = by_benchmark(results)
    summaries = {b: {(g["loss"], g["sampler"]): g for g in summarize(runs)}
                 for b, runs in benches.items()}
    head = ["loss", "sampler", *benches, "mean rank", "mean gain"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for a in aggregate(results):
        key = (a["loss"], a["sampler"])
        row = [*key, *(_map_cell(summaries[b].get(key)) for b in benches),
               f"{a['mean_rank']:.2f}", f"{a['mean_gain']:+.3f}"]
        lines.append("| " + " | ".join(row) + " |")
    lines.append(_floor_row(benches) + " | |")
    return "\n".join(lines) + "\n"


def plateau_table(results: list[dict]) -> str:
    """Per arm of one benchmark: the plateau and the times to it and to 90 % of it.

    Means ± std over the passed runs: test MAP@R and Recall@1 at the best
    validation MAP@R, the epochs, image presentations and training seconds
    to that point, the training seconds to 90 % of it (the run's own
    plateau), and how many runs the epoch cap ended.
    """
    head = ["loss", "MAP@R", "Recall@1", "epochs to plateau", "presentations to plateau",
            "train s to plateau", "train s to 90 %", "ended by the cap"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in summarize(results):
        runs = [r for r in g["passed"] if "plateau" in r]
        if not runs:
            continue

        def cell(fn, fmt="{:.0f}", runs=runs):
            values = [fn(r) for r in runs]
            if len(values) == 1:
                return fmt.format(values[0])
            mean, std = statistics.fmean(values), statistics.stdev(values)
            return f"{fmt.format(mean)} ± {fmt.format(std)}"

        lines.append("| " + " | ".join([
            g["loss"], _mean_std([r["after"]["map@r"] for r in runs]),
            _mean_std([r["after"]["recall@1"] for r in runs]),
            cell(lambda r: r["plateau"]["epoch"]),
            cell(lambda r: r["plateau"]["presentations"] / 1000, "{:.0f}k"),
            cell(lambda r: r["plateau"]["train_seconds"]),
            cell(lambda r: r["plateau"]["share_train_seconds"]),
            f"{sum(r['stopped'] == 'cap' for r in runs)}/{len(runs)}"]) + " |")
    return "\n".join(lines) + "\n"


def plateau_matrix(results: list[dict]) -> str:
    """Per arm and benchmark: training seconds to the plateau and to 90 % of it.

    Each cell is the mean over the arm's passed plateau runs on that benchmark
    ("-" when none passed): seconds to the best validation evaluation / seconds
    to the first evaluation at 90 % of it (the run's own plateau).
    """
    benches = {name: {g["loss"]: g for g in summarize(runs)}
               for name, runs in by_benchmark(results).items()}
    lines = ["| loss | " + " | ".join(benches) + " |", "|---|" + "---|" * len(benches)]
    for name in dict.fromkeys(arm(r) for r in results):
        row = [name]
        for groups in benches.values():
            runs = [r for r in groups[name]["passed"] if "plateau" in r] if name in groups else []
            row.append(f"{statistics.fmean(r['plateau']['train_seconds'] for r in runs):.0f} / "
                       f"{statistics.fmean(r['plateau']['share_train_seconds'] for r in runs):.0f}"
                       if runs else "-")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def suite_markdown(results: list[dict], share: float) -> str:
    """The matrix, one table per benchmark (with seconds to `share` of its best), the aggregate."""
    parts = [f"### MAP@R on every benchmark (mean ± std over seeds; seconds to {share:.0%} "
             "of the benchmark's best)\n\n" + suite_matrix(results, share),
             "### Ranked (mean rank over the benchmarks; gain over the floor)\n\n"
             + ranked_matrix(results)]
    if any("plateau" in r for r in results):
        parts.append("### Training seconds to the plateau / to 90 % of it (mean over the "
                     "passed runs)\n\n" + plateau_matrix(results))
    for name, runs in by_benchmark(results).items():
        parts.append(f"### {name}\n\n" + markdown_table(runs))
        if any("plateau" in r for r in runs):
            parts.append(plateau_table(runs))
        times = seconds_to_share(runs, share)
        if times:
            parts.append(f"Training seconds to {share:.0%} of this benchmark's best mean "
                         "MAP@R: " + "; ".join(f"{loss}/{sampler} {t}"
                                               for (loss, sampler), t in times.items()) + "\n")
    lines = ["### aggregate\n", "| loss | sampler | mean rank | mean gain over floor (MAP@R) "
             "| benchmarks | failed runs |", "|---|---|---|---|---|---|"]
    for a in aggregate(results):
        lines.append(f"| {a['loss']} | {a['sampler']} | {a['mean_rank']:.2f} | "
                     f"{a['mean_gain']:+.3f} | {a['benchmarks']} | {a['failed']} |")
    parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def suite_plot(results: list[dict], path: str) -> None:
    """Final MAP@R (mean ± std of passed seeds) per benchmark and loss, with each floor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    benches = by_benchmark(results)
    keys = list(dict.fromkeys((arm(r), r["sampler"]) for r in results))
    colors = plt.get_cmap("tab10" if len(keys) <= 10 else "tab20")
    fig, ax = plt.subplots(figsize=(max(6, 2.2 * len(benches)), 4.5))
    width = 0.8 / max(len(keys), 1)
    labelled = set()  # a loss that failed on the first benchmark gets its label later
    for b, runs in enumerate(benches.values()):
        groups = {(g["loss"], g["sampler"]): g for g in summarize(runs)}
        finished = [r for r in runs if "error" not in r]
        if finished:
            floor = statistics.fmean(r["before"]["map@r"] for r in finished)
            ax.hlines(floor, b - 0.4, b + 0.4, colors="black", linestyles=":")
        for i, key in enumerate(keys):
            g = groups.get(key)
            if g is None or not g["passed"]:
                continue
            finals = [r["after"]["map@r"] for r in g["passed"]]
            ax.bar(b - 0.4 + (i + 0.5) * width, statistics.fmean(finals), width,
                   yerr=statistics.stdev(finals) if len(finals) > 1 else 0.0,
                   color=colors(i), label=None if key in labelled else f"{key[0]} / {key[1]}")
            labelled.add(key)
    ax.set_xticks(range(len(benches)), list(benches), fontsize=8)
    ax.set_ylabel("final MAP@R (test); dotted: mean floor (before training)")
    ax.grid(alpha=0.3, axis="y")
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize=7, loc="best")
    _save_figure(fig, path)


def _save_figure(fig, path: str) -> None:
    """Writes a finished figure to `path` through a temporary file and a rename, and closes it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    tmp = f"{path}.tmp.{os.getpid()}.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def parse_benchmarks(items: list[str]) -> list[tuple[str, str]]:
    """--benchmarks values 'name=data_dir' as (name, data_dir); ValueError naming the flag."""
    out = []
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--benchmarks entries are name=data_dir, got {item!r}.")
        if any(name == n for n, _ in out):
            raise ValueError(f"--benchmarks names {name!r} twice.")
        out.append((name, path))
    return out


def plot(results: list[dict], path: str, title: str) -> None:
    """MAP@R against epoch and against training seconds, and final MAP@R per loss, to a PNG.

    Curves are the mean over passed seeds (seconds: the mean training seconds
    of those seeds at each evaluation; evaluation time is not counted), up to
    the last evaluation all of them reached (budget runs differ in epochs).

    Failed runs are not drawn; a (loss, sampler) with no passed run is named
    "failed" on the bar chart, without a bar.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = summarize(results)
    colors = plt.get_cmap("tab10" if len(groups) <= 10 else "tab20")
    samplers = list(dict.fromkeys(g["sampler"] for g in groups))
    styles = ["-", "--", ":", "-."]
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(19, 5),
                                              gridspec_kw={"width_ratios": [3, 3, 2]})
    labels, means, stds, untrained = [], [], [], []
    for i, g in enumerate(groups):
        label = f"{g['loss']} / {g['sampler']}"
        labels.append(label)
        finished = [r for r in g["runs"] if "error" not in r]
        untrained.append(statistics.fmean(r["before"]["map@r"] for r in finished)
                         if finished else math.nan)
        if not g["passed"]:
            means.append(math.nan)
            stds.append(0.0)
            continue
        # Seeds of a budget run can reach different epochs: the curve stops at the
        # evaluations every passed seed has.
        shortest = min((r["curve"] for r in g["passed"]), key=len)
        epochs = [p["epoch"] for p in shortest]
        curve = [statistics.fmean(r["curve"][j]["map@r"] for r in g["passed"])
                 for j in range(len(epochs))]
        seconds = [statistics.fmean(r["curve"][j]["train_seconds"] for r in g["passed"])
                   for j in range(len(epochs))]
        style = styles[samplers.index(g["sampler"]) % len(styles)]
        left.plot(epochs, curve, marker=".", color=colors(i), linestyle=style,
                  label=f"{label} ({len(g['passed'])} seeds)")
        middle.plot(seconds, curve, marker=".", color=colors(i), linestyle=style)
        finals = [r["after"]["map@r"] for r in g["passed"]]
        means.append(statistics.fmean(finals))
        stds.append(statistics.stdev(finals) if len(finals) > 1 else 0.0)
    left.set_xlabel("epoch")
    left.set_ylabel("MAP@R (test; mean of passed seeds)")
    left.set_title(title)
    left.grid(alpha=0.3)
    left.legend(fontsize=7, loc="best")
    middle.set_xlabel("training seconds (sampling + steps; mean of passed seeds)")
    middle.set_ylabel("MAP@R (test; mean of passed seeds)")
    middle.set_title("MAP@R vs training time")
    middle.grid(alpha=0.3)
    ys = range(len(groups))
    right.barh(ys, [0.0 if math.isnan(m) else m for m in means], xerr=stds,
               color=[colors(i) for i in ys], alpha=0.8)
    right.scatter(untrained, ys, marker="|", s=200, color="black", zorder=3,
                  label="untrained (same geometry)")
    for y, m in zip(ys, means, strict=True):
        if math.isnan(m):
            right.text(0.01, y, "failed", va="center", fontsize=8, color="red")
    right.set_yticks(list(ys), labels, fontsize=7)
    right.invert_yaxis()
    right.set_xlim(0, 1)
    right.set_xlabel("final MAP@R (mean ± std of passed seeds)")
    right.legend(fontsize=7, loc="lower right")
    right.grid(alpha=0.3, axis="x")
    _save_figure(fig, path)


def _fail(message: str, code: int = 2) -> None:
    train_cli._fail(message, code, prog="compare.py")


def merge_results(files: list[list[dict]]) -> list[dict]:
    """The runs of several compare.json files, oldest first, as one list.

    A later file replaces the runs of every (arm, benchmark, seed) it holds (a
    rerun of some arms in new defaults replaces their older runs); runs of
    other seeds or arms add up.
    """
    kept: dict[tuple, list[dict]] = {}
    for runs in files:
        fresh: dict[tuple, list[dict]] = {}
        for r in runs:
            fresh.setdefault((arm(r), r.get("benchmark", "-"), r.get("seed")), []).append(r)
        kept.update(fresh)
    return [r for runs in kept.values() for r in runs]


def read_runs(paths: list[str]) -> list[dict]:
    """The runs of these compare.json files, merged by `merge_results`.

    Raises:
      ValueError: naming a file that cannot be read or is not a compare.json.
    """
    files = []
    for path in paths:
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: cannot read it ({e})") from e
        if not isinstance(data, list) or not all(isinstance(r, dict) and "loss" in r
                                                 for r in data):
            raise ValueError(f"{path} is not a compare.json written by study/compare.py")
        files.append(data)
    return merge_results(files)


def main(argv):
    apply_quick(FLAGS)
    if len(argv) > 1:
        _fail(f"unexpected arguments {' '.join(argv[1:])!r}.")
    if not FLAGS.out_dir:
        _fail("--out_dir is required.")
    if FLAGS.compare_eval_every < 1:
        _fail("--compare_eval_every must be >= 1.")
    try:  # a folder of ours (an earlier comparison) is reused; anything else is refused
        check_output_dir(FLAGS.out_dir, f"--out_dir={FLAGS.out_dir}", "comparison",
                         legacy=lambda d: "comparison" if os.path.isfile(
                             os.path.join(d, "compare.json")) else None)
    except cli.UsageError as e:
        _fail(str(e))
    try:
        seeds = [int(s) for s in FLAGS.seeds]
    except ValueError:
        _fail(f"--seeds must be integers, got {','.join(FLAGS.seeds)}.")
    if not seeds:
        _fail("--seeds needs at least one seed.")
    if not FLAGS.model_dir:
        FLAGS.model_dir = FLAGS.out_dir  # required by the config; each run gets its own
    samplers = FLAGS.samplers or [None]  # None: each loss's default
    if FLAGS.budget_seconds < 0:
        _fail("--budget_seconds must be >= 0.")
    if FLAGS.plateau_patience < 0 or FLAGS.plateau_min_delta < 0:
        _fail("--plateau_patience and --plateau_min_delta must be >= 0.")
    if FLAGS.plateau_patience and FLAGS.budget_seconds:
        _fail("--plateau_patience and --budget_seconds are two budgets: give one.")
    if FLAGS.threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.threads)
    try:
        benchmarks = parse_benchmarks(FLAGS.benchmarks)
    except ValueError as e:
        _fail(str(e))
    unknown = [n for n in FLAGS.pretrained_benchmarks if n not in dict(benchmarks)]
    if unknown:
        _fail(f"--pretrained_benchmarks: {unknown} are not names of --benchmarks.")
    if not FLAGS.scratch and not FLAGS.pretrained_benchmarks:
        _fail("--noscratch leaves nothing to run without --pretrained_benchmarks.")
    if FLAGS.benchmark_name is not None and (benchmarks or not FLAGS.benchmark_name.strip()):
        _fail("--benchmark_name names the flags' one data set: give it without --benchmarks, "
              "not empty.")
    if FLAGS.pretrained_benchmarks and not (FLAGS.suite_weights
                                            and os.path.isfile(FLAGS.suite_weights)):
        _fail(f"--suite_weights={FLAGS.suite_weights} is not a file (needed by "
              "--pretrained_benchmarks; build it with study/pretrain.py).")
    try:
        base = train_cli.config_from_flags()
    except ValueError as e:
        _fail(str(e))
    # (name, config) per benchmark; the one data set of the flags when none is given.
    cells = [(FLAGS.benchmark_name, base)]
    if benchmarks:
        cells = [(name, dataclasses.replace(base, data_dir=path))
                 for name, path in benchmarks if FLAGS.scratch]
        for name in FLAGS.pretrained_benchmarks:
            cells.append((f"{name}+pretrained", dataclasses.replace(
                base, data_dir=dict(benchmarks)[name], backbone_weights=FLAGS.suite_weights,
                lr=base.lr * FLAGS.pretrained_lr_scale,
                head_lr_multiplier=FLAGS.pretrained_head_lr_multiplier)))
    # The arms: (variant name or None, loss, sampler or None, other overrides).
    try:
        arms = [(None, loss, sampler, {}) for loss in FLAGS.losses for sampler in samplers]
        if FLAGS.variant:
            arms = []
            for text in FLAGS.variant:
                name, overrides = config_flags.parse_overrides(text, type(base))
                if any(name == a[0] for a in arms):
                    raise ValueError(f"--variant names {name!r} twice.")
                arms.append((name, overrides.pop("loss", base.loss),
                             overrides.pop("sampler", None), overrides))
        for _, cell_base in cells:
            for _, loss, sampler, overrides in arms:
                dataclasses.replace(cell_base, **overrides, loss=loss,
                                    sampler=sampler).validate()
    except ValueError as e:
        _fail(str(e))
    try:
        results = read_runs(FLAGS.from_json)
    except ValueError as e:
        _fail(f"--from_json={e}")
    os.makedirs(FLAGS.out_dir, exist_ok=True)
    write_marker(FLAGS.out_dir, "comparison", "compare.py")
    if not FLAGS.from_json:
        results = resumed_results(FLAGS.out_dir, run_record(base, cells, arms, seeds))
    done = {cell_key(r) for r in results if "error" not in r}
    if done:
        logging.info("Resuming the comparison in %s: %d runs done.", FLAGS.out_dir, len(done))
    for seed in seeds if not FLAGS.from_json else []:
        for bench, cell_base in cells:
            for variant, loss, sampler, overrides in arms:
                key = (bench or "-", variant or loss,
                       sampler or loss_registry.spec(loss).sampler, seed)
                if key in done:
                    continue
                results = [r for r in results if cell_key(r) != key]  # an earlier error
                logging.info("=== %s%s / %s / seed %d ===", f"{bench}: " if bench else "",
                             variant or loss, sampler or "default", seed)
                try:
                    results.append(run_cell(cell_base, loss, sampler, seed, FLAGS.out_dir,
                                            FLAGS.compare_eval_every, FLAGS.budget_seconds,
                                            bench, FLAGS.budget_clock, variant, overrides,
                                            plateau_patience=FLAGS.plateau_patience,
                                            plateau_min_delta=FLAGS.plateau_min_delta))
                except Exception as e:  # noqa: BLE001  (report the run, do the others)
                    logging.error("%s/%s seed %d failed:\n%s", variant or loss, sampler, seed,
                                  traceback.format_exc())
                    failed = {"loss": loss, "seed": seed,
                              "sampler": sampler or loss_registry.spec(loss).sampler,
                              "error": f"{type(e).__name__}: {e}".replace("|", "/")[:200]}
                    if bench:
                        failed["benchmark"] = bench
                    if variant:
                        failed["variant"] = variant
                    results.append(failed)
                write_text_atomic(os.path.join(FLAGS.out_dir, "compare.json"),
                                  json.dumps(results, indent=2))
    if FLAGS.from_json:  # rows grouped by loss, in order of first appearance
        order = list(dict.fromkeys(arm(r) for r in results))
        results.sort(key=lambda r: order.index(arm(r)))
    else:  # trained seed by seed (a suite cut short has whole seeds); stored by benchmark,
        # arm and seed
        places = {(bench or "-", variant or loss, seed): (i, j, k)
                  for i, (bench, _) in enumerate(cells)
                  for j, (variant, loss, _, _) in enumerate(arms)
                  for k, seed in enumerate(seeds)}
        results.sort(key=lambda r: places.get(
            (r.get("benchmark", "-"), arm(r), r.get("seed")), (len(cells), 0, 0)))
    write_text_atomic(os.path.join(FLAGS.out_dir, "compare.json"), json.dumps(results, indent=2))
    seen = sorted({r["seed"] for r in results if r.get("seed") is not None})
    clocks = "/".join(sorted({r.get("clock", "wall") for r in results if "error" not in r})
                          or [FLAGS.budget_clock])  # the runs' own (--from_json: stored runs)
    budget = (f"{FLAGS.budget_seconds:g} training seconds ({clocks} clock; whole "
              "epochs until the budget)"
              if FLAGS.budget_seconds else f"{base.epochs} epochs")
    plateau = any("plateau" in r for r in results)
    if plateau:
        budget = plateau_budget_text(results)
    subject = (f"Data set `{base.dataset}`, backbone `{base.backbone}`, {budget} for every "
               f"loss, batch {base.batch_size}")
    if FLAGS.from_json and not FLAGS.budget_seconds and not plateau:  # the runs' own budgets
        finished = [r for r in results if "error" not in r]
        seconds = [r["train_seconds"] for r in finished] or [0.0]
        epochs = [r["epochs"] for r in finished if "epochs" in r] or [0]
        subject = (f"Stored runs of {', '.join(f'`{b}`' for b in by_benchmark(results))}: "
                   f"{min(seconds):.0f}-{max(seconds):.0f} training seconds ({clocks} clock) "
                   f"and {min(epochs)}-{max(epochs)} epochs per run")
    header = (f"{subject}, seeds {','.join(str(s) for s in seen)}; "
              "test split; mean ± std (sample std) over the seeds that passed; geometry: "
              "cosine = L2-normalised embeddings, euclidean = raw; a run fails when its "
              "MAP@R ends not above the untrained model's in the same geometry; train s: "
              f"training seconds of a run (sampling + steps, evaluation excluded; "
              f"{clocks} clock). {probe_summary(results)}\n\n")
    if len(by_benchmark(results)) > 1 or benchmarks:
        table = suite_markdown(results, FLAGS.share)
        write_text_atomic(os.path.join(FLAGS.out_dir, "compare.md"), header + table)
        suite_plot(results, os.path.join(FLAGS.out_dir, "compare.png"))
    else:
        table = markdown_table(results)
        if any("plateau" in r for r in results):
            table += "\n" + plateau_table(results)
        write_text_atomic(os.path.join(FLAGS.out_dir, "compare.md"), header + table)
        plot(results, os.path.join(FLAGS.out_dir, "compare.png"),
             f"{base.dataset}: MAP@R vs epoch")
    print(header + table)
    print(f"Wrote {FLAGS.out_dir}/compare.md, compare.png, compare.json")


def apply_quick(flag_values) -> None:
    """--quick: the quick subset's losses, seed, budget and benchmarks (flags given win)."""
    if not flag_values.quick:
        return
    presets = {"losses": ["sst", "contrastive", "multi_similarity"], "seeds": ["0"],
               "budget_seconds": 60.0}
    for name, value in presets.items():
        if not flag_values[name].present:
            flag_values[name].value = value
    if not flag_values["benchmarks"].present:
        flag_values.benchmarks = [f"{n}={os.path.join(flag_values.suite_dir, n)}" for n in
                                  ("cross_script", "within_script", "typeface", "many_classes")]
    if flag_values.suite_weights and not flag_values["pretrained_benchmarks"].present:
        flag_values.pretrained_benchmarks = ["cross_script"]


if __name__ == "__main__":
    cli.run(main, "compare.py")
