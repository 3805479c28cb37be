"""Benchmark section `losses`: the SST step (dense vs gather form) and chunked evaluation."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

import numpy as np
import tensorflow as tf

from benchmarks.common import SCRIPT, _reset_peak, _rss_mib, timed
from sst_tf import evaluation, losses, neighbors


def bench_losses(args) -> str:
    """SST step (value + gradient) dense vs gather form; chunked evaluation at 60k."""
    r = _loss_step_timings(200, 512, 5, 20, args.repeats)
    ratio = r["gather_ms"] / r["dense_ms"]
    lines = [
        "### SST loss value + gradient, B=200, d=512, k=5, 20 classes x 10",
        "",
        f"{r['triplets']:,} triplets. Both forms are `tf.function`s (no XLA) computing the "
        "loss and its gradient w.r.t. the embeddings; the gather form gets its triplet index "
        "list precomputed (not timed), as the original built it once per batch. "
        "On a machine shared with other jobs the absolute times vary between runs.",
        "",
        "| form | median ms | runs |",
        "|---|---|---|",
        f"| dense (`sst_tf.losses.sst_loss`, [B,k,B]) | {r['dense_ms']:.2f} | {r['dense_runs']} |",
        f"| explicit-triplet gather (3 x T x d rows) | {r['gather_ms']:.2f} | "
        f"{r['gather_runs']} |",
        "",
        f"**Speed-up: {ratio:.1f}x** (expectation: >= 20x). Agreement: value rel. diff "
        f"{r['value_rel_diff']:.1e}, gradient max rel. diff {r['grad_rel_diff']:.1e}.",
        "",
    ]
    cmd = [sys.executable, str(SCRIPT), "--_eval_child", f"{args.eval_n},512"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"evaluation child failed:\n{out.stderr[-3000:]}")
    e = json.loads(out.stdout.strip().splitlines()[-1])
    lines += [
        f"### `recall_at_k` + `map_at_r`, {e['n']:,} x {e['dim']} random embeddings",
        "",
        f"{e['classes']:,} classes of 2-10 items (SOP-like), ks={tuple(e['ks'])}; each "
        "call is one chunked pass (default chunk size), measured in a fresh process.",
        "",
        "| call | seconds |",
        "|---|---|",
        f"| `recall_at_k(ks={tuple(e['ks'])})` | {e['recall_s']:.1f} |",
        f"| `map_at_r` | {e['map_s']:.1f} |",
        "",
        f"Peak RSS of the process (VmHWM): {e['peak_rss_mib']:.0f} MiB, of which "
        f"{e['base_rss_mib']:.0f} MiB before the first call (TensorFlow + the "
        f"{e['n'] * e['dim'] * 4 / 2**20:.0f} MiB embeddings): the metrics added "
        f"{e['peak_rss_mib'] - e['base_rss_mib']:.0f} MiB at peak. An N x N float32 matrix "
        f"would be {e['nxn_float32_mib']:,.0f} MiB.",
        "",
    ]
    return "\n".join(lines)


def _loss_step_timings(batch: int, dim: int, k: int, classes: int, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(classes), batch // classes)
    rng.shuffle(labels)
    x_np = rng.normal(size=(batch, dim)).astype(np.float32)
    targets = neighbors.target_neighbors(x_np, labels, k)
    trip = explicit_triplets(labels, targets)
    x = tf.Variable(x_np)
    lab, tgt, idx = tf.constant(labels), tf.constant(targets), tf.constant(trip)

    @tf.function
    def dense_step():
        with tf.GradientTape() as tape:
            loss = losses.sst_loss(x, lab, tgt)
        return loss, tape.gradient(loss, x)

    @tf.function
    def gather_step():
        with tf.GradientTape() as tape:
            xa, xt, xi = (tf.gather(x, idx[:, j]) for j in range(3))
            d_at = tf.reduce_sum(tf.square(xa - xt), 1)
            d_ai = tf.reduce_sum(tf.square(xa - xi), 1)
            d_ti = tf.reduce_sum(tf.square(xt - xi), 1)
            loss = tf.reduce_mean(tf.math.softplus(d_at - (d_ai + d_ti) / 2))
        return loss, tf.convert_to_tensor(tape.gradient(loss, x))

    (ld, gd), (lg, gg) = dense_step(), gather_step()
    value_diff = abs(float(ld) - float(lg)) / abs(float(lg))
    grad_diff = float(tf.reduce_max(tf.abs(gd - gg)) / tf.reduce_max(tf.abs(gg)))

    def run(f):
        return lambda: [t.numpy() for t in f()]

    t_dense = timed(run(dense_step), repeats * 3)
    t_gather = timed(run(gather_step), repeats)
    return {
        "triplets": len(trip), "dense_ms": 1e3 * statistics.median(t_dense),
        "gather_ms": 1e3 * statistics.median(t_gather),
        "value_rel_diff": value_diff, "grad_rel_diff": grad_diff,
        "dense_runs": len(t_dense), "gather_runs": len(t_gather),
    }


def explicit_triplets(labels: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """[T, 3] (anchor, target, imposter) index list, as the original materialised it."""
    rows = []
    for a in range(len(labels)):
        imp = np.flatnonzero(labels != labels[a])
        for t in targets[a]:
            if t >= 0:
                rows.append(np.stack([np.full_like(imp, a), np.full_like(imp, t), imp], 1))
    return np.concatenate(rows).astype(np.int32)


def _eval_child(n: int, dim: int, ks: tuple[int, ...]) -> dict:
    """Runs in a fresh process: time and peak RSS of recall_at_k and map_at_r."""
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(n, dim)).astype(np.float32)
    # SOP-like classes: 2..10 items each (mean ~5).
    sizes = rng.integers(2, 11, size=n)
    labels = np.repeat(np.arange(n), sizes)[:n]
    evaluation.recall_at_k(emb[:200], labels[:200], (1,))  # warm up TF, trace the chunk fn
    _reset_peak()
    base = _rss_mib("VmRSS")
    t0 = time.perf_counter()
    rec = evaluation.recall_at_k(emb, labels, ks)
    t_rec = time.perf_counter() - t0
    after_rec = _rss_mib("VmHWM")
    t0 = time.perf_counter()
    mapr = evaluation.map_at_r(emb, labels)
    t_map = time.perf_counter() - t0
    peak = _rss_mib("VmHWM")
    return {"n": n, "dim": dim, "classes": int(len(np.unique(labels))), "ks": list(ks),
            "recall": {str(k): v for k, v in rec.items()}, "map@r": mapr,
            "recall_s": t_rec, "map_s": t_map, "base_rss_mib": base,
            "peak_rss_after_recall_mib": after_rec, "peak_rss_mib": peak,
            "nxn_float32_mib": n * n * 4 / 2**20}
