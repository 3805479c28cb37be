r"""Results table of a run next to the published numbers (docs/method.md#published-numbers).

  python -m sst_tf.report --model_dir=runs/cub

Reads `MODEL_DIR/metrics.json` (and `config.json` for the data set) and prints
Recall@K, NMI, MAP@R and R-Precision before and after training, in percent,
with the published Recall@1 reference points beside them. `job.sh` calls it
at the end.
"""

from __future__ import annotations

import os
import sys

from absl import flags

from sst_tf import calibration, cli
from sst_tf.outputs import read_json_object
from sst_tf.run_state import RunFolder

PROG = "sst_tf.report"
# Data sets a run can have (sst_tf.train --dataset); published numbers exist for TITLES only.
DATASETS = ("digits", "cub", "cars196", "sop", "folder")

# Published Recall@1 (%), 512-d, BN-Inception backbone (docs/method.md#published-numbers);
# None: not reported.
REFERENCES: dict[str, dict[str, float | None]] = {
    "pub:untrained": {"cub": 52.4, "cars196": None, "sop": None},
    "pub:MS": {"cub": 65.7, "cars196": 84.1, "sop": 78.2},
    "pub:ProxyAnchor": {"cub": 68.4, "cars196": 86.1, "sop": 79.1},
}
TITLES = {
    "cub": "CUB-200-2011 (test: classes 101-200)",
    "cars196": "CARS196 (test: classes 99-196)",
    "sop": "Stanford Online Products (test: 11,316 classes)",
}


def _recall_keys(metrics: dict) -> list[str]:
    keys = [k for k in metrics if k.startswith("recall@")]
    return sorted(keys, key=lambda k: int(k.split("@")[1]))


def format_table(metrics: dict, dataset: str) -> str:
    """Formats a results table.

    Args:
      metrics: the contents of `metrics.json` ("before"/"after" dicts of floats
        in [0, 1]; either may be missing).
      dataset: data-set name (selects the reference column values).

    Returns:
      A multi-line text table; numbers in percent.
    """
    before, after = metrics.get("before") or {}, metrics.get("after") or {}
    keys = _recall_keys(after or before)
    keys += [k for k in ("nmi", "map@r", "r_precision") if k in (after or before)]
    refs = ({name: vals.get(dataset) for name, vals in REFERENCES.items()}
            if dataset in TITLES else {})
    header = ["metric (%)", "before", "after"] + list(refs)
    rows = []
    for key in keys:
        row = [key, _pct(before.get(key)), _pct(after.get(key))]
        row += [_pct(v, scale=1.0) if key == "recall@1" else "" for v in refs.values()]
        rows.append(row)
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "  ".join(  # noqa: E731
        c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
    ).rstrip()
    out = [TITLES.get(dataset, dataset), line(header), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    if refs:
        out.append(
            "before/after: this run, before and after training. pub: published Recall@1 "
            "(docs/method.md#published-numbers; 512-d BN-Inception; sst_tf uses InceptionV3): "
            "untrained = ImageNet-pretrained backbone without training, MS = Multi-Similarity "
            "(CVPR 2019), ProxyAnchor = Proxy-Anchor (CVPR 2020); '-' = not reported."
        )
    else:
        out.append(f"before/after: this run, before and after training. No published numbers "
                   f"exist for {dataset}.")
    return "\n".join(out)


def _pct(value, scale: float = 100.0) -> str:
    if value is None:
        return "-"
    return f"{float(value) * scale:.1f}"


def report(model_dir: str, dataset: str | None = None) -> str:
    """Reads `model_dir/metrics.json` (+ `config.json`) and returns the table.

    Args:
      model_dir: a finished run.
      dataset: whose published numbers to show (default: the run's data set).

    Raises:
      FileNotFoundError: no metrics.json in `model_dir` (names the path).
      ValueError: metrics.json or config.json damaged (`read_json_object`), or
        ``dataset`` unknown (names the file or flag).
    """
    if dataset is not None and dataset not in DATASETS:
        raise ValueError(f"--dataset={dataset} is unknown; choose from {', '.join(DATASETS)}")
    path = RunFolder(model_dir).metrics
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: has the run finished its evaluation?")
    named_by = f"--model_dir={model_dir}"
    metrics = read_json_object(path, named_by)
    if not any(isinstance(metrics.get(k), dict) for k in ("before", "after")):
        raise ValueError(f"{path} holds no 'before'/'after' metrics: not a metrics.json of sst_tf")
    cfg = RunFolder(model_dir).config
    trained_on = read_json_object(cfg, named_by).get("dataset") if os.path.isfile(cfg) else None
    if dataset is not None and trained_on and dataset != trained_on:
        print(f"{PROG}: warning: the run trained on {trained_on} ({cfg}), not on "
              f"--dataset={dataset}: its numbers are not comparable with {dataset}'s published "
              "ones", file=sys.stderr)
    lines = calibration.report_lines(metrics.get("calibration"))
    return format_table(metrics, dataset or trained_on or "?") + "".join(
        f"\n{line}" for line in lines)


FLAGS = flags.FLAGS


def define_flags(fv: flags.FlagValues = FLAGS) -> None:
    """Defines the flags of this entry point (only when run as a program)."""
    flags.DEFINE_string("model_dir", None, "Folder of a finished run (holds metrics.json).",
                        flag_values=fv)
    flags.DEFINE_string("dataset", None, "Data set whose published numbers to show "
                        f"({', '.join(DATASETS)}; default: from model_dir/config.json).",
                        flag_values=fv)


@cli.entry_point(PROG)
def main(argv) -> int:
    """Prints the table of `--model_dir`."""
    cli.check_usage(argv, FLAGS, required=["model_dir"], folders=["model_dir"])
    try:
        print(report(FLAGS.model_dir, FLAGS.dataset))
    except (FileNotFoundError, ValueError) as e:
        raise cli.UsageError(str(e)) from e
    return 0


if __name__ == "__main__":
    define_flags()
    cli.run(main)
