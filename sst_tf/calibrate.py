"""Calibrate an export's same / different thresholds on any labelled folder of images.

Usage:
  python -m sst_tf.calibrate --export_dir=runs/digits/export --images=my_photos

`--images` holds one subfolder per class (the first level below it names the
class; images deeper down belong to it). Every image is embedded with the
export (as `sst_tf.embed` does), the thresholds are picked on the pairs
(`sst_tf.calibration`: best F1, and the largest within each `--fmr`), printed
with their rates, and recorded in the export (replacing those it held), so
that `sst_tf.search --threshold=NAME` and `sst_tf.verify` use them.
`--norecord` only prints.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from absl import flags, logging

from sst_tf import calibration, cli
from sst_tf.embed import Embedder, embed_files, list_images

FLAGS = flags.FLAGS
PROG = "sst_tf.calibrate"


def define_flags(fv: flags.FlagValues = FLAGS) -> None:
    """Defines this entry point's flags."""
    flags.DEFINE_string("export_dir", None, "SavedModel folder written by sst_tf.export.",
                        flag_values=fv)
    flags.DEFINE_string("images", None, "A folder with one subfolder of images per class.",
                        flag_values=fv)
    flags.DEFINE_list("fmr", [str(f) for f in calibration.FMR_TARGETS],
                      "Target false-match rates: a threshold for each.", flag_values=fv)
    flags.DEFINE_bool("record", True, "Record the thresholds in the export.", flag_values=fv)


def _targets() -> list[float]:
    try:
        targets = [float(f) for f in FLAGS.fmr]
    except ValueError as e:
        raise cli.UsageError(f"--fmr={','.join(FLAGS.fmr)}: not numbers ({e})") from e
    bad = [f for f in targets if not 0 < f < 1]
    if bad or not targets:
        raise cli.UsageError(f"--fmr={','.join(FLAGS.fmr)}: each target must lie in (0, 1)")
    return targets


def check_flags(argv: Sequence[str]) -> None:
    """The usage checks, before TensorFlow is imported (raises `cli.UsageError`)."""
    cli.check_usage(argv, FLAGS, required=["export_dir", "images"], folders=["images"])
    _targets()


def class_of(path: str, root: str) -> str | None:
    """The class of an image: the first folder below `root` (None for a file in `root`)."""
    parts = os.path.relpath(path, root).split(os.sep)
    return parts[0] if len(parts) > 1 else None


def record_thresholds(export_dir: str, thresholds: dict[str, float]) -> None:
    """Writes `thresholds` into the export's record and into its ONNX / LiteRT files."""
    from sst_tf.export import SPEC_FILENAME, load_export_info
    from sst_tf.outputs import write_json_atomic

    info = load_export_info(export_dir)
    info.setdefault("metadata", {})["thresholds"] = {k: float(v) for k, v in thresholds.items()}
    write_json_atomic(os.path.join(export_dir, "assets", SPEC_FILENAME), info)
    for name in info.get("files", {}):  # the ONNX / LiteRT files carry them too
        from sst_tf import convert

        try:
            convert.update_thresholds(os.path.join(export_dir, name), thresholds)
        except ImportError as e:
            logging.warning("%s keeps its earlier thresholds: %s (pip install "
                            "'sst_tf[onnx]' to update it)", name, e)


@cli.entry_point(PROG, tensorflow=True, quiet_info=True, usage=check_flags)
def main(argv: Sequence[str]) -> int:
    """Entry point."""
    targets = _targets()
    root = os.path.abspath(FLAGS.images)
    try:
        paths = list_images(root)
        labelled = [(p, class_of(p, root)) for p in paths]
        if not any(c is not None for _, c in labelled):
            raise ValueError(f"--images={FLAGS.images} has no class subfolders (one folder of "
                             "images per class)")
        embedder = Embedder(FLAGS.export_dir)
    except (FileNotFoundError, ValueError) as e:
        raise cli.UsageError(str(e)) from e
    loose = [p for p, c in labelled if c is None]
    kept, emb, failed = embed_files(embedder, [p for p, c in labelled if c is not None],
                                    embedder.batch_size, progress=False)
    names = np.array([class_of(p, root) for p in kept])
    try:
        cal = calibration.calibrate(emb, names, fmr_targets=targets)
    except ValueError as e:
        raise cli.UsageError(f"--images={FLAGS.images}: {e}") from e
    print(f"{len(kept)} images in {len(np.unique(names))} classes of --images={FLAGS.images} "
          f"({cal.num_pairs['same']:,} same-class and {cal.num_pairs['different']:,} "
          "different-class pairs)"
          + (f"; {len(failed)} unreadable skipped" if failed else "")
          + (f"; {len(loose)} outside class folders left out" if loose else ""))
    for name, t in cal.thresholds.items():
        print(calibration.describe(name, t, cal.rates[name]))
    if FLAGS.record:
        try:
            record_thresholds(FLAGS.export_dir, cal.thresholds)
        except OSError as e:
            raise cli.RunError(f"recording the thresholds in {FLAGS.export_dir} failed: "
                               f"{e}") from e
        print(f"Recorded in {FLAGS.export_dir}: sst_tf.search --threshold=best_f1 and "
              "sst_tf.verify use them")
    return 0


if __name__ == "__main__":
    define_flags()
    cli.run(main)
