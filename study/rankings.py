r"""Two budgets, two rankings: the losses' ranks on each benchmark side by side.

Reads the runs of a short budget (the 30-second suite) and of a long one (the
plateau, study/long_table.sh), keeps the losses and benchmarks both have, and
writes one Markdown table: each loss's rank on each benchmark at either
budget (1 = the best mean MAP@R of the runs that passed; a loss with no
passed run shares the last rank), its mean rank, and Kendall's tau between
the two orders of every benchmark.

  python study/rankings.py \
      --short=study/docs/suite_runs/2026-12-05_suite_30s.json,...  \
      --long=study/docs/suite_runs/2026-12-07_long/seed0/cross_script/compare.json,... \
      --output=runs/rankings.md

Within `--short` (and within `--long`) a later file replaces the runs of
every (loss, benchmark, seed) it holds: a suite rerun of one loss in new
defaults replaces that loss's older runs; files of other seeds add up.
A loss whose settings differ between the two budgets on a benchmark both
have (its defaults changed between the two tables: a scale, a learning rate)
is left out of the table and named under it.
"""

from __future__ import annotations

import itertools
import math
import statistics
import sys

import compare  # study/compare.py: summaries of the runs (arm, failure, means)
from absl import app, flags

from sst_tf.outputs import write_text_atomic

FLAGS = flags.FLAGS
flags.DEFINE_list("short", [], "compare.json files of the short budget, oldest first.")
flags.DEFINE_list("long", [], "compare.json files of the long budget, oldest first.")
flags.DEFINE_string("short_name", "30 s", "The short budget's column heading.")
flags.DEFINE_string("long_name", "plateau", "The long budget's column heading.")
flags.DEFINE_string("output", None, "Also write the table to this file.")


def benchmark_ranks(runs: list[dict], arms: list[str]) -> dict[str, float]:
    """Rank of each arm on one benchmark's runs, by mean MAP@R of its passed runs.

    Ties share the better rank; arms without a passed run share the last rank.
    """
    means = {}
    for g in compare.summarize([r for r in runs if compare.arm(r) in arms]):
        means[g["loss"]] = compare._mean_final(g)
    passed = sorted((a for a in arms if not math.isnan(means.get(a, math.nan))),
                    key=lambda a: -means[a])
    ranks = {}
    for a in passed:
        ranks[a] = float(1 + sum(means[b] > means[a] for b in passed))
    for a in arms:
        ranks.setdefault(a, float(len(arms)))
    return ranks


# The settings of a run (compare.py's `settings`) that must agree between the budgets.
COMPARED_SETTINGS = ("normalize", "sampler", "margin", "loss_lr_multiplier",
                     "members_per_class", "samples_per_class")


def settings_differences(short: list[dict], long: list[dict]) -> dict[str, list[str]]:
    """The arms whose settings differ between the budgets on a benchmark both have.

    Compares `COMPARED_SETTINGS` and the loss parameters both runs record (a
    parameter added to the registry after a run was made is not compared).

    Returns:
      {arm: sorted names of what differs ("params.scale", "loss_lr_multiplier")}.
    """
    def settings_of(runs):
        return {(compare.arm(r), r.get("benchmark")): r["settings"]
                for r in runs if "settings" in r}

    mine, theirs = settings_of(short), settings_of(long)
    differ: dict[str, set[str]] = {}
    for key in sorted(set(mine) & set(theirs), key=str):
        a, b = mine[key], theirs[key]
        names = {f for f in COMPARED_SETTINGS if a.get(f) != b.get(f)}
        pa, pb = a.get("params", {}), b.get("params", {})
        names |= {f"params.{k}" for k in set(pa) & set(pb) if pa[k] != pb[k]}
        if names:
            differ.setdefault(key[0], set()).update(names)
    return {arm: sorted(names) for arm, names in differ.items()}


def kendall_tau(x: dict[str, float], y: dict[str, float]) -> float:
    """Kendall's tau-b between two rankings of the same keys (1 = same order)."""
    concordant = discordant = ties_x = ties_y = 0
    for a, b in itertools.combinations(sorted(x), 2):
        dx, dy = x[a] - x[b], y[a] - y[b]
        if dx == 0 and dy == 0:
            continue
        if dx == 0:
            ties_x += 1
        elif dy == 0:
            ties_y += 1
        elif dx * dy > 0:
            concordant += 1
        else:
            discordant += 1
    n = concordant + discordant
    denominator = math.sqrt((n + ties_x) * (n + ties_y))
    return (concordant - discordant) / denominator if denominator else math.nan


def ranking_table(short: list[dict], long: list[dict], short_name: str = "30 s",
                  long_name: str = "plateau") -> str:
    """The Markdown table of both rankings over the losses and benchmarks both budgets have.

    Raises:
      ValueError: the two budgets share no loss or no benchmark.
    """
    def arms_of(runs):
        return list(dict.fromkeys(compare.arm(r) for r in runs))

    differ = settings_differences(short, long)
    shared = [a for a in arms_of(long) if a in set(arms_of(short))]
    arms = [a for a in shared if a not in differ]
    short_by, long_by = compare.by_benchmark(short), compare.by_benchmark(long)
    benches = sorted(set(short_by) & set(long_by))
    if len(arms) < 2 or not benches:
        raise ValueError(f"the two budgets share {len(arms)} losses and {len(benches)} "
                         "benchmarks: at least 2 losses and 1 benchmark are needed.")
    ranked = {(budget, b): benchmark_ranks(by[b], arms)
              for budget, by in (("short", short_by), ("long", long_by)) for b in benches}
    head = (["loss"] + [f"{short_name}: {b}" for b in benches] + [f"{short_name}: mean"]
            + [f"{long_name}: {b}" for b in benches] + [f"{long_name}: mean"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    means = {budget: {a: statistics.fmean(ranked[(budget, b)][a] for b in benches)
                      for a in arms} for budget in ("short", "long")}
    for a in sorted(arms, key=lambda a: (means["long"][a], means["short"][a])):
        cells = [a]
        for budget in ("short", "long"):
            cells += [f"{ranked[(budget, b)][a]:g}" for b in benches]
            cells.append(f"**{means[budget][a]:.2f}**")
        lines.append("| " + " | ".join(cells) + " |")
    taus = ", ".join(f"{b} {kendall_tau(ranked[('short', b)], ranked[('long', b)]):+.2f}"
                     for b in benches)
    overall = kendall_tau(means["short"], means["long"])
    left_out = "; ".join(f"{a} ({', '.join(differ[a])})" for a in shared if a in differ)
    return ("\n".join(lines) + f"\n\nRanks among the {len(arms)} losses both budgets ran "
            "in the same settings (1 = best mean MAP@R on the test classes). Kendall's tau "
            f"between the two orders: {taus}; of the mean ranks {overall:+.2f} (+1 = the "
            "same order, -1 = reversed)."
            + (f" Left out, their settings differ between the budgets: {left_out}."
               if left_out else "") + "\n")


def main(argv):
    del argv
    if not FLAGS.short or not FLAGS.long:
        print("rankings.py: error: give --short and --long (compare.json files).",
              file=sys.stderr)
        sys.exit(2)
    try:
        table = ranking_table(compare.read_runs(FLAGS.short), compare.read_runs(FLAGS.long),
                              FLAGS.short_name, FLAGS.long_name)
    except ValueError as e:
        print(f"rankings.py: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(table)
    if FLAGS.output:
        write_text_atomic(FLAGS.output, table)


if __name__ == "__main__":
    app.run(main)
