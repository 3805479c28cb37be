"""Benchmark sections `nmi` and `nmi_sop`: NMI's k-means, TensorFlow vs scikit-learn vs faiss."""

from __future__ import annotations

import os
import statistics
import time

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import normalized_mutual_info_score

from benchmarks.common import _command
from benchmarks.kmeans import _clustered_embeddings
from sst_tf import kmeans as kmeans_lib

# The k-means of section nmi_sop: "tf" is the built-in (`evaluation.nmi`'s
# default), the baseline of the ratios; the others are faiss.
NMI_SOP_VARIANTS = ("tf", "faiss (defaults)", "faiss (its k-means++)", "faiss (our k-means++)")


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
