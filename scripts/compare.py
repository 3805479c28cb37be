r"""Compare losses on one data set, each in its own defaults, over several seeds.

  python scripts/compare.py --flagfile=configs/digits.cfg --out_dir=runs/compare \
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
`--from_json=a/compare.json,b/compare.json` trains nothing and writes the
table and plot of earlier runs together.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import os
import statistics
import sys
import time
import traceback

import keras
from absl import flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sst_tf import cli, loss_registry  # noqa: E402
from sst_tf import train as train_cli  # noqa: E402  (defines the shared training flags)
from sst_tf.config import LOSSES  # noqa: E402
from sst_tf.outputs import check_output_dir, write_marker  # noqa: E402

flags.DEFINE_list("losses", list(LOSSES), "Losses to compare (--loss values).")
flags.DEFINE_list("samplers", [], "Samplers to compare (--sampler values); empty: each "
                  "loss's default sampler.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds; every (loss, sampler) runs once per seed.")
flags.DEFINE_string("out_dir", None, "Output folder of the comparison.")
flags.DEFINE_integer("compare_eval_every", 1, "Evaluate every N epochs for the curves.")
flags.DEFINE_list("from_json", [], "Train nothing: merge these compare.json files (earlier "
                  "runs with the same training flags as given here) and write their table "
                  "and plot to --out_dir.")

FLAGS = flags.FLAGS

# Columns of the table: (metrics.json key, heading).
METRICS = (("map@r", "MAP@R"), ("r_precision", "R-Precision"), ("recall@1", "Recall@1"),
           ("nmi", "NMI"))


def _write_atomic(path: str, text: str | bytes) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "wb" if isinstance(text, bytes) else "w") as f:
        f.write(text)
    os.replace(tmp, path)


def run_cell(base, loss: str, sampler: str | None, seed: int, out_dir: str,
             eval_every: int) -> dict:
    """Trains one (loss, sampler, seed) run; returns its curve, metrics and settings.

    `sampler` None means the loss's default. "before" is the untrained model,
    evaluated like "after" (the model's own output geometry).
    """
    from sst_tf.trainer import Trainer

    keras.backend.clear_session()
    gc.collect()
    cfg = dataclasses.replace(base, loss=loss, sampler=sampler, seed=seed, eval_every=0,
                              progress=False).resolved()
    cfg = dataclasses.replace(
        cfg, model_dir=os.path.join(out_dir, f"{loss}-{cfg.sampler}-seed{seed}"))
    trainer = Trainer(cfg)
    before = trainer.evaluate()
    curve = [(0.0, 0, before)]
    train_seconds = 0.0
    for epoch in range(cfg.epochs):
        refresh = epoch == 0 or epoch % cfg.refresh_every == 0
        start = time.perf_counter()
        stats = trainer.train_epoch(epoch, refresh)
        train_seconds += time.perf_counter() - start
        trainer.end_epoch(epoch, stats["loss"])
        if (epoch + 1) % eval_every == 0 or epoch + 1 == cfg.epochs:
            result = trainer.evaluate()
            curve.append((train_seconds, epoch + 1, result))
            logging.info("%s/%s seed %d epoch %d (%.1fs): MAP@R %.4f (untrained %.4f)", loss,
                         cfg.sampler, seed, epoch + 1, train_seconds, result["map@r"],
                         before["map@r"])
    os.makedirs(cfg.model_dir, exist_ok=True)
    trainer.checkpoints.manager.save(checkpoint_number=cfg.epochs)
    after = curve[-1][2]
    metrics = {"before": before, "after": after,
               "settings": loss_registry.settings(trainer.config),
               "curve": [{"train_seconds": t, "epoch": e, **m} for t, e, m in curve]}
    _write_atomic(os.path.join(cfg.model_dir, "metrics.json"), json.dumps(metrics, indent=2))
    return {"loss": loss, "sampler": cfg.sampler, "seed": seed,
            "train_seconds": train_seconds, **metrics}


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
    """One summary per (loss, sampler), in order of first appearance.

    Returns:
      Dicts with "loss", "sampler", "geometry", "runs" (all), "passed" (runs
      that did not fail) and "failed" ([(seed, reason)]).
    """
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in results:
        groups.setdefault((r["loss"], r["sampler"]), []).append(r)
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


def plot(results: list[dict], path: str, title: str) -> None:
    """MAP@R against epoch and against training seconds, and final MAP@R per loss, to a PNG.

    Curves are the mean over passed seeds (seconds: the mean training seconds
    of those seeds at each evaluation; evaluation time is not counted).

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
        epochs = [p["epoch"] for p in g["passed"][0]["curve"]]
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
    fig.tight_layout()
    tmp = f"{path}.tmp.{os.getpid()}.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def _fail(message: str, code: int = 2) -> None:
    train_cli._fail(message, code, prog="compare.py")


def _read_results(path: str) -> list:
    """The results of an earlier compare.json (--from_json), or a one-line error."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        _fail(f"--from_json={path}: cannot read it ({e})")
    if not isinstance(data, list) or not all(isinstance(r, dict) and "loss" in r for r in data):
        _fail(f"--from_json={path} is not a compare.json written by this script")
    return data


def main(argv):
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
    try:
        base = train_cli.config_from_flags()
        for loss in FLAGS.losses:
            for sampler in samplers:
                dataclasses.replace(base, loss=loss, sampler=sampler).validate()
    except ValueError as e:
        _fail(str(e))
    results = []
    for path in FLAGS.from_json:
        results.extend(_read_results(path))
    os.makedirs(FLAGS.out_dir, exist_ok=True)
    write_marker(FLAGS.out_dir, "comparison", "compare.py")
    for loss in FLAGS.losses if not FLAGS.from_json else []:
        for sampler in samplers:
            for seed in seeds:
                logging.info("=== %s / %s / seed %d ===", loss, sampler or "default", seed)
                try:
                    results.append(run_cell(base, loss, sampler, seed, FLAGS.out_dir,
                                            FLAGS.compare_eval_every))
                except Exception as e:  # noqa: BLE001  (report the run, do the others)
                    logging.error("%s/%s seed %d failed:\n%s", loss, sampler, seed,
                                  traceback.format_exc())
                    results.append({
                        "loss": loss, "seed": seed,
                        "sampler": sampler or loss_registry.spec(loss).sampler,
                        "error": f"{type(e).__name__}: {e}".replace("|", "/")[:200]})
                _write_atomic(os.path.join(FLAGS.out_dir, "compare.json"),
                              json.dumps(results, indent=2))
    if FLAGS.from_json:  # rows grouped by loss, in order of first appearance
        order = list(dict.fromkeys(r["loss"] for r in results))
        results.sort(key=lambda r: order.index(r["loss"]))
        _write_atomic(os.path.join(FLAGS.out_dir, "compare.json"), json.dumps(results, indent=2))
    table = markdown_table(results)
    seen = sorted({r["seed"] for r in results if r.get("seed") is not None})
    header = (f"Data set `{base.dataset}`, backbone `{base.backbone}`, {base.epochs} epochs "
              f"for every loss, batch {base.batch_size}, seeds "
              f"{','.join(str(s) for s in seen)}; "
              "test split; mean ± std (sample std) over the seeds that passed; geometry: "
              "cosine = L2-normalised embeddings, euclidean = raw; a run fails when its "
              "MAP@R ends not above the untrained model's in the same geometry; train s: "
              "training seconds of a run (sampling + steps, evaluation excluded).\n\n")
    _write_atomic(os.path.join(FLAGS.out_dir, "compare.md"), header + table)
    plot(results, os.path.join(FLAGS.out_dir, "compare.png"),
         f"{base.dataset}: MAP@R vs epoch")
    print(header + table)
    print(f"Wrote {FLAGS.out_dir}/compare.md, compare.png, compare.json")


if __name__ == "__main__":
    cli.run(main, "compare.py")
