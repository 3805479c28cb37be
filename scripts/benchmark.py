"""Speed and memory benchmarks; writes BENCHMARKS.md.

Usage:
  python scripts/benchmark.py                      # all sections
  python scripts/benchmark.py --sections=losses    # only some (comma-separated)

Each section is a function returning Markdown; it is registered in SECTIONS.
Only the sections run are regenerated in BENCHMARKS.md; the others are kept.
To add a section: write `def bench_<name>(args) -> str` and add it to SECTIONS.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from sst_tf import evaluation, losses, neighbors  # noqa: E402


def machine_description() -> str:
    """One line describing the machine the figures come from."""
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f", {int(line.split()[1]) / 2**20:.0f} GiB RAM"
                break
    except OSError:
        pass
    gpus = tf.config.list_physical_devices("GPU")
    gpu = f"{len(gpus)} GPU(s)" if gpus else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores{mem}, {gpu}; Python {platform.python_version()}, "
            f"TensorFlow {tf.__version__}, NumPy {np.__version__}")


def timed(fn: Callable[[], object], repeats: int, warmup: int = 2) -> list[float]:
    """Wall-clock seconds of `repeats` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def explicit_triplets(labels: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """[T, 3] (anchor, target, imposter) index list, as the original materialised it."""
    rows = []
    for a in range(len(labels)):
        imp = np.flatnonzero(labels != labels[a])
        for t in targets[a]:
            if t >= 0:
                rows.append(np.stack([np.full_like(imp, a), np.full_like(imp, t), imp], 1))
    return np.concatenate(rows).astype(np.int32)


# ---------------------------------------------------------------- losses


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


def _rss_mib(field: str) -> float:
    """VmRSS (current) or VmHWM (peak) of this process, MiB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 2**10
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


def _reset_peak() -> None:
    """Resets VmHWM to the current RSS where the kernel allows it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


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
    cmd = [sys.executable, __file__, "--_eval_child", f"{args.eval_n},512"]
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


def bench_nmi(args) -> str:
    """k-means + NMI cost, measured at 1/10 of the SOP test split and extrapolated."""
    rng = np.random.default_rng(0)
    rows = ["| N x d | clusters | seconds |", "|---|---|---|"]
    times = {}
    for n, c in ((5924, 100), (6050, 1132)):
        emb = rng.normal(size=(n, 512)).astype(np.float32)
        labels = rng.integers(0, c, n)
        c = len(np.unique(labels))
        t0 = time.perf_counter()
        evaluation.nmi(emb, labels, seed=0)
        times[(n, c)] = time.perf_counter() - t0
        rows.append(f"| {n:,} x 512 | {c:,} | {times[(n, c)]:.1f} |")
    (n1, c1), t1 = list(times.items())[-1]
    est = t1 * (60502 / n1) * (11316 / c1)
    return "\n".join([
        "### `nmi` (scikit-learn KMeans, n_init=1, k-means++, random embeddings)", "",
        *rows, "",
        f"The cost grows as N x clusters x d per iteration, so the SOP test split "
        f"(60,502 x 512, 11,316 classes) is estimated at ~{est / 60:.0f} min on this machine "
        f"(100x the second row: an extrapolation, not a measurement). Random embeddings "
        f"need more k-means iterations than trained ones.", ""])


SECTIONS: dict[str, Callable] = {
    "losses": bench_losses,
    "nmi": bench_nmi,
}


def update_markdown(path: Path, results: dict[str, str]) -> None:
    """Replaces the blocks of the sections run; keeps the others in SECTIONS order."""
    old = path.read_text() if path.exists() else ""
    blocks = dict(re.findall(r"<!-- section: (\w+) -->\n(.*?)<!-- end section: \1 -->\n",
                             old, flags=re.S))
    blocks.update(results)
    order = list(SECTIONS) + sorted(set(blocks) - set(SECTIONS))
    parts = ["# Benchmarks\n\nWritten by `python scripts/benchmark.py [--sections=a,b]`; each "
             "section is regenerated only when run and names the machine it ran on.\n"]
    for name in order:
        if name in blocks:
            parts.append(f"<!-- section: {name} -->\n{blocks[name]}<!-- end section: {name} -->\n")
    path.write_text("\n".join(parts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated, from: {', '.join(SECTIONS)}")
    parser.add_argument("--output", default=str(ROOT / "BENCHMARKS.md"))
    parser.add_argument("--repeats", type=int, default=10, help="timed runs of the slow form")
    parser.add_argument("--eval_n", type=int, default=60000, help="rows for the eval benchmark")
    parser.add_argument("--_eval_child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._eval_child:
        n, dim = (int(v) for v in args._eval_child.split(","))
        print(json.dumps(_eval_child(n, dim, (1, 10, 100, 1000))))
        return
    names = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in names if s not in SECTIONS]
    if unknown:
        parser.error(f"--sections: unknown {unknown}; choose from {list(SECTIONS)}")
    results = {}
    for name in names:
        print(f"[benchmark] section {name} ...", flush=True)
        t0 = time.perf_counter()
        body = SECTIONS[name](args)
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        results[name] = (f"## {name}\n\n_Machine: {machine_description()}. Run {stamp}, "
                         f"{time.perf_counter() - t0:.0f} s._\n\n{body}")
        print(body, flush=True)
    update_markdown(Path(args.output), results)
    print(f"[benchmark] wrote {args.output}")


if __name__ == "__main__":
    main()
