"""Benchmark section `kmeans`: the refresh's k-means, scikit-learn vs TensorFlow."""

from __future__ import annotations

import statistics
import time

import numpy as np
import tensorflow as tf

from sst_tf import kmeans as kmeans_lib

# Assumed GPU embedding-pass throughput (no GPU measured here; see bench_kmeans).
ASSUMED_GPU_IMAGES_PER_S = 3000.0


def bench_kmeans(args) -> str:
    """Refresh k-means on SOP-sized embeddings: scikit-learn vs TensorFlow."""
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


def _clustered_embeddings(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """SOP-like embeddings: n / 5 class centres, ~5 noisy points each."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(1, n // 5), dim)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + 0.5 * rng.normal(size=(n, dim))
    return x.astype(np.float32)
