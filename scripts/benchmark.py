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

from sst_tf import cli  # noqa: E402

cli.quiet_tensorflow()  # before TensorFlow's start-up lines reach the terminal

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from sklearn.cluster import KMeans  # noqa: E402
from sklearn.metrics import normalized_mutual_info_score  # noqa: E402

from sst_tf import distribute, evaluation, losses, neighbors  # noqa: E402
from sst_tf import kmeans as kmeans_lib  # noqa: E402


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


def _labelled_embeddings(n: int, classes: int, dim: int = 512, noise: float = 2.0,
                         seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian classes: every class >= 2 points, the rest spread at random (SOP-like sizes).

    Class centres ~ N(0, I/d), points = centre + noise x N(0, I/d); noise 2.0
    puts scikit-learn's k-means NMI near 0.9 at ~6 points per class.
    """
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.repeat(np.arange(classes), 2),
                        rng.integers(0, classes, n - 2 * classes)])
    rng.shuffle(y)
    centres = rng.normal(size=(classes, dim)) / np.sqrt(dim)
    x = centres[y] + noise * rng.normal(size=(n, dim)) / np.sqrt(dim)
    return x.astype(np.float32), y


def _nmi_run(method: str, emb: np.ndarray, labels: np.ndarray) -> dict:
    """One k-means + NMI exactly as `evaluation.nmi(emb, labels, kmeans=method)` runs it."""
    k = len(np.unique(labels))
    t0, c0, load0 = time.perf_counter(), time.process_time(), os.getloadavg()[0]
    if method == "tf":
        r = kmeans_lib.tf_kmeans(emb, k, seed=0, max_iter=300)
        pred, inertia, n_iter = r.labels, r.inertia, r.n_iter
    else:
        km = KMeans(n_clusters=k, random_state=0, n_init=1, max_iter=300).fit(emb)
        pred, inertia, n_iter = km.labels_, km.inertia_, km.n_iter_
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    load = (load0 + os.getloadavg()[0]) / 2
    return {"seconds": seconds, "cpu": cpu, "load": load, "inertia": float(inertia),
            "n_iter": int(n_iter),
            "nmi": float(normalized_mutual_info_score(labels, pred, average_method="arithmetic"))}


def _warm_tf_kmeans() -> None:
    """Traces the TF k-means functions on two small shapes (not timed)."""
    for n in (300, 400):
        emb, labels = _labelled_embeddings(n, 50, seed=1)
        kmeans_lib.tf_kmeans(emb, 50, max_iter=2)


def _command(args) -> str:
    return "`" + " ".join([f"nice -n {os.nice(0)}" if os.nice(0) else "", "python",
                           "scripts/benchmark.py", *sys.argv[1:]]).strip() + "`"


def bench_nmi(args) -> str:
    """NMI's k-means: TensorFlow vs scikit-learn, same clustered embeddings."""
    _warm_tf_kmeans()
    rows = ["| N x d | classes | k-means | seconds | TF / sklearn time | NMI | inertia | "
            "iterations | CPU s | load avg |", "|---|---|---|---|---|---|---|---|---|---|"]
    for size in args.nmi_sizes.split(","):
        n, classes = (int(v) for v in size.split("x"))
        emb, labels = _labelled_embeddings(n, classes)
        res = {m: _nmi_run(m, emb, labels) for m in ("sklearn", "tf")}
        for m, r in res.items():
            ratio = "1 (baseline)" if m == "sklearn" else \
                f"**{r['seconds'] / res['sklearn']['seconds']:.2f}**"
            rows.append(f"| {n:,} x 512 | {classes:,} | {m} | {r['seconds']:.1f} | {ratio} | "
                        f"{r['nmi']:.4f} | {r['inertia']:.6g} | {r['n_iter']} | "
                        f"{r['cpu']:.0f} | {r['load']:.1f} |")
    return "\n".join([
        "### `nmi`: k-means into one cluster per class, TF (default) vs scikit-learn", "",
        "Same embeddings for both: Gaussian classes in 512-d (class centres N(0, I/d), "
        "noise 2.0 x N(0, I/d), every class >= 2 points, the rest spread at random), so NMI "
        "is near 0.9, not 1. Both: greedy k-means++ (2 + log k candidates per centre), one "
        "init, seed 0, at most 300 Lloyd iterations, tol 1e-4, float32 input; each call "
        "is what `evaluation.nmi(..., kmeans=...)` runs. TF functions traced beforehand "
        "(not timed). One run each. CPU s = process CPU time; load avg = 1-minute load "
        "average during the call. On a machine oversubscribed by other jobs scikit-learn's "
        "OpenMP threads slow down far more than TensorFlow's, so the time ratio is only "
        "comparable between runs at similar load.", "",
        f"Command: {_command(args)}", "",
        *rows, ""])


# The k-means of section nmi_sop: "tf" is the built-in (`evaluation.nmi`'s
# default), the baseline of the ratios; the others are faiss.
NMI_SOP_VARIANTS = ("tf", "faiss (defaults)", "faiss (its k-means++)", "faiss (our k-means++)")


def _faiss_kmeans(emb: np.ndarray, k: int, seed: int, variant: str, max_iter: int = 300):
    """The faiss k-means of `variant`: (labels, inertia, iterations incl. the first pass).

    "faiss (defaults)": `faiss.Kmeans(d, k)` as shipped (random init, niter 25,
    nredo 1, at most 256 points per centre); "faiss (its k-means++)": the same
    with faiss' k-means++ init; "faiss (our k-means++)": `tf_kmeans`' seeding
    (`kmeans_plusplus`), then faiss' Lloyd iterations on every point until its
    objective stops decreasing (at most `max_iter`).
    """
    import faiss

    emb = np.ascontiguousarray(emb, dtype=np.float32)
    n, d = emb.shape
    if variant == "faiss (our k-means++)":
        centres, _ = kmeans_lib.kmeans_plusplus(emb, k, seed=seed)
        cp = faiss.ClusteringParameters()
        cp.niter, cp.seed = max_iter, seed + 1
        cp.max_points_per_centroid = -(-n // k)  # no subsampling
        cp.min_points_per_centroid = 1  # (only silences faiss' small-N warning)
        clus = faiss.Clustering(d, k, cp)
        faiss.copy_array_to_vector(centres.ravel(), clus.centroids)
        index = faiss.IndexFlatL2(d)
        clus.train(emb, index)
        n_iter = clus.iteration_stats.size()
    else:
        km = faiss.Kmeans(d, k, seed=seed + 1)  # faiss' default seed is 1234
        if variant == "faiss (its k-means++)":
            km.cp.init_method = faiss.ClusteringInitMethod_KMEANS_PLUS_PLUS
        km.train(emb)
        index, n_iter = km.index, len(km.obj)
    dist, a = index.search(emb, 1)
    return a[:, 0], float(np.maximum(dist, 0).sum()), int(n_iter)


def _nmi_sop_run(variant: str, emb: np.ndarray, labels: np.ndarray, seed: int) -> dict:
    """One k-means + NMI of section nmi_sop (time includes the seeding)."""
    k = len(np.unique(labels))
    t0, c0, load0 = time.perf_counter(), time.process_time(), os.getloadavg()[0]
    if variant == "tf":
        r = kmeans_lib.tf_kmeans(emb, k, seed=seed, max_iter=300)
        pred, inertia, n_iter = r.labels, r.inertia, r.n_iter
    else:
        pred, inertia, n_iter = _faiss_kmeans(emb, k, seed, variant)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    load = (load0 + os.getloadavg()[0]) / 2
    return {"seconds": seconds, "cpu": cpu, "load": load, "inertia": float(inertia),
            "n_iter": int(n_iter),
            "nmi": float(normalized_mutual_info_score(labels, pred, average_method="arithmetic"))}


def _refresh_sized_rows(n: int, k: int) -> list[str]:
    """The refresh's k-means (N / 200 clusters) at the sampler's bound of 100 iterations."""
    x = _clustered_embeddings(n, 512)
    rows, base = [], None
    for variant in ("tf", "faiss (defaults)", "faiss (our k-means++)"):
        t0 = time.perf_counter()
        if variant == "tf":
            r = kmeans_lib.tf_kmeans(x, k, seed=0, max_iter=100)
            inertia, n_iter = r.inertia, r.n_iter
        else:
            _, inertia, n_iter = _faiss_kmeans(x, k, 0, variant, max_iter=100)
        seconds = time.perf_counter() - t0
        base = base or seconds
        ratio = "1 (baseline)" if variant == "tf" else f"**{seconds / base:.2f}**"
        rows.append(f"| {n:,} | {k} | {variant} | {seconds:.1f} | {ratio} | {inertia:.6g} | "
                    f"{n_iter} |")
    return rows


def _nmi_sop_rows(n: int, classes: int, seeds: list[int]) -> tuple[list[str], dict]:
    """Table rows (mean and spread over seeds) and {variant: [runs]}."""
    emb, labels = _labelled_embeddings(n, classes)
    runs = {v: [_nmi_sop_run(v, emb, labels, s) for s in seeds] for v in NMI_SOP_VARIANTS}
    base = runs["tf"]
    base_s = statistics.mean(r["seconds"] for r in base)
    base_nmi = statistics.mean(r["nmi"] for r in base)
    rows = []
    for v, rs in runs.items():
        secs = [r["seconds"] for r in rs]
        nmis = [r["nmi"] for r in rs]
        spread = f" ({min(nmis):.4f}-{max(nmis):.4f})" if len(rs) > 1 else ""
        ratio = "1 (baseline)" if v == "tf" else f"**{statistics.mean(secs) / base_s:.2f}**"
        rows.append(
            f"| {n:,} | {classes:,} | {v} | {len(rs)} | {statistics.mean(secs):.1f} | {ratio} | "
            f"{statistics.mean(nmis):.4f}{spread} | {statistics.mean(nmis) - base_nmi:+.4f} | "
            f"{statistics.mean(r['inertia'] for r in rs):.6g} | "
            f"{'/'.join(str(r['n_iter']) for r in rs)} | "
            f"{statistics.mean(r['cpu'] for r in rs):.0f} | "
            f"{statistics.mean(r['load'] for r in rs):.1f} |")
    return rows, runs


def bench_nmi_sop(args) -> str:
    """NMI's k-means at the SOP test split's size: the built-in TF k-means vs faiss."""
    import faiss

    _warm_tf_kmeans()
    kmeans_lib.tf_kmeans(np.ones((1000, 512), np.float32) + np.arange(1000)[:, None], 5,
                         max_iter=2)  # the refresh table's shapes
    header = ["| N | clusters | k-means | seeds | seconds (mean) | time / tf | NMI (mean, range) "
              "| NMI - tf | inertia | iterations | CPU s | load avg |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    rows = []
    for size in [s for s in args.nmi_sop_spread.split(",") if s]:
        n, classes = (int(v) for v in size.split("x"))
        rows += _nmi_sop_rows(n, classes, list(range(args.nmi_sop_seeds)))[0]
    n, classes = args.nmi_sop_n, args.nmi_sop_classes
    rows += _nmi_sop_rows(n, classes, [0])[0]
    return "\n".join([
        f"### `nmi` at {n:,} x 512, {classes:,} classes (SOP test split: 60,502 / 11,316): "
        "built-in TF k-means vs faiss",
        "",
        "Embeddings as in section `nmi` (Gaussian classes, noise 2.0). Same embeddings, same "
        "process, one after another, for: `tf` = `sst_tf.kmeans.tf_kmeans` (greedy "
        "k-means++, 2 + log k candidates per centre, Lloyd to convergence: at most 300 "
        "iterations, tol 1e-4), the baseline; `faiss (defaults)` = `faiss.Kmeans(d, k)` as "
        "shipped (random initial centres, niter 25, nredo 1, max_points_per_centroid 256: "
        "no subsampling happens here, N / k is about 5); `faiss (its k-means++)` = the same "
        "with faiss' own k-means++ init (`cp.init_method`); `faiss (our k-means++)` = "
        "`tf_kmeans`' seeding (`sst_tf.kmeans.kmeans_plusplus`), then faiss' Lloyd "
        "iterations on all points until its objective stops decreasing (at most 300). "
        "faiss' iteration count includes its first assignment pass. Seconds are wall time "
        "including the seeding; NMI against the "
        "labels as `evaluation.nmi` computes it. The smaller size runs k-means seeds "
        f"0..{args.nmi_sop_seeds - 1} (mean, NMI range = the seed spread), the SOP size seed "
        f"0 once. faiss {faiss.__version__}, {faiss.omp_get_max_threads()} OpenMP thread(s); "
        "CPU s = process CPU time; load avg = 1-minute load average during the call.", "",
        f"Command: {_command(args)}", "",
        *header, *rows, "",
        f"The refresh's k-means in the same run ({args.kmeans_n:,} x 512 SOP-like "
        f"embeddings of section `kmeans`, N / 200 = {args.kmeans_n // 200} clusters, at most "
        "100 iterations as the local sampler runs it, seed 0, one run each):", "",
        "| N | clusters | k-means | seconds | time / tf | inertia | iterations |",
        "|---|---|---|---|---|---|---|",
        *_refresh_sized_rows(args.kmeans_n, args.kmeans_n // 200), "",
        f"For scale: an n x k float32 distance matrix would be {n * classes * 4 / 2**30:.1f} "
        "GiB; `tf_kmeans` chunks keep each block near 128 MiB. scikit-learn was not run at "
        "this size (section `nmi` has its ratio at smaller sizes).", ""])


# ---------------------------------------------------------------- k-means


def _clustered_embeddings(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """SOP-like embeddings: n / 5 class centres, ~5 noisy points each."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(1, n // 5), dim)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + 0.5 * rng.normal(size=(n, dim))
    return x.astype(np.float32)


# Assumed GPU embedding-pass throughput (no GPU measured here; see bench_kmeans).
ASSUMED_GPU_IMAGES_PER_S = 3000.0


def bench_kmeans(args) -> str:
    """Refresh k-means on SOP-sized embeddings: scikit-learn vs TensorFlow."""
    from sst_tf import kmeans as kmeans_lib

    n, dim, batch = args.kmeans_n, 512, 200
    k = n // batch
    x = _clustered_embeddings(n, dim)
    iters = args.kmeans_iters
    rows = [f"| implementation | device | seconds (init + {iters} iterations) | s / iteration | "
            "inertia |", "|---|---|---|---|---|"]
    res = {}
    kmeans_lib.tf_kmeans(x[:1000], 5, max_iter=2)  # trace the TF functions (not timed)
    for method in ("tf", "sklearn"):
        times = []
        for rep in range(args.kmeans_repeats):
            t0 = time.perf_counter()
            r = kmeans_lib.kmeans(x, k, method=method, seed=rep, max_iter=iters, tol=0.0)
            times.append(time.perf_counter() - t0)
        res[method] = (statistics.median(times), r)
        dev = "GPU" if method == "tf" and tf.config.list_physical_devices("GPU") else "CPU"
        rows.append(f"| {method} | {dev} | {res[method][0]:.1f} | "
                    f"{res[method][0] / max(r.n_iter, 1):.2f} | {r.inertia:.4g} |")
    t_sk, t_tf = res["sklearn"][0], res["tf"][0]
    gpu_pass = n / ASSUMED_GPU_IMAGES_PER_S
    return "\n".join([
        f"### k-means of one refresh: {n:,} x {dim} embeddings, {k} clusters (N / {batch})",
        "",
        f"Synthetic SOP-like embeddings ({n // 5:,} centres, ~5 noisy points each). Both run "
        f"k-means++ (one init) then exactly {iters} Lloyd iterations (tol=0); medians of "
        f"{args.kmeans_repeats} run(s). scikit-learn gets float64, TF float32.",
        "",
        *rows,
        "",
        f"TF / scikit-learn time on this machine: {t_tf / t_sk:.2f}.",
        "",
        f"**Against the embedding pass on a GPU.** No GPU was available for this run, so the "
        f"pass is an assumption, not a measurement: InceptionV3 at 224 in inference, "
        f"~{ASSUMED_GPU_IMAGES_PER_S:,.0f} images/s on one H100/H200 (a conservative reading "
        f"of public inference figures, usually bounded by JPEG decoding on the host), gives "
        f"~{gpu_pass:.0f} s for {n:,} images. scikit-learn's k-means here takes "
        f"{t_sk:.0f} s for {iters} iterations ({t_sk / gpu_pass:.1f}x that pass; the sampler "
        f"allows up to 100 iterations): "
        + ("the CPU k-means would dominate a refresh on a GPU machine, hence `--kmeans=tf`, "
           "which runs on the accelerator when there is one. "
           if t_sk > gpu_pass else "the CPU k-means would not dominate the refresh. ")
        + "`scripts/gpu_check.sh` measures the pass and the TF k-means on a GPU.",
        "",
    ])


# ---------------------------------------------------------------- training-side sections


def _synthetic_split(n: int, classes: int, side: int, seed: int = 0):
    """In-memory split of smooth random images (uint8) with balanced labels."""
    from sst_tf import data as data_lib

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(n, 8, 8, 3)).astype(np.float32)
    images = tf.image.resize(small, [side, side]).numpy().clip(0, 255).astype(np.uint8)
    labels = np.arange(n) % classes
    return data_lib.Split(labels=labels.astype(np.int64),
                          class_names=tuple(str(c) for c in range(classes)), images=images)


def _trainer(side: int, batch: int, n: int | None = None, classes: int = 20,
             backbone: str = "inception_v3", embedding_dim: int = 512, strategy=None,
             split=None, **kw):
    import tempfile

    from sst_tf import data as data_lib
    from sst_tf.trainer import TrainConfig, Trainer

    split = split or _synthetic_split(n or batch, classes, side)
    ds = data_lib.Dataset("synthetic", split, split)
    cfg = TrainConfig(model_dir=tempfile.mkdtemp(prefix="sst_bench_"), backbone=backbone,
                      pretrained=False, embedding_dim=embedding_dim, image_size=side,
                      resize_size=side, random_flip=False, batch_size=batch, progress=False,
                      deterministic=False, **kw)
    return Trainer(cfg, dataset=ds, strategy=strategy)


def _batch(trainer, batch: int, classes: int, k: int = 5, seed: int = 0):
    """A (images, labels, targets, mask) batch with a real target table."""
    rng = np.random.default_rng(seed)
    side = trainer.config.image_size
    images = tf.constant(rng.uniform(0, 255, size=(batch, side, side, 3)).astype(np.float32))
    labels = np.arange(batch) % classes
    emb = rng.normal(size=(batch, trainer.config.embedding_dim)).astype(np.float32)
    targets = neighbors.target_neighbors(emb, labels, k).astype(np.int32)
    return (images, tf.constant(labels, tf.int32), tf.constant(targets),
            tf.ones([batch], tf.bool))


def bench_step(args) -> str:
    """Train step: SST + target table vs a trivial loss, same backbone and batch."""
    side, batch, classes = args.step_size, args.step_batch, 20
    t = _trainer(side, batch, classes=classes)
    b = _batch(t, batch, classes)
    sst_fn = t.step.loss_fn

    def trivial(e, y, tg, m):  # the cheapest loss that still back-propagates
        return tf.reduce_mean(tf.square(e))

    fns = {}
    for name, loss in (("sst", sst_fn), ("trivial", trivial)):
        t.step.loss_fn = loss  # traced below, with this loss
        fns[name] = tf.function(distribute.cross_replica_step(t.strategy, t.step))
        fns[name](b)  # trace
        fns[name](b)
    times = {"sst": [], "trivial": []}
    cpu = {"sst": [], "trivial": []}
    for _ in range(args.step_repeats):  # interleaved: both see the same machine load
        for name, fn in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            float(fn(b))
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    ratio = med["sst"] / med["trivial"]
    ratio_cpu = med_cpu["sst"] / med_cpu["trivial"]
    # The loss alone (value + gradient w.r.t. the embeddings), for scale.
    e = tf.Variable(tf.random.normal([batch, 512]))

    @tf.function
    def loss_only():
        with tf.GradientTape() as tape:
            v = sst_fn(e, b[1], b[2], b[3])
        return tape.gradient(v, e)

    loss_ms = 1e3 * statistics.median(timed(lambda: loss_only().numpy(), 10))
    tt0 = time.perf_counter()
    for _ in range(10):
        neighbors.target_neighbors(np.random.normal(size=(batch, 512)).astype(np.float32),
                                   np.arange(batch) % classes, 5)
    table_ms = 1e3 * (time.perf_counter() - tt0) / 10
    gpu = bool(tf.config.list_physical_devices("GPU"))
    return "\n".join([
        f"### Train step overhead: InceptionV3 (random init) at {side}x{side}, batch {batch}, "
        f"{classes} classes x {batch // classes}, d=512, k=5",
        "",
        "Both variants run the trainer's own step (`distribute.cross_replica_step` of "
        "`step.TrainStep`: forward, loss, gradients, two Adam optimizers with the head "
        "multiplier, weight decay) on the same batch; only the loss differs. Runs alternate "
        f"between the two; medians of {args.step_repeats} each"
        + ("" if gpu else f" (CPU: input {side}x{side} instead of 224 to keep the run short)")
        + ".",
        "",
        "| loss | median wall s / step | median CPU s / step | images/s (wall) |",
        "|---|---|---|---|",
        f"| SST with target table | {med['sst']:.3f} | {med_cpu['sst']:.2f} | "
        f"{batch / med['sst']:.0f} |",
        f"| trivial (mean squared embedding) | {med['trivial']:.3f} | "
        f"{med_cpu['trivial']:.2f} | {batch / med['trivial']:.0f} |",
        "",
        f"**Overhead ratio SST / trivial: {ratio:.3f} (wall), {ratio_cpu:.3f} (process CPU "
        f"time)** (target: <= 1.05). The CPU-time ratio is the steadier one on a machine "
        f"shared with other jobs. Directly: the SST loss value + gradient w.r.t. the "
        f"embeddings alone takes {loss_ms:.1f} ms, {loss_ms / 1e3 / med['trivial']:.1%} of a "
        f"step, i.e. a ratio of {1 + loss_ms / 1e3 / med['trivial']:.3f}. The target table of "
        f"one batch (NumPy, built by the sampler at refresh time, not in the step) takes "
        f"{table_ms:.1f} ms.",
        "",
    ])


def _pass_and_epoch(n: int, classes: int, args) -> dict:
    """Embedding pass and training epoch times per image with the cheap CPU model."""
    side, batch = args.refresh_size, 200
    sample = min(n, args.refresh_sample)
    t = _trainer(side, batch, n=sample, classes=max(2, classes * sample // n),
                 backbone=args.refresh_backbone, embedding_dim=512, sampler="random")
    t.embed(t.dataset.train)  # trace
    t.train_epoch(0, refresh=True)  # trace
    embed, train = [], []
    for epoch in range(1, 3):
        t0 = time.perf_counter()
        t.embed(t.dataset.train)
        embed.append((time.perf_counter() - t0) / sample)
        stats = t.train_epoch(epoch, refresh=False)  # tf.data pipeline + steps
        train.append(stats["train_seconds"] / sample)
    return {"embed": min(embed), "train": min(train)}


def _kmeans_and_build(n: int, classes: int, args, kmeans_method: str) -> dict:
    """k-means + batch building (targets included) at the real size, d = 512."""
    from sst_tf import sampling

    emb = _clustered_embeddings(n, 512)
    labels = np.arange(n) % classes
    np.random.default_rng(0).shuffle(labels)
    s = sampling.LocalSampler(labels, 200, num_targets=5, seed=0,
                              kmeans_max_iter=args.kmeans_iters, kmeans_method=kmeans_method)
    t0 = time.perf_counter()
    s.refresh(emb, 0)
    kmeans_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    plan = s.plan(0)
    return {"kmeans_s": kmeans_s, "build_s": time.perf_counter() - t0,
            "images": int(plan.mask.sum())}


def bench_refresh(args) -> str:
    """Embedding pass + k-means + batch building as a share of one epoch."""
    from sst_tf import kmeans as kmeans_lib

    kmeans_lib.tf_kmeans(np.zeros((300, 512), np.float32) + np.arange(300)[:, None], 3,
                         max_iter=2)  # trace the TF k-means (not timed)
    rows = ["| data | N | k-means | embed pass s | k-means s | batches + targets s | "
            "train epoch s | refresh share |", "|---|---|---|---|---|---|---|---|"]
    for name, n, classes in (("CUB-sized", 5864, 100), ("SOP-sized", 59551, 11318)):
        n, classes = int(n * args.refresh_scale), max(2, int(classes * args.refresh_scale))
        per_image = _pass_and_epoch(n, classes, args)
        for method in args.refresh_kmeans.split(","):
            c = _kmeans_and_build(n, classes, args, method)
            embed_s, train_s = per_image["embed"] * n, per_image["train"] * c["images"]
            refresh = embed_s + c["kmeans_s"] + c["build_s"]
            share = refresh / (refresh + train_s)
            rows.append(f"| {name} | {n:,} | {method} | {embed_s:.1f} | {c['kmeans_s']:.1f} "
                        f"| {c['build_s']:.1f} | {train_s:.1f} | {share:.0%} |")
    return "\n".join([
        "### Refresh cost per epoch (embedding pass + k-means + batch building)",
        "",
        f"CPU stand-in for the GPU model: `{args.refresh_backbone}` (random init, d=512) at "
        f"{args.refresh_size}x{args.refresh_size}, batch 200. The embedding pass and the "
        f"training epoch (tf.data pipeline + steps, `Trainer.train_epoch`) are timed on "
        f"{args.refresh_sample} in-memory images (best of 2) and scaled linearly to N "
        "(training: the images in the epoch's plan, original neighbourhoods). k-means "
        f"(N / 200 clusters, at most {args.kmeans_iters} iterations) and batch building (with "
        "target tables) run at the real size on clustered synthetic 512-d embeddings. "
        "The shares depend on the model: with InceptionV3 a training step costs ~3x an "
        "inference pass per image, so on a GPU the pass alone is ~25% of an epoch when "
        "refreshing every epoch; `--refresh_every` and `--refresh=memory` cut that.",
        "",
        *rows,
        "",
    ])


def _write_jpegs(folder: Path, n: int, side: int) -> list[str]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        small = rng.integers(0, 256, size=(8, 8, 3)).astype(np.uint8)
        img = Image.fromarray(small).resize((side, int(side * 0.75)), Image.BILINEAR)
        p = folder / f"{i:05d}.jpg"
        img.save(p, quality=90)
        paths.append(str(p))
    return paths


def bench_input(args) -> str:
    """tf.data images/s on JPEG files vs the train step's demand."""
    import tempfile

    from sst_tf import data as data_lib
    from sst_tf import pipeline, sampling

    n, side_file = args.input_n, 500
    folder = Path(tempfile.mkdtemp(prefix="sst_jpeg_"))
    paths = _write_jpegs(folder, n, side_file)
    labels = np.arange(n) % 20
    split = data_lib.Split(labels=labels.astype(np.int64),
                           class_names=tuple(str(c) for c in range(20)), paths=tuple(paths))
    rows = ["| crop (resize) | batch | images/s (median of epochs) |", "|---|---|---|"]
    rates = {}
    for crop, resize in ((224, 256), (args.step_size, round(args.step_size * 256 / 224))):
        batch = min(200, n)
        s = sampling.RandomSampler(labels, batch, num_targets=5, seed=0, compute_targets=False)
        s.refresh(None)
        plan = s.plan(0)
        opts = pipeline.ImageOptions(image_size=crop, resize_size=resize)
        r = []
        for epoch in range(args.input_epochs + 1):
            ds = pipeline.train_dataset(split, plan, opts, epoch=epoch)
            t0 = time.perf_counter()
            count = sum(int(x[0].shape[0]) for x in ds)
            if epoch:  # the first epoch warms the page cache
                r.append(count / (time.perf_counter() - t0))
        rates[crop] = statistics.median(r)
        rows.append(f"| {crop} ({resize}) | {batch} | {rates[crop]:.0f} |")
    cores = os.cpu_count() or 1
    # Demand: images/s of the train step (InceptionV3, step_size crop, batch 32) here.
    t = _trainer(args.step_size, 32, classes=8)
    b = _batch(t, 32, 8)
    demand = 32 / statistics.median(timed(lambda: float(t.step_fn(b)), 3, warmup=1))
    crop_small = args.step_size
    return "\n".join([
        f"### Input pipeline on JPEG files ({n} synthetic {side_file}x{int(side_file * .75)} "
        "JPEGs, quality 90)",
        "",
        "`sst_tf.pipeline.train_dataset`: read, decode, resize, random crop, flip, batch, "
        f"prefetch; AUTOTUNE parallelism on {cores} cores; files in the page cache.",
        "",
        *rows,
        "",
        f"Demand here: the InceptionV3 train step at {crop_small}x{crop_small} (batch 32) "
        f"consumes {demand:.0f} images/s, i.e. {demand / rates[crop_small]:.2f} of what the "
        f"pipeline delivers at that size (the step and the pipeline share the same cores). "
        f"On a GPU, InceptionV3 "
        f"training at 224 (bf16) needs roughly 1,000-2,000 images/s (an assumption; "
        f"`scripts/gpu_check.sh` measures it): at {rates[224] / cores:.0f} images/s per core "
        f"that takes ~{1500 / max(rates[224] / cores, 1):.0f} cores for 1,500 images/s.",
        "",
    ])


MEMORY_ROWS = 2048  # the cross-batch memory of section scaling


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


def bench_scaling(args) -> str:
    """MirroredStrategy over 2 logical CPU devices vs 1 device: same numbers, time."""
    cmd = [sys.executable, __file__, "--_scaling_child", "1",
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


# ---------------------------------------------------------------- index


def bench_index(args) -> str:
    """Approximate (faiss) vs exact nearest-neighbour search of `sst_tf.index`."""
    from sst_tf.index import EmbeddingIndex

    n, dim, classes, q, k = args.index_n, 128, 1000, 1000, 10
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(classes, dim)).astype(np.float32)

    def draw(m):  # overlapping Gaussian clusters: noise radius ~0.7 x centre distance
        return (centres[rng.integers(0, classes, m)]
                + rng.normal(size=(m, dim))).astype(np.float32)

    x, queries = draw(n), draw(q)
    exact = EmbeddingIndex()
    exact.add(x)
    t_exact = statistics.median(timed(lambda: exact.search(queries, k), 3, warmup=1))
    want = exact.search(queries, k)[1]
    rows = ["| backend | parameters | build s | query s (1,000 queries) | speed-up vs exact | "
            f"recall@{k} vs exact |", "|---|---|---|---|---|---|",
            f"| exact (`chunked_top_k`) | | 0 | {t_exact:.2f} | 1.0x | 1.000 |"]
    recalls = {}
    for spec, params in (("HNSW32", "efSearch=128"), ("IVF1024,Flat", "nprobe=16")):
        index = EmbeddingIndex("faiss", spec, params)
        index.add(x)
        t0 = time.perf_counter()
        index.search(queries[:1], k)  # builds (and trains) the faiss index
        build = time.perf_counter() - t0
        t = statistics.median(timed(lambda index=index: index.search(queries, k), 3, warmup=1))
        got = index.search(queries, k)[1]
        recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(got, want,
                                                                          strict=True)]))
        recalls[spec] = recall
        rows.append(f"| faiss `{spec}` | `{params}` | {build:.1f} | {t:.2f} | "
                    f"{t_exact / t:.1f}x | {recall:.4f} |")
    return "\n".join([
        f"### `EmbeddingIndex`: {n:,} x {dim} clustered vectors, {q:,} queries, k = {k}", "",
        f"{classes:,} Gaussian clusters (N(0, 1) centres, unit-variance noise: a point lies "
        "~0.7 x the centre spacing from its centre), queries drawn from the same clusters. "
        "Recall@10 is the share of "
        "the exact 10 nearest neighbours the approximate search returns; query times are "
        "medians of 3 runs of all queries (after one untimed run), in the same process as "
        "exact search, on a machine shared with other jobs (the ratios are the figures to "
        "read). Build: faiss index construction (and k-means training for IVF) at the first "
        "query. The default of `EmbeddingIndex(\"faiss\")` is `HNSW32`, `efSearch=128`.", "",
        *rows, "",
        "Target: recall@10 >= 0.95: "
        + ", ".join(f"{s} {'met' if r >= 0.95 else 'NOT met'}" for s, r in recalls.items())
        + ".", ""])


SECTIONS: dict[str, Callable] = {
    "losses": bench_losses,
    "nmi": bench_nmi,
    "nmi_sop": bench_nmi_sop,
    "kmeans": bench_kmeans,
    "step": bench_step,
    "refresh": bench_refresh,
    "input": bench_input,
    "scaling": bench_scaling,
    "digits": bench_digits,
    "index": bench_index,
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


def _usage_error(message: str) -> None:
    sys.exit(cli.fail("benchmark.py", f"{message} (see --help)", 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated, from: {', '.join(SECTIONS)}")
    parser.add_argument("--output", default=str(ROOT / "BENCHMARKS.md"))
    parser.add_argument("--repeats", type=int, default=10, help="timed runs of the slow form")
    parser.add_argument("--eval_n", type=int, default=60000, help="rows for the eval benchmark")
    parser.add_argument("--nmi_sizes", default="6000x976,12000x2000",
                        help="NxCLASSES list of the nmi section")
    parser.add_argument("--nmi_sop_n", type=int, default=60502, help="rows, nmi_sop section")
    parser.add_argument("--nmi_sop_classes", type=int, default=11316,
                        help="classes (= clusters), nmi_sop section")
    parser.add_argument("--nmi_sop_spread", default="6000x976",
                        help="NxCLASSES list run with several seeds first, nmi_sop section")
    parser.add_argument("--nmi_sop_seeds", type=int, default=3,
                        help="k-means seeds at the --nmi_sop_spread sizes")
    parser.add_argument("--kmeans_n", type=int, default=60000, help="rows for the kmeans section")
    parser.add_argument("--kmeans_iters", type=int, default=20, help="Lloyd iterations timed")
    parser.add_argument("--kmeans_repeats", type=int, default=1, help="timed k-means runs")
    parser.add_argument("--step_size", type=int, default=None,
                        help="input side of the step/scaling sections (default: 224 on GPU, 75 "
                             "on CPU)")
    parser.add_argument("--step_batch", type=int, default=200, help="batch of the step section")
    parser.add_argument("--step_repeats", type=int, default=8, help="timed steps per variant")
    parser.add_argument("--scaling_batch", type=int, default=32,
                        help="per-replica batch of the scaling section")
    parser.add_argument("--refresh_size", type=int, default=32, help="image side, refresh section")
    parser.add_argument("--refresh_backbone", default="small_cnn",
                        help="model of the refresh section (small_cnn on CPU)")
    parser.add_argument("--refresh_sample", type=int, default=1000,
                        help="images timed for the refresh section's pass/epoch")
    parser.add_argument("--refresh_kmeans", default="sklearn,tf",
                        help="k-means methods of the refresh section")
    parser.add_argument("--refresh_scale", type=float, default=1.0,
                        help="shrink the refresh section's N (smoke runs)")
    parser.add_argument("--input_n", type=int, default=400, help="JPEG files, input section")
    parser.add_argument("--input_epochs", type=int, default=3, help="timed epochs, input section")
    parser.add_argument("--index_n", type=int, default=100000, help="vectors, index section")
    parser.add_argument("--_scaling_child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_eval_child", default=None, help=argparse.SUPPRESS)
    parser.error = _usage_error  # one line, as every command of the project
    args = parser.parse_args()
    if args.step_size is None:
        args.step_size = 224 if tf.config.list_physical_devices("GPU") else 75
    if args._scaling_child:
        print(json.dumps(_scaling_child(args)))
        return
    if args._eval_child:
        n, dim = (int(v) for v in args._eval_child.split(","))
        print(json.dumps(_eval_child(n, dim, (1, 10, 100, 1000))))
        return
    names = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in names if s not in SECTIONS]
    if unknown:
        parser.error(f"--sections: unknown {unknown}; choose from {list(SECTIONS)}")
    output = Path(args.output)
    if output.is_dir() or (output.exists() and not output.read_text(errors="replace")
                           .startswith("# Benchmarks")):
        parser.error(f"--output={args.output} exists and is not a benchmark file written by "
                     "this script (nothing was changed); choose another file")
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
