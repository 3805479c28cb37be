r"""Paired gains of validation arms over their defaults: the rule that changes a default.

Each arm is paired with its default run on the same benchmark and seed. The
table gives the mean paired gain in validation MAP@R, its t (mean / standard
error over the pairs), the pairs won, and (plateau runs) the mean paired gain
on the test classes for information. Validation MAP@R is, for runs trained
to the plateau, the best evaluation on classes held out of the training
classes (`plateau.val_map@r`; never the test classes); for runs of a fixed
budget trained on a benchmark's `val/` split (`--budget=fixed`, the
30-second protocol), their final MAP@R, which that split's test side (its
own held-out training classes) gives. The rule of study/docs/sst_study.md
section 16: an arm replaces its default when its validation gain has t >= 2;
of the arms that pass, the largest gain wins.

  python study/paired_gains.py --runs=a/compare.json,b/compare.json \
      --pairs=sst_m4:sst,sst_s32:sst,pa_lr1:proxy_anchor
  python study/paired_gains.py --budget=fixed --runs=runs/val/circle/compare.json \
      --pairs=circle_m025:circle,circle_k5:circle
"""

from __future__ import annotations

import math
import statistics
import sys

import compare  # study/compare.py: arm names, reading and merging compare.json files
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_list("runs", [], "compare.json files holding the arms and their defaults.")
flags.DEFINE_list("pairs", [], "ARM:DEFAULT pairs, e.g. sst_m4:sst.")
flags.DEFINE_float("min_t", 2.0, "The t an arm's validation gain needs to replace its default.")
flags.DEFINE_enum("budget", "plateau", ["plateau", "fixed"], "The runs' budget: plateau = "
                  "trained to the validation plateau (validation MAP@R from their own "
                  "held-out classes); fixed = a fixed budget on `val/` splits (their final "
                  "MAP@R is the validation metric).")

RULE_T = 2.0


def _validation_map(run: dict, budget: str) -> float:
    return run["plateau"]["val_map@r"] if budget == "plateau" else run["after"]["map@r"]


def paired_gains(runs: list[dict], pairs: list[tuple[str, str]],
                 min_t: float = RULE_T, budget: str = "plateau") -> list[dict]:
    """Per (arm, default): the paired gains over the (benchmark, seed) cells both have.

    Args:
      runs: compare.json runs.
      pairs: (arm, default) names.
      min_t: the t a gain needs to pass.
      budget: "plateau" (validation MAP@R of the plateau record) or "fixed"
        (runs on validation splits: their final MAP@R; no test gain).

    Returns:
      [{"arm", "default", "pairs", "val_gain", "t", "won", "test_gain", "passes"}]
      in the order of `pairs`; t is nan with fewer than 2 pairs or no spread;
      test_gain is nan for `budget` "fixed".

    Raises:
      ValueError: an arm without a run paired with its default.
    """
    cells = {(compare.arm(r), r.get("benchmark", "-"), r.get("seed")): r
             for r in runs if "error" not in r and ("plateau" in r or budget == "fixed")}
    out = []
    for name, default in pairs:
        keys = [(b, s) for a, b, s in cells if a == name and (default, b, s) in cells]
        if not keys:
            raise ValueError(f"arm {name!r} has no run paired with a run of {default!r} "
                             "(same benchmark and seed).")
        val = [_validation_map(cells[(name, *k)], budget)
               - _validation_map(cells[(default, *k)], budget) for k in keys]
        test = ([cells[(name, *k)]["after"]["map@r"] - cells[(default, *k)]["after"]["map@r"]
                 for k in keys] if budget == "plateau" else [float("nan")])
        mean = statistics.fmean(val)
        spread = statistics.stdev(val) if len(val) > 1 else 0.0
        t = mean / (spread / len(val) ** 0.5) if spread > 0 else float("nan")
        out.append({"arm": name, "default": default, "pairs": len(keys), "val_gain": mean,
                    "t": t, "won": sum(d > 0 for d in val), "test_gain": statistics.fmean(test),
                    "passes": t >= min_t})
    return out


def gains_table(rows: list[dict]) -> str:
    """The Markdown table of `paired_gains`' rows."""
    lines = ["| arm | default | validation gain | t | won | test gain | replaces the default |",
             "|---|---|---|---|---|---|---|"]
    for g in rows:
        lines.append(f"| `{g['arm']}` | `{g['default']}` | {g['val_gain']:+.3f} | "
                     f"{g['t']:.1f} | {g['won']}/{g['pairs']} | "
                     f"{'-' if math.isnan(g['test_gain']) else format(g['test_gain'], '+.3f')} | "
                     f"{'yes' if g['passes'] else 'no'} |")
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    try:
        pairs = []
        for item in FLAGS.pairs:
            name, sep, default = item.partition(":")
            if not (sep and name and default):
                raise ValueError(f"--pairs: {item!r} is not ARM:DEFAULT.")
            pairs.append((name, default))
        if not FLAGS.runs or not pairs:
            raise ValueError("give --runs (compare.json files) and --pairs (ARM:DEFAULT).")
        table = gains_table(paired_gains(compare.read_runs(FLAGS.runs), pairs, FLAGS.min_t,
                                         FLAGS.budget))
    except ValueError as e:
        print(f"paired_gains.py: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(table)


if __name__ == "__main__":
    app.run(main)
