r"""Results table of a run next to the published numbers (docs/method.md#published-numbers).

  python -m sst_tf.report --model_dir=runs/cub

Reads `MODEL_DIR/metrics.json` (and `config.json` for the data set) and prints
Recall@K, NMI, MAP@R and R-Precision before and after training, in percent,
with the published Recall@1 reference points beside them. `job.sh` calls it
at the end.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags

# Published Recall@1 (%), 512-d, BN-Inception (docs/method.md#published-numbers); None: none.
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
    refs = {name: vals.get(dataset) for name, vals in REFERENCES.items()}
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
    out.append(
        "before/after: this run, before and after training. pub: published Recall@1 "
        "(docs/method.md#published-numbers; 512-d BN-Inception, where sst_tf uses InceptionV3): "
        "untrained = ImageNet-pretrained backbone without training, MS = Multi-Similarity "
        "(CVPR 2019), ProxyAnchor = Proxy-Anchor (CVPR 2020); '-' = not reported."
    )
    return "\n".join(out)


def _pct(value, scale: float = 100.0) -> str:
    if value is None:
        return "-"
    return f"{float(value) * scale:.1f}"


def report(model_dir: str, dataset: str | None = None) -> str:
    """Reads `model_dir/metrics.json` (+ `config.json`) and returns the table.

    Raises:
      FileNotFoundError: no metrics.json in `model_dir` (names the path).
    """
    path = os.path.join(model_dir, "metrics.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: has the run finished its evaluation?")
    with open(path) as f:
        metrics = json.load(f)
    if dataset is None:
        cfg = os.path.join(model_dir, "config.json")
        if os.path.isfile(cfg):
            with open(cfg) as f:
                dataset = json.load(f).get("dataset")
    return format_table(metrics, dataset or "?")


FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines the flags of this entry point (only when run as a program)."""
    flags.DEFINE_string("model_dir", None, "Folder of a finished run (holds metrics.json).")
    flags.DEFINE_string("dataset", None, "Data set (default: from model_dir/config.json).")


def main(argv):
    """Prints the table of `--model_dir`."""
    del argv
    if not FLAGS.model_dir:
        sys.exit("sst_tf.report: --model_dir is required.")
    try:
        print(report(FLAGS.model_dir, FLAGS.dataset))
    except FileNotFoundError as e:
        sys.exit(f"sst_tf.report: {e}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
