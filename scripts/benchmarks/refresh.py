"""Benchmark section `refresh`: embedding pass + k-means + batch building per epoch."""

from __future__ import annotations

import time

import numpy as np

from benchmarks.kmeans import _clustered_embeddings
from benchmarks.step import _trainer
from sst_tf import kmeans as kmeans_lib


def bench_refresh(args) -> str:
    """Embedding pass + k-means + batch building as a share of one epoch."""
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
