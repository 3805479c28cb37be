"""The budget "to the plateau": train until the validation MAP@R stops improving.

A real training run is hours, not the suite's 30 seconds. This budget trains
a run the way a user would: until its MAP@R on validation classes has not
improved for `patience` evaluations, with a cap of `cfg.epochs` epochs.

Validation uses training classes only, never the test classes:

* a data set with a `val/` folder (the suite's benchmarks, study/make_suite.py)
  trains on `val/train` and validates on `val/test`, classes held out of
  training (the class-disjoint validation of Musgrave et al., "A Metric
  Learning Reality Check", 2020);
* a data set without one (digits, whose test images show the training
  classes) trains on half of every training class's images and validates on
  the other half.

The test split (the benchmark's own, unseen classes) is evaluated at every
evaluation too, for the curves. A run's result ("after") is the test
evaluation at its best validation MAP@R: the checkpoint a user would keep.
The untrained model's evaluation is not a candidate: the best is taken among
trained evaluations (several losses first fall below the untrained MAP@R and
then rise far above it).

A run resumes after an interruption: every evaluation saves a checkpoint and
`progress.json` (curve, clock, best) in the run's folder, and a restarted run
continues from the last of them (the sampler is refreshed on the first epoch
after a restart).
"""

from __future__ import annotations

import dataclasses
import json
import os

import keras
from absl import logging
from clock import TrainingClock, reference_op_seconds

from sst_tf import data as data_lib
from sst_tf import loss_registry
from sst_tf.outputs import read_json_object, write_text_atomic

PROGRESS = "progress.json"
VALIDATION_SPLIT_SEED = 0  # the digits halves are data, the same for every run


def plateau_data(cfg) -> tuple[data_lib.Dataset, data_lib.Split, str]:
    """The training data, validation split and test split of a plateau run.

    Args:
      cfg: the run's resolved `TrainConfig` (its data set and data dir).

    Returns:
      (Dataset(train=training images, test=validation images), the test split,
      a phrase saying where the validation images come from).
    """
    options = cfg.reader_options()
    val_dir = os.path.join(cfg.data_dir, "val") if cfg.data_dir else ""
    if cfg.dataset == "folder" and os.path.isdir(os.path.join(val_dir, "train")):
        val = data_lib.load_dataset("folder", val_dir, **options)
        full = data_lib.load_dataset("folder", cfg.data_dir, **options)
        return (data_lib.Dataset(val.name, val.train, val.test), full.test,
                "val/test: training classes held out of training")
    full = data_lib.load_dataset(cfg.dataset, cfg.data_dir, **options)
    fit, held = data_lib.stratified_half_split(full.train.labels, VALIDATION_SPLIT_SEED)
    return (data_lib.Dataset(full.name, data_lib.subset(full.train, fit),
                             data_lib.subset(full.train, held)), full.test,
            "half of every training class's images, held out of training")


@dataclasses.dataclass
class PlateauRule:
    """Stops after `patience` evaluations without a validation MAP@R above the best.

    Attributes:
      patience: evaluations without improvement before the run stops.
      min_delta: an improvement must exceed the best by more than this.
      best: the best validation MAP@R so far.
      best_index: its evaluation's index in the curve.
      since_best: evaluations since then.
    """

    patience: int
    min_delta: float = 0.0
    best: float = -1.0
    best_index: int = 0
    since_best: int = 0

    def update(self, value: float, index: int) -> bool:
        """Records evaluation `index`'s validation MAP@R; True when the run should stop."""
        if value > self.best + self.min_delta:
            self.best, self.best_index, self.since_best = value, index, 0
        else:
            self.since_best += 1
        return self.since_best >= self.patience


def first_at(curve: list[dict], target: float, key: str = "map@r") -> dict | None:
    """The first point of `curve` whose `key` is at or above `target` (None if none)."""
    return next((p for p in curve if p[key] >= target), None)


def plateau_summary(curve: list[dict], best_index: int, share: float = 0.9) -> dict:
    """Times to the plateau and to `share` of it, from a run's curve.

    The plateau is the test MAP@R at the best validation evaluation; the time
    to it is that evaluation's; the time to `share` of it is the first
    evaluation whose test MAP@R reaches `share` x the plateau's.
    """
    best = curve[best_index]
    hit = first_at(curve[:best_index + 1], share * best["map@r"]) or best
    return {"epoch": best["epoch"], "train_seconds": best["train_seconds"],
            "presentations": best["presentations"], "val_map@r": best["val_map@r"],
            "share": share, "share_epoch": hit["epoch"],
            "share_train_seconds": hit["train_seconds"],
            "share_presentations": hit["presentations"]}


def run_to_plateau(cfg, patience: int, eval_every: int, clock: str,
                   min_delta: float = 0.0) -> dict:
    """Trains one run to its validation plateau (or `cfg.epochs`); resumes from its folder.

    Args:
      cfg: the run's resolved `TrainConfig`, its own `model_dir`.
      patience: evaluations without improvement before the run stops.
      eval_every: epochs between evaluations.
      clock: the training clock (study/clock.py).
      min_delta: the smallest validation MAP@R gain that counts.

    Returns:
      compare.json's record of the run (without loss, sampler, seed): "before"
      and "after" (test metrics: untrained, and at the best validation MAP@R),
      "final" (the last evaluation), "plateau" (times to it and to 90 % of it),
      "curve" (every evaluation: training seconds, epoch, presentations,
      validation MAP@R, test metrics), "stopped" ("plateau" or "cap").
    """
    from sst_tf.trainer import Trainer

    keras.backend.clear_session()
    train_data, test, where = plateau_data(cfg)
    trainer = Trainer(cfg, dataset=train_data)
    path = os.path.join(cfg.model_dir, PROGRESS)
    latest = trainer.checkpoints.latest_checkpoint()
    rule = PlateauRule(patience, min_delta)
    if latest and os.path.exists(path):
        progress = read_json_object(path, f"the run folder {cfg.model_dir}")
        trainer.checkpoints.restore(latest)
        rule = PlateauRule(patience, min_delta, **progress["rule"])
        logging.info("Resuming %s at epoch %d (%d evaluations).", cfg.model_dir,
                     progress["epoch"], len(progress["curve"]))
    else:
        before = trainer.evaluate(test)
        point = {"train_seconds": 0.0, "epoch": 0, "presentations": 0,
                 "val_map@r": trainer.evaluate()["map@r"], **before}
        progress = {"epoch": 0, "train_seconds": 0.0, "wall_seconds": 0.0, "presentations": 0,
                    "probes": [] if clock == "reference" else [reference_op_seconds()],
                    "before": before, "curve": [point], "validation": where,
                    "rule": {}, "stopped": None}
    timer = TrainingClock(clock)
    resumed = True
    while progress["stopped"] is None:
        epoch = progress["epoch"]
        refresh = resumed or epoch % cfg.refresh_every == 0
        resumed = False
        timer.start()
        stats = trainer.train_epoch(epoch, refresh)
        seconds, elapsed = timer.stop()
        trainer.end_epoch(epoch, stats["loss"])
        progress["epoch"] = epoch = epoch + 1
        progress["train_seconds"] += seconds
        progress["wall_seconds"] += elapsed
        progress["presentations"] += stats["images"]
        if epoch % eval_every and epoch < cfg.epochs:
            continue
        result = trainer.evaluate(test)
        point = {"train_seconds": progress["train_seconds"], "epoch": epoch,
                 "presentations": progress["presentations"],
                 "val_map@r": trainer.evaluate()["map@r"], **result}
        progress["curve"].append(point)
        stop = rule.update(point["val_map@r"], len(progress["curve"]) - 1)
        logging.info("%s epoch %d (%.0fs): validation MAP@R %.4f (best %.4f, %d/%d), test "
                     "MAP@R %.4f", os.path.basename(cfg.model_dir), epoch,
                     progress["train_seconds"], point["val_map@r"], rule.best, rule.since_best,
                     patience, point["map@r"])
        if stop or epoch >= cfg.epochs:
            progress["stopped"] = "plateau" if stop else "cap"
        progress["rule"] = dataclasses.asdict(rule)
        progress["rule"].pop("patience")
        progress["rule"].pop("min_delta")
        progress["probes"] += timer.op_seconds
        timer.op_seconds = []
        os.makedirs(cfg.model_dir, exist_ok=True)
        trainer.checkpoints.save_epoch(epoch)
        write_text_atomic(path, json.dumps(progress, indent=2))
    curve = progress["curve"]
    after = {k: v for k, v in curve[rule.best_index].items()
             if k not in ("train_seconds", "epoch", "presentations", "val_map@r")}
    return {"train_seconds": progress["train_seconds"], "clock": clock,
            "wall_seconds": progress["wall_seconds"], "epochs": progress["epoch"],
            "reference_op_seconds": progress["probes"], "before": progress["before"],
            "after": after, "final": curve[-1], "stopped": progress["stopped"],
            "plateau": plateau_summary(curve, rule.best_index), "validation": where,
            "settings": loss_registry.settings(trainer.config), "curve": curve}
