"""Benchmark section `index`: approximate (faiss) vs exact nearest-neighbour search."""

from __future__ import annotations

import statistics
import time

import numpy as np

from benchmarks.common import timed


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
