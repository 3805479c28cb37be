"""Benchmark section `digits`: refresh modes x neighbourhood rules on the digits demo."""

from __future__ import annotations

import sys
import time

import numpy as np

from benchmarks.common import ROOT


def bench_digits(args) -> str:
    """--refresh=full|memory x --neighborhoods=original|balanced on the digits demo."""
    import dataclasses
    import tempfile

    from sst_tf import train as train_cli
    from sst_tf.trainer import Trainer

    train_cli.FLAGS([sys.argv[0], f"--flagfile={ROOT / 'configs' / 'digits.cfg'}",
                     "--model_dir=unused", "--noprogress"])
    base = train_cli.config_from_flags()
    rows = ["| refresh | neighbourhoods | R@1 | MAP@R | NMI | refresh s (sum) | train s (sum) | "
            "refresh share | wall s | coverage | fill | batches w/o triplet |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for refresh in ("full", "memory"):
        for hoods in ("original", "balanced"):
            cfg = dataclasses.replace(base, refresh=refresh, neighborhoods=hoods,
                                      model_dir=tempfile.mkdtemp(prefix="sst_digits_"))
            trainer = Trainer(cfg)
            epochs = []
            run_epoch = trainer.train_epoch

            def record(epoch, refresh_now, run_epoch=run_epoch, epochs=epochs):
                stats = run_epoch(epoch, refresh_now)
                epochs.append(stats)
                return stats

            trainer.train_epoch = record
            t0 = time.perf_counter()
            m = trainer.fit()
            wall = time.perf_counter() - t0
            keys = ("sampler/refresh_seconds", "train_seconds", "sampler/coverage",
                    "sampler/mean_fill", "sampler/empty_batch_share")
            mean = {k: float(np.mean([e[k] for e in epochs])) for k in keys}
            total = {k: float(np.sum([e[k] for e in epochs])) for k in keys}
            a = m["after"]
            refresh_s = total["sampler/refresh_seconds"]
            share = refresh_s / (refresh_s + total["train_seconds"])
            rows.append(
                f"| {refresh} | {hoods} | {a['recall@1']:.4f} | {a['map@r']:.4f} | "
                f"{a['nmi']:.4f} | {total['sampler/refresh_seconds']:.1f} | "
                f"{total['train_seconds']:.1f} | {share:.0%} | "
                f"{wall:.0f} | {mean['sampler/coverage']:.3f} | "
                f"{mean['sampler/mean_fill']:.3f} | {mean['sampler/empty_batch_share']:.3f} |")
    return "\n".join([
        f"### Digits demo: refresh and neighbourhood options ({base.epochs} epochs, refresh "
        f"every {base.refresh_every}, batch {base.batch_size}, seed {base.seed})",
        "",
        "`configs/digits.cfg` with only `--refresh` and `--neighborhoods` changed; test-split "
        "metrics after training; refresh = embedding pass (when `full`) + k-means + batch "
        "building, summed over epochs; coverage / fill / share of batches without a "
        "triplet are means over epochs (coverage counts the images of batches kept, after "
        "batches without a triplet are dropped); refresh share = refresh / (refresh + "
        "train), the within-run measure that other jobs on the machine disturb least. "
        "One seed each.",
        "",
        *rows,
        "",
    ])
