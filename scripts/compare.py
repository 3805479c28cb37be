r"""Compare losses x samplers on one data set with the same budget and seed.

  python scripts/compare.py --flagfile=configs/digits.cfg --out_dir=runs/compare \
      --losses=sst,triplet,multi_similarity,proxy_anchor --samplers=local,class_balanced

Every `sst_tf.train` flag sets the shared configuration (data set, model,
epochs, learning rate, seed, ...); `--losses` and `--samplers` span the grid.
Each cell trains in this process from the same seed for the same number of
epochs (the learning-rate plateau schedule applies, early stopping does not, so
every method gets the same budget), evaluates on the test split every
`--compare_eval_every` epochs and records Recall@1 against the cumulative
training time (sampling, refreshes and steps; evaluations excluded).

Writes to --out_dir: `compare.md` (Markdown table: Recall@K, MAP@R, NMI, wall
time, time to reach --target_recall Recall@1), `compare.png` (Recall@1 against
training time, one line per method), `compare.json` (all curves) and one
model_dir per cell (`<loss>-<sampler>/`, final checkpoint and metrics.json).
A cell that fails is reported in the table with its error; the others still run.
`--from_json=a/compare.json,b/compare.json` trains nothing and writes the
table and plot of earlier runs together.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import os
import sys
import time
import traceback

import keras
from absl import flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sst_tf import cli  # noqa: E402
from sst_tf import train as train_cli  # noqa: E402  (defines the shared training flags)
from sst_tf.atomic_dir import check_output_dir, write_marker  # noqa: E402

flags.DEFINE_list("losses", ["sst", "triplet", "contrastive", "multi_similarity",
                             "proxy_anchor"], "Losses to compare (--loss values).")
flags.DEFINE_list("samplers", ["local", "class_balanced"],
                  "Samplers to compare (--sampler values).")
flags.DEFINE_string("out_dir", None, "Output folder of the comparison.")
flags.DEFINE_integer("compare_eval_every", 1, "Evaluate every N epochs for the curves.")
flags.DEFINE_float("target_recall", 0.9, "Report the training time to reach this Recall@1.")
flags.DEFINE_list("from_json", [], "Train nothing: merge these compare.json files (earlier "
                  "runs, e.g. one per sampler, with the same training flags as given here) "
                  "and write their table and plot to --out_dir.")

FLAGS = flags.FLAGS


def _write_atomic(path: str, text: str | bytes) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "wb" if isinstance(text, bytes) else "w") as f:
        f.write(text)
    os.replace(tmp, path)


def run_cell(base, loss: str, sampler: str, out_dir: str, eval_every: int) -> dict:
    """Trains one (loss, sampler) cell; returns its curve and final metrics."""
    from sst_tf.trainer import Trainer

    keras.backend.clear_session()
    gc.collect()
    cfg = dataclasses.replace(base, loss=loss, sampler=sampler, eval_every=0, progress=False,
                              model_dir=os.path.join(out_dir, f"{loss}-{sampler}"))
    trainer = Trainer(cfg)
    before = trainer.evaluate()
    curve = [(0.0, 0, before)]
    train_seconds = 0.0
    for epoch in range(cfg.epochs):
        refresh = epoch == 0 or epoch % cfg.refresh_every == 0
        start = time.perf_counter()
        stats = trainer.train_epoch(epoch, refresh)
        train_seconds += time.perf_counter() - start
        if not math.isnan(stats["loss"]):
            trainer.update_plateau(stats["loss"])
        trainer.epoch.assign(epoch + 1)
        if (epoch + 1) % eval_every == 0 or epoch + 1 == cfg.epochs:
            result = trainer.evaluate()
            curve.append((train_seconds, epoch + 1, result))
            logging.info("%s/%s epoch %d (%.1fs): recall@1 %.4f", loss, sampler, epoch + 1,
                         train_seconds, result["recall@1"])
    os.makedirs(cfg.model_dir, exist_ok=True)
    trainer.manager.save(checkpoint_number=cfg.epochs)
    after = curve[-1][2]
    metrics = {"before": before, "after": after,
               "curve": [{"train_seconds": t, "epoch": e, **m} for t, e, m in curve]}
    _write_atomic(os.path.join(cfg.model_dir, "metrics.json"), json.dumps(metrics, indent=2))
    return {"loss": loss, "sampler": sampler, "train_seconds": train_seconds, **metrics}


def time_to_reach(curve: list[dict], target: float) -> float | None:
    """Training seconds of the first evaluation with Recall@1 >= target (None if never)."""
    for point in curve:
        if point["recall@1"] >= target:
            return point["train_seconds"]
    return None


def markdown_table(results: list[dict], ks, target: float) -> str:
    """The comparison table (one row per cell) in Markdown."""
    head = (["loss", "sampler"] + [f"R@{k}" for k in ks]
            + ["MAP@R", "NMI", "train time (s)", f"time to R@1 >= {target:g} (s)"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['loss']} | {r['sampler']} | failed: {r['error']} |")
            continue
        a = r["after"]
        reach = time_to_reach(r["curve"], target)
        cells = ([r["loss"], r["sampler"]] + [f"{a[f'recall@{k}']:.4f}" for k in ks]
                 + [f"{a['map@r']:.4f}", f"{a['nmi']:.4f}", f"{r['train_seconds']:.1f}",
                    "-" if reach is None else f"{reach:.1f}"])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(results: list[dict], path: str, title: str) -> None:
    """Recall@1 against training time, one line per cell, to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in results if "error" not in r]
    loss_names = list(dict.fromkeys(r["loss"] for r in ok))
    sampler_names = list(dict.fromkeys(r["sampler"] for r in ok))
    colors = plt.get_cmap("tab10" if len(loss_names) <= 10 else "tab20")
    styles = ["-", "--", ":", "-."]
    fig, ax = plt.subplots(figsize=(9, 5))
    for r in ok:  # colour = loss, line style = sampler
        ax.plot([p["train_seconds"] for p in r["curve"]], [p["recall@1"] for p in r["curve"]],
                marker=".", color=colors(loss_names.index(r["loss"])),
                linestyle=styles[sampler_names.index(r["sampler"]) % len(styles)],
                label=f"{r['loss']} / {r['sampler']}")
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("Recall@1 (test)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
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
    if not FLAGS.model_dir:
        FLAGS.model_dir = FLAGS.out_dir  # required by the config; each cell gets its own
    try:
        base = train_cli.config_from_flags()
        for loss in FLAGS.losses:
            for sampler in FLAGS.samplers:
                dataclasses.replace(base, loss=loss, sampler=sampler).validate()
    except ValueError as e:
        _fail(str(e))
    results = []
    for path in FLAGS.from_json:
        results.extend(_read_results(path))
    os.makedirs(FLAGS.out_dir, exist_ok=True)
    write_marker(FLAGS.out_dir, "comparison", "compare.py")
    for loss in FLAGS.losses if not FLAGS.from_json else []:
        for sampler in FLAGS.samplers:
            logging.info("=== %s / %s ===", loss, sampler)
            try:
                results.append(run_cell(base, loss, sampler, FLAGS.out_dir,
                                        FLAGS.compare_eval_every))
            except Exception as e:  # noqa: BLE001  (report the cell, run the others)
                logging.error("%s/%s failed:\n%s", loss, sampler, traceback.format_exc())
                results.append({"loss": loss, "sampler": sampler,
                                "error": f"{type(e).__name__}: {e}".replace("|", "/")[:200]})
            _write_atomic(os.path.join(FLAGS.out_dir, "compare.json"),
                          json.dumps(results, indent=2))
    if FLAGS.from_json:  # rows grouped by loss, in order of first appearance
        order = list(dict.fromkeys(r["loss"] for r in results))
        results.sort(key=lambda r: order.index(r["loss"]))
        _write_atomic(os.path.join(FLAGS.out_dir, "compare.json"), json.dumps(results, indent=2))
    table = markdown_table(results, base.recall_ks, FLAGS.target_recall)
    header = (f"Data set `{base.dataset}`, backbone `{base.backbone}`, {base.epochs} epochs, "
              f"batch {base.batch_size}, seed {base.seed}; times are training seconds "
              "(sampling + steps, evaluation excluded).\n\n")
    _write_atomic(os.path.join(FLAGS.out_dir, "compare.md"), header + table)
    plot(results, os.path.join(FLAGS.out_dir, "compare.png"),
         f"{base.dataset}: Recall@1 vs training time")
    print(header + table)
    print(f"Wrote {FLAGS.out_dir}/compare.md, compare.png, compare.json")


if __name__ == "__main__":
    cli.run(main, "compare.py")
