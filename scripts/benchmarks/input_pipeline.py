"""Benchmark section `input`: tf.data images/s on JPEG files vs the step's demand."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import numpy as np

from benchmarks.common import timed
from benchmarks.step import _batch, _trainer


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
