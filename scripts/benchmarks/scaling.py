"""Benchmark section `scaling`: MirroredStrategy over 2 logical CPUs vs 1 device."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

import tensorflow as tf

from benchmarks.common import SCRIPT, timed
from benchmarks.step import _batch, _trainer
from sst_tf import distribute

MEMORY_ROWS = 2048  # the cross-batch memory of section scaling


def bench_scaling(args) -> str:
    """MirroredStrategy over 2 logical CPU devices vs 1 device: same numbers, time."""
    cmd = [sys.executable, str(SCRIPT), "--_scaling_child", "1",
           f"--step_size={args.step_size}", f"--scaling_batch={args.scaling_batch}",
           f"--step_repeats={args.step_repeats}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"scaling child failed:\n{out.stderr[-3000:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return "\n".join([
        f"### MirroredStrategy, 2 logical CPU devices vs 1 device (InceptionV3 at "
        f"{r['side']}x{r['side']}, 2 batches of {r['batch']} per step)",
        "",
        "One step = one batch per replica (a neighbourhood is never split). One device "
        "computes the same two batches' gradients one after the other and averages them.",
        "",
        "| | loss | median s / step |",
        "|---|---|---|",
        f"| 1 device | {r['loss_single']:.6f} | {r['single_s']:.2f} |",
        f"| MirroredStrategy x 2 | {r['loss_mirrored']:.6f} | {r['mirrored_s']:.2f} |",
        "",
        f"Gradients (all-reduced vs averaged): max abs difference {r['grad_max_abs_diff']:.2e} "
        f"for a largest gradient entry of {r['grad_max_abs']:.2e} (relative "
        f"{r['grad_max_abs_diff'] / max(r['grad_max_abs'], 1e-30):.1e}: float32 round-off of "
        "a different summation order). Time ratio mirrored / single "
        f"{r['mirrored_s'] / r['single_s']:.2f}: both logical devices share the same "
        f"{os.cpu_count()} cores, so no speed-up is expected on CPU; the figure shows the "
        "distribution overhead. Real speed-up needs several GPUs (`scripts/gpu_check.sh`).",
        "",
        "Negatives beyond one batch on the same 2 replicas, batches and weights "
        "(docs/scaling.md#negatives-beyond-one-batch):",
        "",
        "| MirroredStrategy x 2 | median s / step | ratio to plain mirrored |",
        "|---|---|---|",
        f"| plain (each replica's own batch) | {r['mirrored_s']:.2f} | 1.00 |",
        f"| `--global_negatives` | {r['global_negatives_s']:.2f} | "
        f"{r['global_negatives_s'] / r['mirrored_s']:.2f} |",
        f"| `--memory_size={MEMORY_ROWS}` | {r['cross_batch_memory_s']:.2f} | "
        f"{r['cross_batch_memory_s'] / r['mirrored_s']:.2f} |",
        "",
    ])


def _scaling_child(args) -> dict:
    """In a fresh process with 2 logical CPUs: 1 device vs MirroredStrategy(2)."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    side, batch = args.step_size, args.scaling_batch
    classes = max(2, batch // 4)
    single = _trainer(side, batch, classes=classes)
    mirrored = _trainer(side, batch, classes=classes, split=single.dataset.train,
                        strategy=distribute.make_strategy("mirrored", ["CPU:0", "CPU:1"]))
    for a, b in zip(mirrored.model.weights, single.model.weights, strict=True):
        a.assign(b.numpy())
    b1, b2 = _batch(single, batch, classes, seed=1), _batch(single, batch, classes, seed=2)
    # Gradients: all-reduced replica gradients vs the mean of per-batch gradients.

    @tf.function
    def single_grads():
        l1, g1, _ = single.step.compute_gradients(*b1)
        l2, g2, _ = single.step.compute_gradients(*b2)
        return (l1 + l2) / 2, [(a + b) / 2 for a, b in zip(g1, g2, strict=True)]

    stacked = tuple(tf.stack([x, y]) for x, y in zip(b1, b2, strict=True))
    ds = distribute.distribute_batches(
        mirrored.strategy, tf.data.Dataset.from_tensor_slices(stacked).repeat())
    it = iter(ds)
    batch_m = next(it)

    @tf.function
    def mirrored_grads(batch):
        loss, grads, _ = mirrored.strategy.run(mirrored.step.compute_gradients, args=batch)
        red = mirrored.strategy.reduce
        return (red(tf.distribute.ReduceOp.MEAN, loss, axis=None),
                [red(tf.distribute.ReduceOp.SUM, g, axis=None) for g in grads])

    ls, gs = single_grads()
    lm, gm = mirrored_grads(batch_m)
    scale = max(float(tf.reduce_max(tf.abs(g))) for g in gs)
    grad_diff = max(float(tf.reduce_max(tf.abs(a - b))) for a, b in zip(gs, gm, strict=True))

    @tf.function
    def single_step():
        l1, g1, _ = single.step.compute_gradients(*b1)
        l2, g2, _ = single.step.compute_gradients(*b2)
        single.step.apply_gradients([(a + b) / 2 for a, b in zip(g1, g2, strict=True)])
        return (l1 + l2) / 2

    t_single = timed(lambda: float(single_step()), args.step_repeats)
    t_mirror = timed(lambda: float(mirrored.step_fn(next(it))), args.step_repeats)
    # Negatives beyond one batch (docs/scaling.md), same strategy, batches and weights:
    # every replica's loss on the global batch; a cross-batch memory of 2,048 rows.
    options = {"global_negatives": {"global_negatives": True},
               "cross_batch_memory": {"memory_size": MEMORY_ROWS}}
    seconds = {}
    for name, kw in options.items():
        other = _trainer(side, batch, classes=classes, split=single.dataset.train,
                         strategy=mirrored.strategy, **kw)
        for a, b in zip(other.model.weights, single.model.weights, strict=True):
            a.assign(b.numpy())
        seconds[name] = statistics.median(
            timed(lambda t=other: float(t.step_fn(next(it))), args.step_repeats))
    return {"loss_single": float(ls), "loss_mirrored": float(lm), "grad_max_abs_diff": grad_diff,
            "grad_max_abs": scale, "single_s": statistics.median(t_single),
            "mirrored_s": statistics.median(t_mirror), "batch": batch, "side": side,
            **{f"{name}_s": v for name, v in seconds.items()}}
