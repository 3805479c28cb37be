r"""Samplers (and losses) over several seeds: mean and spread, wall time, batch diagnostics.

  python study/sampler_study.py --flagfile=configs/digits.cfg --out_dir=runs/samplers \
      --seeds=0,1,2 --losses=sst \
      --variant=random:sampler=random --variant=original:neighborhoods=original \
      --variant=mixed:neighborhoods=mixed

Every `sst_tf.train` flag sets the shared configuration; each `--variant` is
`NAME:field=value,field=value` (fields of `TrainConfig`, e.g. `sampler`,
`neighborhoods`, `local_share`, `min_classes`, `warmup_epochs`). Every cell
(loss x variant x seed) trains in this process for the same number of epochs
(the plateau schedule applies, early stopping does not: the same budget for
all) and is evaluated on the test split at the end.

`--init_epochs=N` starts every cell of a seed from the same model trained for
N epochs with random batches (informative starting features, closer to the
paper's ImageNet start); those N epochs are not counted in the cells' time.

Writes to --out_dir: `study.md` (table: loss, variant, Recall@1, MAP@R, NMI as
mean +- std over seeds with the min, training seconds, and the batch
diagnostics averaged over the second half of the epochs) and `study.json`
(per cell: metrics, per-epoch loss and sampler statistics).
`--render=a/study.json,b/study.json` prints the table of earlier runs together.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import os
import sys
import time

import keras
import numpy as np
from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sst_tf import config_flags  # noqa: E402
from sst_tf import train as train_cli  # noqa: E402  (defines the shared training flags)

flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds; each cell is run once per seed.")
flags.DEFINE_list("losses", ["sst"], "Losses (--loss values).")
flags.DEFINE_multi_string("variant", None, "NAME:field=value,... (TrainConfig overrides).")
flags.DEFINE_string("out_dir", None, "Output folder.")
flags.DEFINE_integer("init_epochs", 0, "Start from a model trained N epochs on random batches.")
flags.DEFINE_list("render", [], "Only re-render the table from these study.json files.")

FLAGS = flags.FLAGS

DIAGNOSTICS = ("mean_classes_per_batch", "mean_paired_classes_per_batch",
               "min_paired_classes_per_batch", "anchor_share", "distance_ratio",
               "sst_at_refresh")


def _loop(trainer, epochs: int) -> list[dict]:
    history = []
    for epoch in range(epochs):
        refresh = epoch == 0 or epoch % trainer.config.refresh_every == 0
        stats = trainer.train_epoch(epoch, refresh)
        trainer.end_epoch(epoch, stats["loss"])
        history.append({k: float(v) for k, v in stats.items()})
    return history


def init_weights(base, seed: int, epochs: int, out_dir: str) -> tuple[str, dict]:
    """Trains `epochs` random-batch epochs; returns (weights file, its test metrics)."""
    from sst_tf.trainer import Trainer

    keras.backend.clear_session()
    cfg = dataclasses.replace(base, sampler="random", seed=seed, eval_every=0, progress=False,
                              epochs=epochs, model_dir=os.path.join(out_dir, f"init-{seed}"))
    trainer = Trainer(cfg)
    _loop(trainer, epochs)
    path = os.path.join(out_dir, f"init-{seed}.weights.h5")
    trainer.model.save_weights(path)
    return path, trainer.evaluate()


def run_cell(base, loss: str, name: str, overrides: dict, seed: int, out_dir: str,
             init: str | None) -> dict:
    """Trains one cell; returns its final metrics, time and per-epoch statistics."""
    from sst_tf.trainer import Trainer

    keras.backend.clear_session()
    gc.collect()
    cfg = dataclasses.replace(base, loss=loss, seed=seed, eval_every=0, progress=False,
                              model_dir=os.path.join(out_dir, f"{loss}-{name}-{seed}"),
                              **overrides)
    trainer = Trainer(cfg)
    if init:
        trainer.model.load_weights(init)
    start = time.perf_counter()
    history = _loop(trainer, cfg.epochs)
    seconds = time.perf_counter() - start
    after = trainer.evaluate()
    logging.info("%s/%s seed %d: %.1fs, recall@1 %.4f, map@r %.4f", loss, name, seed, seconds,
                 after["recall@1"], after["map@r"])
    return {"loss": loss, "variant": name, "seed": seed, "overrides": overrides,
            "batch_size": cfg.batch_size,
            "train_seconds": seconds, "after": after, "history": history}


def _ms(values) -> str:
    v = np.asarray(values, np.float64)
    return f"{v.mean():.3f} ± {v.std():.3f} (min {v.min():.3f})"


def _images_per_epoch(result: dict) -> float:
    """Mean valid rows per epoch (batches x fill x batch size) of one run."""
    b = result.get("batch_size", 100)  # studies before this field: digits, batch 100
    return float(np.mean([h["sampler/mean_fill"] * h["sampler/num_batches"] * b
                          for h in result["history"]]))


def markdown(results: list[dict], names: list[str], losses: list[str]) -> str:
    """The study table: one row per (loss, variant), mean ± std over seeds."""
    head = ["loss", "variant", "Recall@1", "MAP@R", "NMI", "train s", "images/epoch", "seeds",
            "classes/batch", "paired classes (min)", "largest class", "anchors", "D_at/D_ai",
            "SST at refresh", "loss / log 2"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for loss in losses:
        for name in names:
            cell = [r for r in results if r["loss"] == loss and r["variant"] == name]
            if not cell:
                continue
            # Batch diagnostics: mean over the second half of the epochs (no warm-up).
            diag = []
            for r in cell:
                hist = r["history"][len(r["history"]) // 2:]
                diag.extend(h for h in hist if not h.get("sampler/warmup"))

            def d(key, fmt=".2f", diag=diag):
                vals = [h.get(key if "/" in key or key == "loss_over_log2" else
                              f"sampler/{key}", math.nan) for h in diag]
                vals = [v for v in vals if not math.isnan(v)]
                return format(float(np.mean(vals)), fmt) if vals else "-"

            lines.append("| " + " | ".join([
                loss, name,
                _ms([r["after"]["recall@1"] for r in cell]),
                _ms([r["after"]["map@r"] for r in cell]),
                _ms([r["after"]["nmi"] for r in cell]),
                f"{np.mean([r['train_seconds'] for r in cell]):.0f}",
                f"{np.mean([_images_per_epoch(r) for r in cell]):.0f}",
                str(len(cell)),
                d("mean_classes_per_batch", ".1f"),
                f"{d('mean_paired_classes_per_batch', '.1f')} "
                f"({d('min_paired_classes_per_batch', '.0f')})",
                d("largest_class_share"), d("anchor_share"), d("distance_ratio"),
                d("sst_at_refresh", ".3f"), d("loss_over_log2", ".3f"),
            ]) + " |")
    return "\n".join(lines) + "\n"


def main(argv):
    if len(argv) > 1:
        train_cli._fail(f"unexpected arguments {' '.join(argv[1:])!r}.")
    if FLAGS.render:
        results = []
        for path in FLAGS.render:
            with open(path) as f:
                results.extend(json.load(f)["results"])
        names = list(dict.fromkeys(r["variant"] for r in results))
        print(markdown(results, names, list(dict.fromkeys(r["loss"] for r in results))))
        return
    if not FLAGS.out_dir:
        train_cli._fail("--out_dir is required.")
    if not FLAGS.variant:
        train_cli._fail("at least one --variant is required.")
    if not FLAGS.model_dir:
        FLAGS.model_dir = FLAGS.out_dir
    try:
        base = train_cli.config_from_flags()
        variants = [config_flags.parse_overrides(v, type(base)) for v in FLAGS.variant]
        seeds = [int(s) for s in FLAGS.seeds]
        for loss in FLAGS.losses:
            for _, overrides in variants:
                dataclasses.replace(base, loss=loss, **overrides).validate()
    except ValueError as e:
        train_cli._fail(str(e))
    os.makedirs(FLAGS.out_dir, exist_ok=True)
    json_path = os.path.join(FLAGS.out_dir, "study.json")
    results, inits = [], {}
    for seed in seeds:
        init = None
        if FLAGS.init_epochs:
            init, metrics = init_weights(base, seed, FLAGS.init_epochs, FLAGS.out_dir)
            inits[seed] = metrics
            logging.info("init seed %d: %s", seed, metrics)
        for loss in FLAGS.losses:
            for name, overrides in variants:
                results.append(run_cell(base, loss, name, overrides, seed, FLAGS.out_dir, init))
                with open(json_path + ".tmp", "w") as f:
                    json.dump({"results": results, "inits": inits}, f, indent=1)
                os.replace(json_path + ".tmp", json_path)
    names = [n for n, _ in variants]
    table = markdown(results, names, FLAGS.losses)
    init_note = (f"; every cell starts from the model after {FLAGS.init_epochs} random-batch "
                 f"epochs (same seed)" if FLAGS.init_epochs else "")
    header = (f"Data set `{base.dataset}`, backbone `{base.backbone}`, {base.epochs} epochs, "
              f"batch {base.batch_size}, seeds {','.join(map(str, seeds))}{init_note}. "
              "Metrics: test split, mean ± std over seeds (min); train s: mean training "
              "seconds (sampling + refresh + steps); batch diagnostics: mean over the second "
              "half of the epochs.\n\n")
    with open(os.path.join(FLAGS.out_dir, "study.md"), "w") as f:
        f.write(header + table)
    print(header + table)


if __name__ == "__main__":
    app.run(main)
