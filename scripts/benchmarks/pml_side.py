"""pytorch-metric-learning's side of the `pml` benchmark section; runs in a side environment.

Usage: python pml_side.py LOSS BATCH DIM REPEATS [KWARGS_JSON] (in an environment
with torch and pytorch-metric-learning 2.9; never imported by the project).
KWARGS_JSON is {"loss": {...}, "miner": {...}}: the keyword arguments of PML's
loss and miner classes (the project's side passes its registry's values);
without it, PML's defaults. Times forward + backward of one PML loss on the
batch `batch_inputs` makes (the same numbers the project's side uses), one
thread, and prints one JSON line:
{"ms": median milliseconds, "runs": repeats, "peak_mib": peak RSS growth
over the process before the first call, "version": PML's version}.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def batch_inputs(batch: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings [B, d] (float32, seed 0) and labels: B / 4 classes of 4 images."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, dim)).astype(np.float32)
    labels = np.repeat(np.arange(batch // 4), 4).astype(np.int64)
    return x, labels


def _peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**10
    return float("nan")


# PML's classes for each shared loss: (loss class, miner class or None).
CLASSES = {
    "contrastive": ("ContrastiveLoss", None),
    "multi_similarity": ("MultiSimilarityLoss", "MultiSimilarityMiner"),
    "triplet_semihard": ("TripletMarginLoss", "TripletMarginMiner"),
    "triplet_hard": ("TripletMarginLoss", "BatchHardMiner"),
    "lifted_struct": ("LiftedStructureLoss", None),
    "npairs": ("NPairsLoss", None),
    "proxy_anchor": ("ProxyAnchorLoss", None),
    "circle": ("CircleLoss", None),
    "supcon": ("SupConLoss", None),
    "ntxent": ("NTXentLoss", None),
    "arcface": ("ArcFaceLoss", None),
    "cosface": ("CosFaceLoss", None),
    "subcenter_arcface": ("SubCenterArcFaceLoss", None),
}
# Losses whose PML class owns weights: built with the classes and the dimension.
WITH_WEIGHTS = ("proxy_anchor", "arcface", "cosface", "subcenter_arcface")


def _pml_loss(name: str, classes: int, dim: int, kwargs: dict):
    from pytorch_metric_learning import losses, miners

    loss_class, miner_class = CLASSES[name]
    loss_kw = dict(kwargs.get("loss", {}))
    if name in WITH_WEIGHTS:
        loss_kw.update(num_classes=classes, embedding_size=dim)
    miner = (getattr(miners, miner_class)(**kwargs.get("miner", {}))
             if miner_class is not None else None)
    return getattr(losses, loss_class)(**loss_kw), miner


def main() -> None:
    import pytorch_metric_learning
    import torch

    torch.set_num_threads(1)
    name, batch, dim, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    kwargs = json.loads(sys.argv[5]) if len(sys.argv) > 5 else {}
    x_np, labels_np = batch_inputs(batch, dim)
    loss_fn, miner = _pml_loss(name, batch // 4, dim, kwargs)
    x = torch.tensor(x_np, requires_grad=True)
    labels = torch.tensor(labels_np)

    def step():
        x.grad = None
        for p in loss_fn.parameters():
            p.grad = None
        pairs = miner(x, labels) if miner is not None else None
        loss = loss_fn(x, labels, pairs) if pairs is not None else loss_fn(x, labels)
        loss.backward()
        return float(loss.detach())

    base = _peak_mib()
    step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    print(json.dumps({"ms": 1e3 * statistics.median(times), "runs": repeats,
                      "peak_mib": _peak_mib() - base,
                      "version": pytorch_metric_learning.__version__}))


if __name__ == "__main__":
    main()
