r"""Train and evaluate an embedding model.

  python -m sst_tf.train --flagfile=configs/digits.cfg --model_dir=runs/digits

Flags are read only here; they become a `TrainConfig` for `sst_tf.trainer`.
Writes checkpoints, TensorBoard events (train/, eval/), config.json and
metrics.json under --model_dir. Rerunning the same command resumes the run
(docs/reliability.md). Exit codes: 0 done; 1 trained and evaluated but the
export failed (retry with `python -m sst_tf.export`); 2 bad flags or data, or a resume
with incompatible flags; 3 too many non-finite steps in a row; 4 disk full;
5 an image could not be read during the run; 130/143 stopped by SIGINT/SIGTERM
after writing a checkpoint.
"""

from __future__ import annotations

import os
import signal
import sys

import numpy as np
from absl import flags, logging

from sst_tf import calibration, cli, config_flags, loss_registry, outputs, run_state
from sst_tf import data as data_lib
from sst_tf.config import TrainConfig
from sst_tf.outputs import check_output_dir, write_marker
from sst_tf.run_state import RunFolder

FLAGS = flags.FLAGS

# One flag per TrainConfig field (help text and choices declared there), and --dry_run.
config_flags.define_flags(TrainConfig, FLAGS)
flags.DEFINE_bool("dry_run", False,
                  "Check the flags and load the data set (counts, files, image check), "
                  "print a summary and exit without training.")


def config_from_flags() -> TrainConfig:
    """Builds a `TrainConfig` from the parsed flags (raises ValueError on bad values).

    An unset --resize_size becomes max(image_size, round(image_size * 256 / 224)).
    """
    values = config_flags.config_values(TrainConfig, FLAGS)
    if values["resize_size"] is None:
        image_size = values["image_size"]
        values["resize_size"] = max(image_size, round(image_size * 256 / 224))
    return TrainConfig(**values)


def _settings_line(config: TrainConfig) -> str:
    """One line: the loss settings the run uses (given flags, else the loss's defaults)."""
    s = loss_registry.settings(config.resolved())
    margin = "none" if s["margin"] is None else f"{s['margin']:g}"
    params = "".join(f", {k} {v}" if isinstance(v, str) else f", {k} {v:g}"
                     for k, v in s["params"].items())
    return (f"--loss={s['loss']}: normalize {s['normalize']} ({s['geometry']} geometry), "
            f"sampler {s['sampler']}, margin {margin}, lr x {s['loss_lr_multiplier']:g}{params}")


def _fail(message: str, code: int = 2, prog: str = "sst_tf.train") -> None:
    sys.exit(cli.fail(prog, message, code))


def _legacy_run(folder: str) -> str | None:
    """Recognises training runs written before folders carried a marker."""
    names = set(os.listdir(folder))
    return "model_dir" if "config.json" in names or "checkpoints" in names else None


def check_model_dir(config) -> None:
    """Refuses a --model_dir (or its export/, projector/) holding files sst_tf did not write.

    A run of ours is resumed; its export and projector are rewritten at the end.

    Raises:
      cli.UsageError: naming the folder.
    """
    from sst_tf import export, projector  # deferred: loads TensorFlow; --help stays fast

    model_dir = config.model_dir
    check_output_dir(model_dir, f"--model_dir={model_dir}", "model_dir", legacy=_legacy_run)
    if config.export:
        folder = RunFolder(model_dir)
        for path, kind, legacy in ((folder.export, "export", export.legacy_export),
                                   (folder.projector, "projector", projector.legacy_projector)):
            check_output_dir(path, f"{path} (written at the end of training)", kind,
                             legacy=legacy)


def single_image_classes(labels) -> int:
    """How many classes have exactly one image."""
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    return int((counts == 1).sum())


def dry_run_summary(ds) -> str:
    """The lines --dry_run prints about a loaded data set."""
    lines = [f"{ds.name}: train {len(ds.train)} images / {ds.train.num_classes} classes, "
             f"test {len(ds.test)} images / {ds.test.num_classes} classes: data OK "
             "(--dry_run: not training)."]
    for split, what in ((ds.train, "train"), (ds.test, "test")):
        single = single_image_classes(split.labels)
        if single:
            role = ("its image has no same-class partner, so it is never an anchor with a "
                    "target neighbour (it still serves as an imposter)" if what == "train" else
                    "its image is a query that cannot find a same-class neighbour (left out "
                    "of MAP@R and R-Precision, a miss in Recall@K)")
            lines.append(f"warning: {what} split: {single} of {split.num_classes} classes have "
                         f"a single image: {role}.")
    return "\n".join(lines)


def main(argv):
    """Validates the flags, trains, evaluates and prints the before/after table.

    A second Ctrl-C (which stops at once, without the checkpoint of the first)
    ends with the same one line as the first, exit 130.
    """
    try:
        _main(argv)
    except KeyboardInterrupt:
        _fail(str(run_state.Interrupted(signal.SIGINT, None)), 128 + signal.SIGINT)


def _main(argv):
    if len(argv) > 1:
        _fail(f"unexpected arguments {' '.join(argv[1:])!r} (flags need a leading --).")
    try:
        config = config_from_flags()
        config.validate()
    except ValueError as e:
        _fail(str(e))
    cli.quiet_tensorflow()
    if FLAGS.dry_run:
        try:
            ds = data_lib.load_dataset(config.dataset, config.data_dir, **config.reader_options())
        except (ValueError, NotImplementedError) as e:
            _fail(str(e))
        print(dry_run_summary(ds))
        print(_settings_line(config))
        return
    # deferred: these load TensorFlow; --help and flag errors stay fast
    from sst_tf import distribute, pipeline
    from sst_tf import step as step_lib
    from sst_tf.trainer import CollapseError, ExportError, Trainer

    try:
        # The strategy first: multi-worker set-up must precede other TF work.
        strategy = distribute.make_strategy(config.strategy)
        if distribute.is_chief(strategy):  # the chief writes model_dir; workers do not
            check_model_dir(config)
        trainer = Trainer(config, strategy=strategy)
    except (ValueError, NotImplementedError, cli.UsageError) as e:
        _fail(str(e))
    if trainer.is_chief:
        os.makedirs(config.model_dir, exist_ok=True)
        write_marker(config.model_dir, "model_dir", "sst_tf.train")
    export_error = None
    try:
        metrics = trainer.fit()
    except ExportError as e:  # trained and evaluated: metrics.json is written
        metrics, export_error = e.metrics, e
    except run_state.Interrupted as e:
        _fail(str(e), e.exit_code)
    except step_lib.NonFiniteError as e:
        _fail(str(e), 3)
    except outputs.DiskFullError as e:
        _fail(str(e), 4)
    except pipeline.InputError as e:
        _fail(str(e), 5)
    except CollapseError as e:
        _fail(str(e), 1)
    if not trainer.is_chief:  # only the chief evaluates and writes files
        logging.info("Worker done (the chief writes metrics.json).")
        return
    path = RunFolder(config.model_dir).metrics
    lines = [f"{'metric':<12} {'before':>8} {'after':>8}"]
    for key, after in metrics["after"].items():
        if isinstance(after, float):
            lines.append(f"{key:<12} {metrics['before'].get(key, float('nan')):8.4f} {after:8.4f}")
    lines += calibration.report_lines(metrics.get("calibration"))
    print(_settings_line(config))
    print("\n".join(lines))
    print(f"Wrote {path}")
    if export_error is not None:
        _fail(str(export_error), 1)
    logging.info("Done.")


if __name__ == "__main__":
    cli.run(main, "sst_tf.train")
