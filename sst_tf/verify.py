"""Are two images of the same thing? One same / different decision with an export.

Usage:
  python -m sst_tf.verify --export_dir=runs/digits/export --images=a.jpg,b.jpg \
      [--threshold=best_f1]

Embeds both images with the export (as `sst_tf.embed` does) and prints one
line: "same" or "different", their Euclidean distance and the threshold used
(a distance, or a threshold the export records: `best_f1`, `fmr=0.01`,
`fmr=0.001`, calibrated on the training classes at the end of training;
default `best_f1`). `--json` prints the same as JSON. Exit 0 either way.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
from absl import flags

from sst_tf import calibration, cli
from sst_tf.embed import Embedder, embed_files

FLAGS = flags.FLAGS
PROG = "sst_tf.verify"


def define_flags(fv: flags.FlagValues = FLAGS) -> None:
    """Defines this entry point's flags."""
    flags.DEFINE_string("export_dir", None, "SavedModel folder written by sst_tf.export.",
                        flag_values=fv)
    flags.DEFINE_list("images", None, "The two image files to compare, comma-separated.",
                      flag_values=fv)
    flags.DEFINE_string("threshold", "best_f1",
                        "Same when the distance is at most this: a distance, or a threshold "
                        "the export records (best_f1, fmr=0.01, fmr=0.001).", flag_values=fv)
    flags.DEFINE_bool("json", False, "Print JSON instead of one line.", flag_values=fv)


def check_flags(argv: Sequence[str]) -> None:
    """The usage checks, before TensorFlow is imported (raises `cli.UsageError`)."""
    cli.check_usage(argv, FLAGS, required=["export_dir", "images"])
    if len(FLAGS.images) != 2:
        raise cli.UsageError(f"--images takes two image files (a,b), got {len(FLAGS.images)}")
    try:  # a number's range now; a name once the export is loaded
        calibration.parse_threshold(FLAGS.threshold)
    except ValueError as e:
        raise cli.UsageError(str(e)) from e


def decide(distance: float, threshold: float) -> str:
    """"same" when `distance` is at most `threshold`, else "different"."""
    return "same" if distance <= threshold else "different"


@cli.entry_point(PROG, tensorflow=True, quiet_info=True, usage=check_flags)
def main(argv: Sequence[str]) -> int:
    """Entry point."""
    try:
        embedder = Embedder(FLAGS.export_dir)
        threshold = calibration.resolve_threshold(FLAGS.threshold, embedder.info,
                                                  f"--export_dir={FLAGS.export_dir}")
    except (FileNotFoundError, ValueError) as e:
        raise cli.UsageError(str(e)) from e
    kept, emb, failed = embed_files(embedder, list(FLAGS.images), embedder.batch_size,
                                    progress=False)
    if failed or len(kept) != 2:
        names = ", ".join(str(p) for p, _ in failed) or "?"
        raise cli.UsageError(f"--images: {names} cannot be read or decoded as an image")
    distance = float(np.sqrt(((emb[0] - emb[1]) ** 2).sum()))
    answer = decide(distance, threshold)
    if FLAGS.json:
        print(json.dumps({"images": [str(p) for p in kept], "answer": answer,
                          "distance": distance, "threshold": threshold,
                          "threshold_name": FLAGS.threshold}))
    else:
        print(f"{answer}: distance {distance:.4f} {'<=' if answer == 'same' else '>'} "
              f"threshold {threshold:.4f} ({FLAGS.threshold})")
    return 0


if __name__ == "__main__":
    define_flags()
    cli.run(main)
